//! Getting the intact rows out of a damaged data directory.
//!
//! An engine never chooses data loss on its own: damage to a log, a
//! manifest or a segment fails what needs it with `DATA_CORRUPTED`, and
//! the files stay as they were. [`salvage`] is the administrator's way
//! out: it reads the directory (no engine may have it open) past every
//! damaged stretch, writes nothing, and hands back each table's readable
//! rows, user by user, with a description of everything passed over. The
//! administrator decides what to do with them, typically inserting them
//! into a fresh directory:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tenantfusion::{Engine, EngineConfig, Role, Storage, UserContext};
//! let dir = tempfile::tempdir().unwrap();
//! let config = EngineConfig::default().with_storage(Storage::from_url(dir.path().to_str().unwrap())?);
//! {
//!     let engine = Engine::new(config.clone())?;
//!     engine.session(UserContext::new("admin", Role::Dba)).sql("CREATE TABLE notes (id BIGINT)").await?;
//!     let alice = engine.session(UserContext::new("alice", Role::User));
//!     alice.sql("INSERT INTO notes VALUES (1), (2)").await?.collect().await?;
//! }
//! let report = tenantfusion::salvage(&config.storage).await?;
//! assert!(report.skipped.is_empty());
//! let notes = &report.tables[0];
//! assert_eq!((notes.table.as_str(), notes.partitions[0].0.as_str()), ("notes", "alice"));
//! # Ok::<_, tenantfusion::TenantError>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tenantfusion_core::{Result, TableType, TenantError};
use tenantfusion_store::{CatalogEvent, StorageRoot, TableDef, WalOptions};
use tenantfusion_tables::PartitionKey;

use crate::config::Storage;

/// What [`salvage`] read.
#[derive(Debug, Default)]
pub struct SalvageReport {
    /// Every durable table the catalog's intact records define.
    pub tables: Vec<SalvagedTable>,
    /// What was passed over in the catalog's log (a table created in a
    /// damaged record is missing from `tables`; its directory is untouched).
    pub skipped: Vec<String>,
}

/// One table's readable rows.
#[derive(Debug)]
pub struct SalvagedTable {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub table: String,
    /// User or shared.
    pub kind: TableType,
    /// Its columns.
    pub schema: SchemaRef,
    /// The rows of each partition: the owning user's name, or `""` for a
    /// shared table's one partition.
    pub partitions: Vec<(String, Vec<RecordBatch>)>,
    /// What was passed over: damaged log stretches, manifests, segments.
    pub skipped: Vec<String>,
}

/// Reads every intact row of the durable directory `storage` describes,
/// writing nothing; see the [module docs](self). `STORAGE_ERROR` when an
/// engine has the directory open, `INVALID_ARGUMENT` for in-memory storage.
pub async fn salvage(storage: &Storage) -> Result<SalvageReport> {
    let options = WalOptions::default();
    let root = match storage {
        Storage::Memory => {
            return Err(TenantError::InvalidArgument(
                "in-memory storage keeps nothing to salvage".into(),
            ));
        }
        Storage::Directory { path, .. } => StorageRoot::open(path, options)?,
        Storage::S3 {
            url,
            path,
            options: s3,
            ..
        } => StorageRoot::open_s3(path, options, url, s3)?,
    };
    let (events, skipped) = root.salvage_catalog()?;
    let mut tables: BTreeMap<(String, String), TableDef> = BTreeMap::new();
    for event in events {
        match event {
            CatalogEvent::CreateTable { def, .. } => {
                tables.insert((def.namespace.clone(), def.table.clone()), def);
            }
            CatalogEvent::DropTable { namespace, table } => {
                tables.remove(&(namespace, table));
            }
            _ => {}
        }
    }
    let mut report = SalvageReport {
        tables: Vec::new(),
        skipped,
    };
    for ((namespace, table), def) in tables {
        let Some(storage) = &def.storage else {
            continue; // stream tables keep no rows
        };
        let salvaged = root.salvage_table(storage).await?;
        let partitions = salvaged
            .partitions
            .into_iter()
            .filter(|(_, rows)| rows.iter().any(|b| b.num_rows() > 0))
            .map(|(key, rows)| {
                let owner = match key {
                    PartitionKey::User(user) => user.to_string(),
                    PartitionKey::Shared => String::new(),
                    PartitionKey::Topic(topic) => topic.to_string(),
                };
                (owner, rows)
            })
            .collect();
        report.tables.push(SalvagedTable {
            namespace,
            table,
            kind: def.kind,
            schema: def.schema,
            partitions,
            skipped: salvaged.skipped,
        });
    }
    Ok(report)
}
