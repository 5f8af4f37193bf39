//! Integration tests of the engine, as one binary (each links DataFusion).

mod auto_parameters;
mod catalog_changes;
mod common;
mod ddl_crash;
mod direct_insert;
mod durable;
mod errors;
mod fuzz_sql;
mod generic_plans;
mod host;
mod hostile;
mod isolation;
mod limits;
mod live_queries;
mod logins;
mod model;
mod pg_catalog;
mod plan_cache;
mod primary_key;
mod rls_cves;
mod s3;
mod shared;
mod streams;
