//! Bearer tokens: what `POST /v1/login` hands out and later requests show
//! instead of a password.
//!
//! A token is `<user>.<expires>.<mark>.<signature>`: the user's name
//! (base64url), when the token stops being good (Unix seconds), a mark of
//! the user's password, and an HMAC-SHA-256 of the rest under the
//! server's key (ring's, constant-time checked). Nothing is stored per
//! token. The mark is an HMAC of the user's SCRAM verifier, which gets a
//! new salt whenever the password is set: `ALTER USER ... PASSWORD`
//! revokes every token of the user, and so does `DROP USER` (no verifier;
//! a user created again under the name has a new one). The role is not in
//! the token: it is read from the registry at each request.
//!
//! Why not JWT: the server is the only issuer and the only reader, so a
//! signed string of our own needs no header, algorithm choice or claim
//! parsing (the usual sources of JWT mistakes); ring is already the
//! server's crypto.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use ring::hmac;
use tenantfusion::Engine;
use tenantfusion_core::{Clock, ScramVerifier, TenantError};

/// Why a token was not accepted. The client is told which, since none of
/// them says anything about other users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Not a token of this server: malformed, or the signature does not
    /// match (another key, or altered).
    #[error("the token is not valid")]
    Invalid,
    /// Its time is over.
    #[error("the token has expired; log in again")]
    Expired,
    /// The user's password changed, or the user was dropped, since it was
    /// issued.
    #[error("the token was revoked; log in again")]
    Revoked,
}

/// A token just issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) token: String,
    /// Unix seconds.
    pub(crate) expires_at: i64,
}

/// Issues and checks tokens under one key.
pub(crate) struct Tokens {
    key: hmac::Key,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl Tokens {
    /// Tokens signed with `key` (at least 32 bytes), or with a fresh random
    /// key, good for `ttl` by `clock`.
    pub(crate) fn new(
        key: Option<&[u8]>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TenantError> {
        let key = match key {
            Some(key) => hmac::Key::new(hmac::HMAC_SHA256, key),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| TenantError::Internal("no random bytes for the token key".into()))?,
        };
        Ok(Self { key, ttl, clock })
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_us().div_euclid(1_000_000)
    }

    /// A token for `user`, who must exist and have a password.
    pub(crate) fn issue(&self, engine: &Engine, user: &str) -> Result<Issued, TenantError> {
        let verifier = engine
            .users()
            .get(user)
            .and_then(|record| record.verifier)
            .ok_or_else(|| TenantError::PermissionDenied(format!("user {user} cannot log in")))?;
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = self.now_secs().saturating_add(ttl);
        let payload = format!(
            "{}.{expires_at}.{}",
            BASE64URL.encode(user),
            self.mark(&verifier)
        );
        let signature = hmac::sign(&self.key, payload.as_bytes());
        Ok(Issued {
            token: format!("{payload}.{}", BASE64URL.encode(signature.as_ref())),
            expires_at,
        })
    }

    /// The user `token` was issued to, if it is still good.
    pub(crate) fn check(&self, engine: &Engine, token: &str) -> Result<String, TokenError> {
        let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let signature = BASE64URL
            .decode(signature)
            .map_err(|_| TokenError::Invalid)?;
        hmac::verify(&self.key, payload.as_bytes(), &signature).map_err(|_| TokenError::Invalid)?;
        // Signed by us, so well formed; read carefully all the same.
        let mut parts = payload.split('.');
        let (Some(user), Some(expires_at), Some(mark), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let user = BASE64URL
            .decode(user)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(TokenError::Invalid)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| TokenError::Invalid)?;
        if self.now_secs() >= expires_at {
            return Err(TokenError::Expired);
        }
        let verifier = engine
            .users()
            .get(&user)
            .and_then(|record| record.verifier)
            .ok_or(TokenError::Revoked)?;
        if self.mark(&verifier) != mark {
            return Err(TokenError::Revoked);
        }
        Ok(user)
    }

    /// What a token keeps of the user's password: 16 bytes of an HMAC of
    /// the verifier (nothing a holder could test passwords against).
    fn mark(&self, verifier: &ScramVerifier) -> String {
        let tag = hmac::sign(&self.key, format!("verifier {verifier}").as_bytes());
        BASE64URL.encode(&tag.as_ref()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantfusion::EngineConfig;
    use tenantfusion_core::{ManualClock, Role, UserId};

    fn engine_with_alice() -> Engine {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        engine
            .users()
            .create(
                UserId::from("alice"),
                Role::User,
                Some(ScramVerifier::new("pw").unwrap()),
            )
            .unwrap();
        engine
    }

    #[test]
    fn tokens_expire_by_the_clock_and_die_with_the_password() {
        let engine = engine_with_alice();
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let tokens = Tokens::new(None, Duration::from_secs(60), clock.clone()).unwrap();
        let issued = tokens.issue(&engine, "alice").unwrap();
        assert_eq!(tokens.check(&engine, &issued.token).unwrap(), "alice");
        clock.advance(Duration::from_secs(59));
        assert!(tokens.check(&engine, &issued.token).is_ok());
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            tokens.check(&engine, &issued.token),
            Err(TokenError::Expired)
        );

        let issued = tokens.issue(&engine, "alice").unwrap();
        engine
            .users()
            .set_verifier("alice", ScramVerifier::new("pw").unwrap())
            .unwrap();
        assert_eq!(
            tokens.check(&engine, &issued.token),
            Err(TokenError::Revoked),
            "a new verifier (even of the same password) revokes"
        );
    }

    #[test]
    fn altered_or_foreign_tokens_are_invalid() {
        let engine = engine_with_alice();
        let clock = Arc::new(ManualClock::new(0));
        let ours = Tokens::new(Some(&[7; 32]), Duration::from_secs(60), clock.clone()).unwrap();
        let theirs = Tokens::new(Some(&[8; 32]), Duration::from_secs(60), clock).unwrap();
        let token = ours.issue(&engine, "alice").unwrap().token;
        assert_eq!(theirs.check(&engine, &token), Err(TokenError::Invalid));
        // Another user's name, or a later expiry, under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let as_bob = format!(
            "{}.{}.{}.{}",
            BASE64URL.encode("bob"),
            parts[1],
            parts[2],
            parts[3]
        );
        assert_eq!(ours.check(&engine, &as_bob), Err(TokenError::Invalid));
        let later = format!("{}.{}9.{}.{}", parts[0], parts[1], parts[2], parts[3]);
        assert_eq!(ours.check(&engine, &later), Err(TokenError::Invalid));
        for junk in ["", ".", "a.b.c.d", "....", "x.y", &"A".repeat(10_000)] {
            assert_eq!(
                ours.check(&engine, junk),
                Err(TokenError::Invalid),
                "{junk}"
            );
        }
    }
}
