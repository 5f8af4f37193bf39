//! `SUBSCRIBE`: a session's live queries, checked and started here, then
//! run by [`LiveQueries`](crate::live_query).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, ExprWithAlias};
use tenantfusion_core::{Access, BaseTableProvider, Result, TenantError};
use tenantfusion_tables::topics_in;

use super::TenantSession;
use crate::live_query::{LiveOptions, LiveQuery};
use crate::statement::{Subscribe, TenantStatement};

impl TenantSession {
    /// Starts a live query: `SUBSCRIBE TO ns.t [WHERE predicate]
    /// [OPTIONS (LAST_ROWS = n, QUEUE_CAPACITY = n, QUEUE_BYTES = n, SLOW_CONSUMER = 'drop_oldest' | 'disconnect')]`.
    ///
    /// The first event is a snapshot of the matching rows the caller may
    /// read (their own rows of a user table; a shared or stream table's
    /// rows by access level), then each insert that matches. On a stream
    /// table fed by a source, a WHERE that pins the topic column
    /// (`symbol = 'AAPL'`, `symbol IN (...)`) subscribes those topics
    /// upstream for as long as the query runs.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use tenantfusion::{ChangeEvent, Engine, EngineConfig, Role, UserContext};
    /// let engine = Engine::new(EngineConfig::default())?;
    /// let admin = engine.session(UserContext::new("admin", Role::Dba));
    /// admin.sql("CREATE TABLE notes (id BIGINT, body TEXT)").await?;
    /// let alice = engine.session(UserContext::new("alice", Role::User));
    /// let mut live = alice.subscribe("SUBSCRIBE TO notes WHERE id > 1").await?;
    /// assert!(matches!(live.recv().await?, Some(ChangeEvent::Snapshot(rows)) if rows.is_empty()));
    /// alice.sql("INSERT INTO notes VALUES (1, 'no'), (2, 'yes')").await?.collect().await?;
    /// let Some(ChangeEvent::Insert(rows)) = live.recv().await? else { panic!() };
    /// assert_eq!(rows.num_rows(), 1);
    /// # Ok::<_, tenantfusion::TenantError>(())
    /// # }).unwrap();
    /// ```
    pub async fn subscribe(&self, sql: &str) -> Result<LiveQuery> {
        let (provider, predicate, options) = self.subscription(sql).await?;
        let schema = provider.schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = match predicate {
            Some(expr) => Some(self.with_state(|state| {
                let expr = ExprWithAlias { expr, alias: None };
                state.create_logical_expr_from_sql_expr(expr, &df_schema)
            })?),
            None => None,
        };
        let filter = match &predicate {
            Some(expr) => {
                Some(self.with_state(|state| state.create_physical_expr(expr.clone(), &df_schema))?)
            }
            None => None,
        };
        let feed = self.engine.live_sources.feed(provider.table_id());
        let topics = match (&feed, &predicate) {
            (Some(feed), Some(expr)) => topics_in(std::slice::from_ref(expr), feed.topic_column()),
            _ => None,
        };
        let leases = match (&feed, &topics) {
            (Some(feed), Some(topics)) => topics
                .iter()
                .map(|t| feed.lease(t))
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        self.engine
            .live_queries
            .start(&self.user, &provider, filter, topics, leases, options)
            .await
    }

    /// The columns of a live query's rows (the table's), checked as
    /// [`subscribe`](Self::subscribe) checks them, without starting it:
    /// what a client's `Describe` asks for.
    pub async fn subscription_schema(&self, sql: &str) -> Result<SchemaRef> {
        let (provider, _, _) = self.subscription(sql).await?;
        Ok(provider.schema())
    }

    /// The table, predicate and options of `SUBSCRIBE` text, the caller's
    /// read access checked.
    async fn subscription(
        &self,
        sql: &str,
    ) -> Result<(Arc<dyn BaseTableProvider>, Option<SqlExpr>, LiveOptions)> {
        self.engine.finish_drops().await?;
        let TenantStatement::Subscribe(Subscribe {
            table,
            predicate,
            options,
        }) = self.parse(sql)?
        else {
            return Err(TenantError::InvalidArgument(
                "subscribe takes SUBSCRIBE TO table [WHERE ...] [OPTIONS (...)]".into(),
            ));
        };
        let options = LiveOptions::parse(&options)?;
        let provider = self.lookup_object(table)?;
        provider.authorize(&self.user, Access::Select)?;
        Ok((provider, predicate, options))
    }
}
