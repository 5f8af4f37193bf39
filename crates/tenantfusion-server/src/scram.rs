//! The server's side of a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), as
//! PostgreSQL runs it inside SASL messages.
//!
//! ```text
//! client-first  n,,n=,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<proof>
//! server-final  v=<server signature>
//! ```
//!
//! The user is the one named in the startup packet (PostgreSQL ignores the
//! `n=` of the client-first message, and so do we). The proof is checked
//! against the user's [`ScramVerifier`]; pgwire's own SCRAM support needs the
//! salted password instead, which is as good as the password itself, so the
//! exchange is written here over the verifier.
//!
//! An unknown user, or one without a password, gets a made-up salt that is
//! the same on every attempt (derived from the name and a per-server key),
//! and fails only at the proof, after the same work as a wrong password (a
//! check against a decoy verifier): neither the answer nor its timing tells
//! whether the user exists.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest::{SHA256, digest};
use tenantfusion_core::ScramVerifier;
use tenantfusion_core::scram::DEFAULT_ITERATIONS;

/// Why an exchange failed. Every variant ends the connection; the client is
/// told only that its password was not accepted or that it broke the
/// protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScramError {
    /// The client's message is not what the protocol allows at this step.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which this server does not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The proof does not match: wrong password, unknown user, or a user
    /// without a password.
    #[error("password authentication failed")]
    Rejected,
}

/// What a login checks the proof against: the user's verifier, or a
/// stand-in for a name that has none.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// The user's verifier.
    Known(ScramVerifier),
    /// No such user, or no password: salt and iterations that look like a
    /// verifier's, and no proof matches (the proof is checked against
    /// `decoy` all the same, so that refusing takes as long).
    Absent {
        salt: [u8; 16],
        decoy: ScramVerifier,
    },
}

impl Credential {
    /// `verifier`, or a stand-in whose salt is derived from `user` and
    /// `server_key` and whose work is `decoy`'s.
    pub(crate) fn new(
        verifier: Option<ScramVerifier>,
        user: &str,
        server_key: &[u8],
        decoy: &ScramVerifier,
    ) -> Self {
        match verifier {
            Some(verifier) => Credential::Known(verifier),
            None => {
                let mut input = Vec::with_capacity(server_key.len() + user.len());
                input.extend_from_slice(server_key);
                input.extend_from_slice(user.as_bytes());
                let mut salt = [0u8; 16];
                salt.copy_from_slice(&digest(&SHA256, &input).as_ref()[..16]);
                Credential::Absent {
                    salt,
                    decoy: decoy.clone(),
                }
            }
        }
    }

    fn salt(&self) -> &[u8] {
        match self {
            Credential::Known(verifier) => verifier.salt(),
            Credential::Absent { salt, .. } => salt,
        }
    }

    fn iterations(&self) -> u32 {
        match self {
            Credential::Known(verifier) => verifier.iterations(),
            Credential::Absent { .. } => DEFAULT_ITERATIONS,
        }
    }
}

/// An exchange waiting for the client-final message.
#[derive(Debug)]
pub(crate) struct ServerFirst {
    credential: Credential,
    /// `client-first-bare,server-first`: the start of the auth message.
    transcript: String,
    /// The gs2 header the client-final message must echo (base64).
    binding: String,
    nonce: String,
    /// The server-first message to send.
    pub(crate) message: String,
}

/// Reads the client-first message and answers it. `server_nonce` is fresh
/// random printable text for each exchange.
pub(crate) fn client_first(
    data: &[u8],
    credential: Credential,
    server_nonce: &str,
) -> Result<ServerFirst, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header: a channel-binding flag, an optional authzid, then the bare message.
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    match flag {
        // "y": the client could bind but thinks the server cannot (we do
        // not offer -PLUS), which is true.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no client-first-message-bare"))?;
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(ScramError::Malformed("bad authzid"));
    }
    let mut attributes = bare.split(',');
    let user = attributes
        .next()
        .ok_or(ScramError::Malformed("no user name"))?;
    if user.starts_with("m=") {
        return Err(ScramError::Malformed(
            "mandatory extensions are not supported",
        ));
    }
    if !user.starts_with("n=") {
        return Err(ScramError::Malformed("no user name"));
    }
    let client_nonce = attributes
        .next()
        .and_then(|nonce| nonce.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no client nonce"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
        return Err(ScramError::Malformed("bad client nonce"));
    }
    let nonce = format!("{client_nonce}{server_nonce}");
    let message = format!(
        "r={nonce},s={},i={}",
        BASE64.encode(credential.salt()),
        credential.iterations()
    );
    Ok(ServerFirst {
        transcript: format!("{bare},{message}"),
        binding: BASE64.encode(&text.as_bytes()[..flag.len() + 1 + authzid.len() + 1]),
        credential,
        nonce,
        message,
    })
}

impl ServerFirst {
    /// Checks the client-final message; on success, the server-final
    /// message to send.
    pub(crate) fn client_final(self, data: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|binding| binding.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|nonce| nonce.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if binding != self.binding || nonce != self.nonce {
            return Err(ScramError::Malformed("channel binding or nonce differs"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!("{},{without_proof}", self.transcript);
        match &self.credential {
            Credential::Known(verifier) if verifier.verify(auth_message.as_bytes(), &proof) => {
                let signature = verifier.server_signature(auth_message.as_bytes());
                Ok(format!("v={}", BASE64.encode(signature)))
            }
            Credential::Known(_) => Err(ScramError::Rejected),
            Credential::Absent { decoy, .. } => {
                std::hint::black_box(decoy.verify(auth_message.as_bytes(), &proof));
                Err(ScramError::Rejected)
            }
        }
    }
}

/// RFC 5802's `printable`: `%x21-2B / %x2D-7E` (no comma).
fn is_printable(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte) && byte != b','
}

/// A fresh server nonce: 18 random bytes, base64 (printable, no comma).
pub(crate) fn new_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677's example: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn decoy() -> ScramVerifier {
        ScramVerifier::with_salt("decoy", b"salt", 4096).unwrap()
    }

    fn pencil() -> Credential {
        let salt = BASE64.decode(SALT).unwrap();
        Credential::new(
            Some(ScramVerifier::with_salt("pencil", &salt, 4096).unwrap()),
            "user",
            b"key",
            &decoy(),
        )
    }

    #[test]
    fn rfc_7677_exchange() {
        let first = client_first(CLIENT_FIRST.as_bytes(), pencil(), SERVER_NONCE).unwrap();
        assert_eq!(
            first.message,
            format!("r=rOprNGfwEbeRWgbNEkqO{SERVER_NONCE},s={SALT},i=4096")
        );
        assert_eq!(
            first.client_final(CLIENT_FINAL.as_bytes()).unwrap(),
            SERVER_FINAL
        );
    }

    #[test]
    fn wrong_password_is_rejected() {
        let salt = BASE64.decode(SALT).unwrap();
        let other = Credential::new(
            Some(ScramVerifier::with_salt("pencil2", &salt, 4096).unwrap()),
            "user",
            b"key",
            &decoy(),
        );
        let first = client_first(CLIENT_FIRST.as_bytes(), other, SERVER_NONCE).unwrap();
        assert_eq!(
            first.client_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Rejected)
        );
    }

    #[test]
    fn absent_user_looks_like_a_user_and_is_rejected() {
        let a = Credential::new(None, "ghost", b"key", &decoy());
        let again = Credential::new(None, "ghost", b"key", &decoy());
        let other = Credential::new(None, "other", b"key", &decoy());
        assert_eq!(a.salt(), again.salt(), "the same salt on every attempt");
        assert_ne!(a.salt(), other.salt());
        let first = client_first(CLIENT_FIRST.as_bytes(), a, SERVER_NONCE).unwrap();
        assert!(first.message.contains(",i=4096"));
        assert_eq!(
            first.client_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Rejected)
        );
    }

    #[test]
    fn replayed_or_altered_final_message_is_refused() {
        let first = client_first(CLIENT_FIRST.as_bytes(), pencil(), "other-nonce").unwrap();
        // The RFC's final message carries the RFC's server nonce, not ours.
        assert!(matches!(
            first.client_final(CLIENT_FINAL.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
        let first = client_first(CLIENT_FIRST.as_bytes(), pencil(), SERVER_NONCE).unwrap();
        let altered = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert!(matches!(
            first.client_final(altered.as_bytes()),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b",",
            b"n,",
            b"n,,",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=",
            b"x,,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,b=1,n=user,r=abc",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(
                    client_first(bad, pencil(), SERVER_NONCE),
                    Err(ScramError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            client_first(
                b"p=tls-server-end-point,,n=user,r=abc",
                pencil(),
                SERVER_NONCE
            )
            .unwrap_err(),
            ScramError::ChannelBinding
        );
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,p=!!",
            b"\xff,p=abc",
            b"r=x,p=abc",
        ] {
            let first = client_first(CLIENT_FIRST.as_bytes(), pencil(), SERVER_NONCE).unwrap();
            assert!(first.client_final(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_printable_and_fresh() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert!(a.bytes().all(is_printable));
    }
}
