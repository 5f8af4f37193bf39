//! Passwords: kept only as SCRAM-SHA-256 verifiers, durable, set by
//! administrators or by each user for themselves, never shown.

use tenantfusion::{Durability, Engine, EngineConfig, ScramVerifier, Storage};

use crate::common::{admin, engine, error, error_code, rows, run, user};

/// Whether `name`'s verifier is one of `password`: the same password with
/// the verifier's salt and iterations gives the same keys.
fn has_password(engine: &Engine, name: &str, password: &str) -> bool {
    let Some(verifier) = engine.users().get(name).and_then(|u| u.verifier) else {
        return false;
    };
    let again = ScramVerifier::with_salt(password, verifier.salt(), verifier.iterations());
    again.unwrap() == verifier
}

#[tokio::test]
async fn a_password_is_kept_as_a_verifier_and_changed_by_its_user_or_an_admin() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE USER 'carol' WITH PASSWORD 'pencil'").await;
    run(&admin, "CREATE USER 'dave' PASSWORD 'ink' ROLE service").await;
    assert!(has_password(&engine, "carol", "pencil"));
    assert!(!has_password(&engine, "carol", "pencil2"));
    assert!(has_password(&engine, "dave", "ink"));
    assert_eq!(
        engine.users().get("dave").unwrap().role,
        tenantfusion::Role::Service
    );
    // Without a password, nobody logs in as them over the wire.
    assert!(engine.users().get("alice").unwrap().verifier.is_none());

    // A user sets their own password, not another's.
    let carol = user(&engine, "carol");
    run(&carol, "ALTER USER 'carol' WITH PASSWORD 'quill'").await;
    assert!(has_password(&engine, "carol", "quill"));
    let err = error(&carol, "ALTER USER 'dave' WITH PASSWORD 'mine'").await;
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(has_password(&engine, "dave", "ink"));
    // Nor through an administrator's EXECUTE AS: it runs as carol.
    let as_carol = "EXECUTE AS USER 'carol' (ALTER USER 'dave' WITH PASSWORD 'mine')";
    assert_eq!(error_code(&admin, as_carol).await, "PERMISSION_DENIED");
    assert!(has_password(&engine, "dave", "ink"));
    // Nor wrapped in another statement: refused for everyone, and the
    // error does not quote the statement (DataFusion's would, password and
    // all). `CREATE ROLE` is sqlparser's, with a password of its own.
    for sql in [
        "EXPLAIN ALTER USER 'dave' WITH PASSWORD 'mine'",
        "EXPLAIN ANALYZE ALTER USER 'dave' WITH PASSWORD 'mine'",
        "EXPLAIN VERBOSE CREATE USER 'eve' WITH PASSWORD 'mine'",
        "PREPARE p AS ALTER USER 'dave' WITH PASSWORD 'mine'",
        "CREATE ROLE eve PASSWORD 'mine'",
        "EXPLAIN CREATE ROLE eve PASSWORD 'mine'",
        "WITH c AS (SELECT 1) ALTER USER 'dave' WITH PASSWORD 'mine'",
    ] {
        for session in [&carol, &admin] {
            let err = error(session, sql).await;
            assert!(!err.to_string().contains("mine"), "{sql}: {err}");
        }
        assert!(has_password(&engine, "dave", "ink"), "{sql}");
        assert!(engine.users().get("eve").is_none(), "{sql}");
    }
    // An anonymous session is nobody's, whatever name it carries.
    let anonymous = engine.session(tenantfusion::UserContext::new(
        "carol",
        tenantfusion::Role::Anonymous,
    ));
    let err = error(&anonymous, "ALTER USER 'carol' WITH PASSWORD 'mine'").await;
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(has_password(&engine, "carol", "quill"));
    // An administrator sets anyone's.
    run(&admin, "ALTER USER 'dave' PASSWORD 'chalk'").await;
    assert!(has_password(&engine, "dave", "chalk"));
    assert_eq!(
        error_code(&admin, "ALTER USER 'nobody' WITH PASSWORD 'x'").await,
        "USER_NOT_FOUND"
    );
    // CREATE USER stays an administrator's.
    let err = error(&carol, "CREATE USER 'eve' WITH PASSWORD 'x'").await;
    assert_eq!(err.code(), "PERMISSION_DENIED");
    assert!(engine.users().get("eve").is_none());
}

#[tokio::test]
async fn a_password_is_never_shown_and_bad_ones_are_refused() {
    let engine = engine().await;
    let admin = admin(&engine);
    run(&admin, "CREATE USER 'carol' WITH PASSWORD 'hunter2-secret'").await;
    // Not in what the engine shows of users, nor in an error about them.
    let shown = rows(&admin, "SELECT * FROM system.users").await.join("\n");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("SCRAM"), "{shown}");
    let err = error(&admin, "CREATE USER 'carol' WITH PASSWORD 'hunter2-secret'").await;
    assert_eq!(err.code(), "USER_EXISTS");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let record = engine.users().get("carol").unwrap();
    assert!(!format!("{record:?}").contains("SCRAM"), "{record:?}");

    for (sql, code) in [
        ("CREATE USER 'x' WITH PASSWORD ''", "INVALID_ARGUMENT"),
        (
            "CREATE USER 'x' WITH PASSWORD 'SCRAM-SHA-256$4096:x'",
            "INVALID_ARGUMENT",
        ),
        ("CREATE USER 'x' WITH PASSWORD", "SYNTAX_ERROR"),
        ("CREATE USER 'x' WITH PASSWORD 42", "SYNTAX_ERROR"),
        ("CREATE USER 'x' PASSWORD 'a' PASSWORD 'b'", "SYNTAX_ERROR"),
        ("ALTER USER 'carol'", "SYNTAX_ERROR"),
        ("ALTER USER 'carol' WITH ROLE dba", "SYNTAX_ERROR"),
    ] {
        assert_eq!(error_code(&admin, sql).await, code, "{sql}");
    }
    assert!(engine.users().get("x").is_none());
    assert!(has_password(&engine, "carol", "hunter2-secret"));

    // A verifier made elsewhere (PostgreSQL's form) is kept as given.
    let verifier = ScramVerifier::with_salt("pencil", b"0123456789abcdef", 4096).unwrap();
    let sql = format!("CREATE USER 'frank' WITH PASSWORD '{verifier}'");
    run(&admin, &sql).await;
    assert_eq!(
        engine.users().get("frank").unwrap().verifier,
        Some(verifier)
    );
}

#[tokio::test]
async fn passwords_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        EngineConfig::default().with_storage(Storage::Directory {
            path: dir.path().to_path_buf(),
            durability: Durability::Fsync,
        })
    };
    {
        let engine = Engine::new(config()).unwrap();
        let admin = admin(&engine);
        run(&admin, "CREATE USER 'carol' WITH PASSWORD 'pencil'").await;
        run(&admin, "CREATE USER 'dave'").await;
        run(&admin, "ALTER USER 'dave' WITH PASSWORD 'ink'").await;
        run(&admin, "ALTER USER 'carol' WITH PASSWORD 'quill'").await;
    }
    let engine = Engine::new(config()).unwrap();
    assert!(has_password(&engine, "carol", "quill"));
    assert!(has_password(&engine, "dave", "ink"));
}
