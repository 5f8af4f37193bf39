//! The access decision for a planned statement: what its final logical plan
//! does, checked against what its caller may do.
//!
//! Checking the statement's outer form is how a check and a plan drift
//! apart: `EXPLAIN ANALYZE COPY (...) TO 'file'` is an EXPLAIN on the
//! outside and a file write when it runs. So every plan about to be run
//! (or explained, or prepared) is walked here, every subquery included, and
//! refused with `PERMISSION_DENIED` when it
//! - writes server files (`COPY ... TO`): administrators' only, inside the
//!   engine's server file directories;
//! - holds DDL or a session statement anywhere but at its root (the root
//!   is run by the engine itself, which checks it there);
//! - reads a table the caller may not read, or changes one in a way the
//!   caller may not (INSERT, UPDATE, DELETE each on its own);
//!
//! and with `NOT_SUPPORTED` when it holds what the engine cannot run: a
//! plan node of an extension, or a subquery among the rows of `VALUES`
//! (DataFusion 55 computes `VALUES` while planning, before any subquery
//! has run, and fails with an internal error).
//!
//! Tables are judged by the provider the plan actually resolved: the name
//! in the plan is looked up in the schema cache and must give that very
//! provider, so a plan made against a table since dropped (or a name read
//! differently from the way the planner read it) fails closed. The checks
//! made before planning (`check_references`) give precise errors early;
//! this walk is what decides. Scans and sinks check the caller again when
//! they execute.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::dml::{InsertOp, WriteOp};
use datafusion::logical_expr::{Expr, LogicalPlan};
use tenantfusion_core::{Access, Result, TenantError};

use super::TenantSession;
use crate::catalog::is_reserved_namespace;
use crate::view::is_engine_table;

/// Whether `expr` is itself a subquery (scalar, `EXISTS` or `IN`).
fn is_subquery(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
    )
}

impl TenantSession {
    /// Refuses `plan` unless this session's caller may do everything it
    /// does. `plan`'s root may be DDL (its input is checked); nested DDL is
    /// refused.
    pub(crate) fn check_plan(&self, plan: &LogicalPlan) -> Result<()> {
        let mut denied = None;
        let mut root = true;
        plan.apply_with_subqueries(|node| {
            let at_root = std::mem::take(&mut root);
            match self.check_node(node, at_root) {
                Ok(()) => Ok(TreeNodeRecursion::Continue),
                Err(err) => {
                    denied = Some(err);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })?;
        denied.map_or(Ok(()), Err)
    }

    fn check_node(&self, node: &LogicalPlan, at_root: bool) -> Result<()> {
        match node {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                if provider.is::<CteWorkTable>() {
                    // A recursive CTE's rows of the round before: made by
                    // this very plan, whose other scans are checked.
                    return Ok(());
                }
                self.check_table(&scan.table_name, &provider, &[Access::Select])
            }
            LogicalPlan::Dml(dml) => {
                let accesses: &[Access] = match &dml.op {
                    WriteOp::Insert(InsertOp::Append) | WriteOp::Ctas => &[Access::Insert],
                    // Overwriting takes the old rows out.
                    WriteOp::Insert(InsertOp::Overwrite | InsertOp::Replace) => {
                        &[Access::Insert, Access::Delete]
                    }
                    WriteOp::Update => &[Access::Update],
                    WriteOp::Delete | WriteOp::Truncate => &[Access::Delete],
                    other => {
                        return Err(TenantError::NotSupported(other.name().to_string()));
                    }
                };
                let provider = source_as_provider(&dml.target)?;
                self.check_table(&dml.table_name, &provider, accesses)
            }
            LogicalPlan::Copy(copy) => {
                if self.user.role().is_admin() {
                    self.engine
                        .server_files
                        .confine(&copy.output_url, "COPY ... TO")
                        .map(|_| ())
                } else {
                    Err(TenantError::PermissionDenied(format!(
                        "COPY ... TO writes files on the server: only roles dba and system \
                         may, and user '{}' has role {}",
                        self.user.user_id(),
                        self.user.role()
                    )))
                }
            }
            LogicalPlan::Ddl(ddl) if !at_root => Err(TenantError::PermissionDenied(format!(
                "{} cannot be part of another statement",
                ddl.name()
            ))),
            LogicalPlan::Statement(statement) if !at_root => Err(TenantError::PermissionDenied(
                format!("{} cannot be part of another statement", statement.name()),
            )),
            LogicalPlan::Extension(extension) => Err(TenantError::NotSupported(format!(
                "plan node '{}'",
                extension.node.name()
            ))),
            LogicalPlan::Values(values)
                if values
                    .values
                    .iter()
                    .flatten()
                    .any(|value| value.exists(|e| Ok(is_subquery(e))).unwrap_or(true)) =>
            {
                Err(TenantError::NotSupported(
                    "a subquery among the rows of VALUES: write INSERT ... SELECT instead \
                     (INSERT INTO t SELECT (SELECT ...), ...)"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether the caller may perform every one of `accesses` on the table
    /// the plan resolved as `name` to `provider`.
    fn check_table(
        &self,
        name: &TableReference,
        provider: &Arc<dyn TableProvider>,
        accesses: &[Access],
    ) -> Result<()> {
        let (namespace, table) = self.resolve_name(name)?;
        if is_reserved_namespace(namespace) {
            // System tables and the information schema show each caller
            // only what they may see.
            return match accesses.iter().find(|a| a.is_write()) {
                None => Ok(()),
                Some(_) => Err(TenantError::PermissionDenied(format!(
                    "system table '{name}' is read-only"
                ))),
            };
        }
        let current = self.engine.cache.lookup(namespace, table);
        let current = match current {
            Err(_) if self.is_table_function(name) && !is_engine_table(provider) => {
                // `FROM generate_series(1, 3)`: the function made this
                // provider for this statement; it holds no tenant's rows.
                // Any engine table a host's own function hands out checks
                // its caller again when it is scanned.
                return match accesses.iter().find(|a| a.is_write()) {
                    None => Ok(()),
                    Some(_) => Err(TenantError::PermissionDenied(format!(
                        "table function '{name}' cannot be written"
                    ))),
                };
            }
            other => other?,
        };
        // Compare data pointers: the plan holds the provider as a
        // `dyn TableProvider`, the cache as a `dyn BaseTableProvider`.
        if !std::ptr::addr_eq(Arc::as_ptr(&current), Arc::as_ptr(provider)) {
            return Err(if self.is_table_function(name) {
                TenantError::NotSupported(format!(
                    "'{name}' names both a table and a table function; \
                     qualify the table's name or rename it to call the function"
                ))
            } else {
                TenantError::TableNotFound(format!(
                    "{name} (the table was replaced while the statement was planned; run it again)"
                ))
            });
        }
        for access in accesses {
            current.authorize(&self.user, *access)?;
        }
        Ok(())
    }

    /// Whether a scan named `name` can be a table function's: DataFusion
    /// names those scans by the bare function name, with `()` after it
    /// (`generate_series()`) for a function in `FROM`.
    fn is_table_function(&self, name: &TableReference) -> bool {
        match name {
            TableReference::Bare { table } => {
                let function = table.strip_suffix("()").unwrap_or(table);
                self.engine.state.table_functions().contains_key(function)
            }
            _ => false,
        }
    }
}
