//! Who an HTTP request is from: HTTP Basic or a bearer token.
//!
//! Basic is checked against the user's SCRAM verifier: the password's keys
//! are derived again (PBKDF2, on a blocking thread so the runtime's workers
//! keep serving). An unknown user, or one without a password, is checked
//! against a decoy verifier, so that refusing takes as long as a wrong
//! password and the answer (`401`, the same words) does not tell whether
//! the user exists. Tokens are checked as [`super::tokens`] says.
//!
//! The role is the registry's at each request: a token outlives no role
//! change.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderMap};
use tenantfusion_core::UserContext;
use tracing::debug;

use super::{ApiError, Http};

/// What a request shows to prove who it is for.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`, or the `token` query parameter of
    /// a WebSocket upgrade (browsers cannot set headers there).
    Bearer(String),
}

/// Never the password or the token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user})"),
            Credentials::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
}

/// The credentials in `headers` (`None`: none at all).
pub(crate) fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(Credentials::Bearer(rest.to_string())));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthorized(format!(
            "unknown authorization scheme {scheme:?}: use Basic or Bearer"
        )));
    }
    let decoded = BASE64
        .decode(rest)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| unauthorized("Basic credentials are not base64 of user:password"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("Basic credentials are not base64 of user:password"))?;
    Ok(Some(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    }))
}

/// The caller that `credentials` prove, with their current role.
pub(crate) async fn caller(http: &Http, credentials: Credentials) -> Result<UserContext, ApiError> {
    let engine = &http.shared.engine;
    let user = match credentials {
        Credentials::Bearer(token) => http.tokens.check(engine, &token).map_err(|err| {
            debug!("token refused: {err}");
            unauthorized(err.to_string())
        })?,
        Credentials::Basic { user, password } => {
            let verifier = engine.users().get(&user).and_then(|record| record.verifier);
            let known = verifier.is_some();
            let verifier = verifier.unwrap_or_else(|| http.shared.decoy().clone());
            let matches = tokio::task::spawn_blocking(move || verifier.verify_password(&password))
                .await
                .unwrap_or(false);
            if !(known && matches) {
                debug!(user = %user, "HTTP login failed");
                return Err(unauthorized(format!(
                    "password authentication failed for user \"{user}\""
                )));
            }
            user
        }
    };
    // Dropped since the check, or between token checks.
    let record = engine
        .users()
        .get(&user)
        .ok_or_else(|| unauthorized(format!("user \"{user}\" no longer exists")))?;
    Ok(UserContext::new(user.as_str(), record.role))
}

/// The caller of a request that must show credentials in its headers.
pub(crate) async fn required(http: &Http, headers: &HeaderMap) -> Result<UserContext, ApiError> {
    match credentials(headers)? {
        Some(credentials) => caller(http, credentials).await,
        None => Err(unauthorized(
            "log in: Authorization: Basic (user:password) or Bearer (a token from POST /v1/login)",
        )),
    }
}

/// The caller of `POST /v1/login`, which takes a password only (a token
/// cannot make itself a longer life).
pub(crate) async fn basic_only(http: &Http, headers: &HeaderMap) -> Result<UserContext, ApiError> {
    match credentials(headers)? {
        Some(credentials @ Credentials::Basic { .. }) => caller(http, credentials).await,
        _ => Err(unauthorized(
            "POST /v1/login takes Authorization: Basic (user:password)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn credentials_are_read_from_either_scheme() {
        assert_eq!(credentials(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            credentials(&with(&format!("Basic {}", BASE64.encode("alice:p:w")))).unwrap(),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "p:w".into()
            })
        );
        assert_eq!(
            credentials(&with("bearer abc.def")).unwrap(),
            Some(Credentials::Bearer("abc.def".into()))
        );
        for bad in ["Basic !!!", "Basic YWxpY2U=", "Digest x", "Basic"] {
            let err = credentials(&with(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        let shown = format!(
            "{:?}",
            Credentials::Basic {
                user: "u".into(),
                password: "secret".into()
            }
        );
        assert!(!shown.contains("secret"));
    }
}
