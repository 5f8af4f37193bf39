//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677): all the engine keeps of a
//! password.
//!
//! A login proves knowledge of the password without sending it, and the
//! server checks the proof against a verifier made once from the password:
//! a random salt, an iteration count, and two keys derived from
//! `SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations)`:
//!
//! - `StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key"))` checks the
//!   client's proof;
//! - `ServerKey = HMAC(SaltedPassword, "Server Key")` signs the server's
//!   answer, so the client knows the server held the verifier.
//!
//! Neither key lets anyone log in: a proof needs `ClientKey`, which only
//! the password gives. (Some servers keep `SaltedPassword` itself, from
//! which `ClientKey` follows: whoever reads it can log in as the user.)
//! The text form is PostgreSQL's (`pg_authid.rolpassword`), so verifiers
//! can move between the two:
//!
//! ```
//! use tenantfusion_core::ScramVerifier;
//!
//! let verifier = ScramVerifier::new("correct horse").unwrap();
//! let text = verifier.to_string();
//! assert!(text.starts_with("SCRAM-SHA-256$4096:"));
//! assert_eq!(text.parse::<ScramVerifier>().unwrap(), verifier);
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use crate::TenantError;

/// PostgreSQL's default (`scram_iterations`): what its clients expect.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Bytes of a new verifier's salt (PostgreSQL's length).
const SALT_BYTES: usize = 16;

/// What a password is kept as: see the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramVerifier {
    /// A verifier of `password` with a new random salt and
    /// [`DEFAULT_ITERATIONS`].
    pub fn new(password: &str) -> Result<Self, TenantError> {
        let mut salt = [0u8; SALT_BYTES];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| TenantError::Internal("no random bytes for a salt".into()))?;
        Self::with_salt(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A verifier of `password` with `salt` and `iterations` (at least 1).
    ///
    /// The password is normalised with SASLprep (RFC 4013) first, as
    /// PostgreSQL and libpq do; one SASLprep refuses (a control character,
    /// say) is used as its bytes, as they do too.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Result<Self, TenantError> {
        let iterations = NonZeroU32::new(iterations).ok_or_else(|| {
            TenantError::InvalidArgument("SCRAM needs at least one iteration".into())
        })?;
        let password = stringprep::saslprep(password).unwrap_or(password.into());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        Ok(Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(client_key.as_ref()),
            server_key: to_array(hmac::sign(&salted, b"Server Key").as_ref()),
        })
    }

    /// The salt the client derives its keys with.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The PBKDF2 iteration count the client derives its keys with.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    /// Whether `proof` (the client's `ClientKey XOR ClientSignature`) shows
    /// knowledge of the password, for the exchange whose messages make
    /// `auth_message`. Compared in constant time.
    pub fn verify(&self, auth_message: &[u8], proof: &[u8]) -> bool {
        if proof.len() != self.stored_key.len() {
            return false;
        }
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.stored_key),
            auth_message,
        );
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        sha256(&client_key).ct_eq(&self.stored_key).into()
    }

    /// Whether `password` is the one this verifier keeps: its keys derived
    /// again with this salt and iteration count (the work of a SCRAM login,
    /// for clients that send the password itself, such as HTTP Basic over
    /// TLS or loopback). Compared in constant time.
    ///
    /// ```
    /// use tenantfusion_core::ScramVerifier;
    /// let verifier = ScramVerifier::new("pencil").unwrap();
    /// assert!(verifier.verify_password("pencil"));
    /// assert!(!verifier.verify_password("Pencil"));
    /// ```
    pub fn verify_password(&self, password: &str) -> bool {
        match Self::with_salt(password, &self.salt, self.iterations.get()) {
            Ok(again) => again.stored_key.ct_eq(&self.stored_key).into(),
            Err(_) => false,
        }
    }

    /// `ServerSignature`, the server's answer for the exchange whose
    /// messages make `auth_message`.
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.server_key);
        to_array(hmac::sign(&key, auth_message).as_ref())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    to_array(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes[..32]);
    out
}

/// Never the keys: a verifier in a log line or an error is a secret spilt.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

/// PostgreSQL's form:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl FromStr for ScramVerifier {
    type Err = TenantError;

    fn from_str(text: &str) -> Result<Self, TenantError> {
        let invalid = || TenantError::InvalidArgument("not a SCRAM-SHA-256 verifier".into());
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(invalid)?;
        let (parameters, keys) = rest.split_once('$').ok_or_else(invalid)?;
        let (iterations, salt) = parameters.split_once(':').ok_or_else(invalid)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(invalid)?;
        let key = |text: &str| -> Result<[u8; 32], TenantError> {
            let bytes = STANDARD.decode(text).map_err(|_| invalid())?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid())
        };
        Ok(Self {
            iterations: iterations.parse().map_err(|_| invalid())?,
            salt: STANDARD.decode(salt).map_err(|_| invalid())?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange: user "user", password "pencil".
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const AUTH_MESSAGE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = STANDARD.decode(SALT).unwrap();
        ScramVerifier::with_salt("pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn the_rfc_7677_exchange_verifies_and_is_signed_as_the_rfc_says() {
        let verifier = rfc_verifier();
        let proof = STANDARD.decode(PROOF).unwrap();
        assert!(verifier.verify(AUTH_MESSAGE.as_bytes(), &proof));
        let signature = verifier.server_signature(AUTH_MESSAGE.as_bytes());
        assert_eq!(STANDARD.encode(signature), SERVER_SIGNATURE);
    }

    #[test]
    fn a_wrong_password_or_a_changed_message_does_not_verify() {
        let proof = STANDARD.decode(PROOF).unwrap();
        let salt = STANDARD.decode(SALT).unwrap();
        let other = ScramVerifier::with_salt("pencil2", &salt, 4096).unwrap();
        assert!(!other.verify(AUTH_MESSAGE.as_bytes(), &proof));
        let changed = AUTH_MESSAGE.replace("n=user", "n=usex");
        assert!(!rfc_verifier().verify(changed.as_bytes(), &proof));
        assert!(!rfc_verifier().verify(AUTH_MESSAGE.as_bytes(), &proof[..31]));
        assert!(!rfc_verifier().verify(AUTH_MESSAGE.as_bytes(), &[]));
    }

    #[test]
    fn the_text_form_is_postgresqls_and_reads_back() {
        let verifier = rfc_verifier();
        let text = verifier.to_string();
        assert!(
            text.starts_with(&format!("SCRAM-SHA-256$4096:{SALT}$")),
            "{text}"
        );
        assert_eq!(text.parse::<ScramVerifier>().unwrap(), verifier);
        assert_eq!(format!("{verifier:?}"), "ScramVerifier(..)");
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$AAAA:AAAA",
        ] {
            assert!(bad.parse::<ScramVerifier>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_new_verifier_has_its_own_salt() {
        let a = ScramVerifier::new("same").unwrap();
        let b = ScramVerifier::new("same").unwrap();
        assert_ne!(a.salt(), b.salt());
        assert_ne!(a, b);
        assert_eq!(a.iterations(), DEFAULT_ITERATIONS);
        assert!(ScramVerifier::with_salt("x", b"salt", 0).is_err());
    }
}
