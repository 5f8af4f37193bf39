//! The prepared statements of `POST /v1/sql` requests with `params`, kept
//! across requests per user and text, as a pgwire connection keeps its
//! own: preparing parses and plans the statement, which would otherwise be
//! paid on every request.
//!
//! Keyed by user, role and text, so a statement prepared for one caller is
//! never run for another (each run checks access again anyway, and a
//! changed table is planned again, as for any prepared statement). At
//! most [`CAPACITY`] are kept, the oldest going first, and none longer
//! than [`LONGEST`]: what a client can make the server hold is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tenantfusion::{PreparedStatement, TenantSession};
use tenantfusion_core::{Role, TenantError};

/// Statements kept at most, over all users.
pub(crate) const CAPACITY: usize = 1024;

/// The longest text kept (longer ones are prepared for their request only).
pub(crate) const LONGEST: usize = 16 << 10;

type Key = (String, Role, String);

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    statements: HashMap<Key, PreparedStatement>,
    /// Oldest first.
    order: VecDeque<Key>,
}

impl Prepared {
    /// `sql` prepared for `session`'s caller: kept from before, or
    /// prepared now and kept.
    pub(crate) async fn get(
        &self,
        session: &TenantSession,
        sql: &str,
    ) -> Result<PreparedStatement, TenantError> {
        let user = session.user();
        let key = (user.user_id().to_string(), user.role(), sql.to_string());
        if let Some(statement) = self.kept().statements.get(&key) {
            return Ok(statement.clone());
        }
        let statement = session.prepare(sql).await?;
        if sql.len() > LONGEST {
            return Ok(statement);
        }
        let mut kept = self.kept();
        if kept
            .statements
            .insert(key.clone(), statement.clone())
            .is_none()
        {
            kept.order.push_back(key);
        }
        while kept.order.len() > CAPACITY {
            if let Some(oldest) = kept.order.pop_front() {
                kept.statements.remove(&oldest);
            }
        }
        Ok(statement)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept().statements.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantfusion::{Engine, EngineConfig};
    use tenantfusion_core::UserContext;

    #[tokio::test]
    async fn statements_are_kept_per_caller_and_bounded() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let alice = engine.session(UserContext::new("alice", Role::User));
        let bob = engine.session(UserContext::new("bob", Role::User));
        let prepared = Prepared::default();
        prepared.get(&alice, "SELECT 1 WHERE 2 > $1").await.unwrap();
        prepared.get(&alice, "SELECT 1 WHERE 2 > $1").await.unwrap();
        assert_eq!(prepared.len(), 1);
        let for_bob = prepared.get(&bob, "SELECT 1 WHERE 2 > $1").await.unwrap();
        assert_eq!(prepared.len(), 2, "bob's is his own");
        let _ = for_bob;
        for i in 0..CAPACITY + 10 {
            prepared
                .get(&alice, &format!("SELECT {i} WHERE 2 > $1"))
                .await
                .unwrap();
        }
        assert_eq!(prepared.len(), CAPACITY);
        let long = format!("SELECT 1 WHERE 2 > $1 {}", " ".repeat(LONGEST));
        prepared.get(&bob, &long).await.unwrap();
        assert!(
            !prepared
                .kept()
                .statements
                .keys()
                .any(|(_, _, sql)| sql == &long)
        );
    }
}
