//! The first administrator of a new data directory.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tenantfusion::Engine;
use tenantfusion_core::{Role, TenantError, UserContext};

/// The administrator's name.
pub const ADMIN: &str = "admin";

/// Creates [`ADMIN`] (role dba) with `password`, or with a generated one,
/// unless the engine has that user already. Returns the password when a
/// user was created, for the caller to show once; it is kept only as a
/// SCRAM verifier.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion::{Engine, EngineConfig};
/// use tenantfusion_server::bootstrap_admin;
///
/// let engine = Engine::new(EngineConfig::default()).unwrap();
/// assert_eq!(bootstrap_admin(&engine, Some("s3cret")).await.unwrap().as_deref(), Some("s3cret"));
/// assert_eq!(bootstrap_admin(&engine, Some("other")).await.unwrap(), None);
/// # });
/// ```
pub async fn bootstrap_admin(
    engine: &Engine,
    password: Option<&str>,
) -> Result<Option<String>, TenantError> {
    if engine.users().exists(ADMIN) {
        return Ok(None);
    }
    let password = match password {
        Some(password) => password.to_string(),
        None => URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>()),
    };
    let system = engine.session(UserContext::new("system", Role::System));
    let quoted = password.replace('\'', "''");
    system
        .sql(&format!(
            "CREATE USER '{ADMIN}' WITH ROLE dba PASSWORD '{quoted}'"
        ))
        .await?;
    Ok(Some(password))
}
