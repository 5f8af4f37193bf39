//! What exists, made durable: every change to namespaces, tables, users,
//! grants and sources is a record of the catalog's log, replayed in order
//! when the engine opens.

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use tenantfusion_core::{Access, Result, Role, ScramVerifier, TableType, TenantError};

use crate::codec::{Decoder, Encoder};
use crate::committers::Committers;
use crate::ipc::{decode_schema, encode_schema};
use crate::wal::{Wal, WalOptions};

/// A table as created: enough to build its provider again.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub table: String,
    /// User, shared or stream.
    pub kind: TableType,
    /// The declared columns (NOT NULL included).
    pub schema: SchemaRef,
    /// `WITH (...)` options, keys upper case.
    pub options: Vec<(String, String)>,
    /// Column `DEFAULT`s as SQL expressions.
    pub defaults: Vec<(String, String)>,
    /// The directory (under the storage root) of its rows, for tables whose
    /// rows are durable.
    pub storage: Option<String>,
    /// Its `PRIMARY KEY` columns (empty: none).
    pub primary_key: Vec<String>,
    /// For tables made from a statement DataFusion plans (an external
    /// table, a view), that `CREATE EXTERNAL TABLE` or `CREATE VIEW`, as SQL.
    pub definition: Option<String>,
}

/// One change to what exists.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogEvent {
    /// `CREATE NAMESPACE`.
    CreateNamespace {
        /// Its name.
        name: String,
    },
    /// `DROP NAMESPACE` (of an empty namespace).
    DropNamespace {
        /// Its name.
        name: String,
    },
    /// `CREATE TABLE`.
    CreateTable {
        /// The table.
        def: TableDef,
        /// Whether it replaces a table of that name (`OR REPLACE`).
        replace: bool,
    },
    /// `DROP TABLE`.
    DropTable {
        /// Its namespace.
        namespace: String,
        /// Its name.
        table: String,
    },
    /// `CREATE USER`.
    CreateUser {
        /// The user's name.
        name: String,
        /// Their role.
        role: Role,
        /// What their password is kept as (`WITH PASSWORD`); without one,
        /// they cannot log in over the wire.
        verifier: Option<ScramVerifier>,
    },
    /// `ALTER USER ... WITH PASSWORD`: the user's password is now this one.
    SetPassword {
        /// The user's name.
        name: String,
        /// What the new password is kept as.
        verifier: ScramVerifier,
    },
    /// `DROP USER`: the user is gone and their rows are to go. Logged
    /// before any table lets go of them; [`CatalogEvent::UserForgotten`]
    /// follows once every table has. A log that ends between the two tells
    /// the opener to finish the job.
    DropUser {
        /// The user's name.
        name: String,
    },
    /// Every table has dropped the rows of a user dropped before.
    UserForgotten {
        /// The user's name.
        name: String,
    },
    /// `GRANT` or `REVOKE` on a restricted table.
    Grant {
        /// The table's namespace.
        namespace: String,
        /// The table's name.
        table: String,
        /// Who is granted (or revoked).
        user: String,
        /// What.
        privileges: Vec<Access>,
        /// `true` for GRANT, `false` for REVOKE.
        grant: bool,
    },
    /// `CREATE SOURCE`.
    CreateSource {
        /// Its name.
        name: String,
        /// Its type (`websocket`, `stomp`, `rest`, `generator`).
        kind: String,
        /// Its `WITH (...)` options.
        options: Vec<(String, String)>,
    },
    /// `DROP SOURCE`.
    DropSource {
        /// Its name.
        name: String,
    },
    /// `ALTER STREAM TABLE ... ADD|DROP TOPICS`.
    AlterTopics {
        /// The table's namespace.
        namespace: String,
        /// The table's name.
        table: String,
        /// `true` for ADD.
        add: bool,
        /// The topics.
        topics: Vec<String>,
    },
}

/// The catalog's write-ahead log.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tenantfusion_store::{CatalogEvent, CatalogLog, WalOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let event = CatalogEvent::CreateNamespace { name: "app".into() };
/// CatalogLog::open(dir.path(), WalOptions::default(), |_| Ok(()))
///     .unwrap()
///     .append(&event)
///     .await
///     .unwrap();
/// let mut seen = Vec::new();
/// CatalogLog::open(dir.path(), WalOptions::default(), |e| { seen.push(e); Ok(()) }).unwrap();
/// assert_eq!(seen, [event]);
/// # });
/// ```
#[derive(Debug)]
pub struct CatalogLog {
    wal: Wal,
}

impl CatalogLog {
    /// Opens (or creates) the log in `dir`, handing each event to `replay`
    /// in order. An event that does not decode, or that `replay` cannot
    /// apply, is `DATA_CORRUPTED` naming the log and the record.
    pub fn open(
        dir: impl AsRef<Path>,
        options: WalOptions,
        replay: impl FnMut(CatalogEvent) -> Result<()>,
    ) -> Result<Self> {
        Self::open_with(dir, options, &Committers::new(1)?, replay)
    }

    /// [`CatalogLog::open`], its log written by `committers` (shared with
    /// the tables' logs).
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: WalOptions,
        committers: &Committers,
        mut replay: impl FnMut(CatalogEvent) -> Result<()>,
    ) -> Result<Self> {
        let dir: PathBuf = dir.as_ref().to_path_buf();
        let wal = Wal::open_with(&dir, options, committers, |lsn, payload| {
            let corrupted = |detail: String| TenantError::Corrupted {
                file: dir.display().to_string(),
                detail: format!("catalog record {}: {detail}", lsn.0),
            };
            let event = decode(payload).map_err(corrupted)?;
            replay(event).map_err(|e| corrupted(format!("cannot be applied: {e}")))
        })?;
        Ok(Self { wal })
    }

    /// Every intact event of the catalog log in `dir`, past any damage, and
    /// what was passed over (see [`DurablePartitionStore::salvage`]).
    /// Writes nothing.
    ///
    /// [`DurablePartitionStore::salvage`]: crate::DurablePartitionStore::salvage
    pub fn salvage(dir: impl AsRef<Path>) -> Result<(Vec<CatalogEvent>, Vec<String>)> {
        let dir = dir.as_ref();
        let mut events = Vec::new();
        let mut undecodable = Vec::new();
        let mut skipped = crate::segment::salvage(dir, |lsn, payload| {
            match decode(payload) {
                Ok(event) => events.push(event),
                Err(detail) => {
                    undecodable.push(format!("{}: catalog record {lsn}: {detail}", dir.display()))
                }
            }
            Ok(())
        })?;
        skipped.extend(undecodable);
        Ok((events, skipped))
    }

    /// Makes the next append fail half-written, as a full disk would: for
    /// tests of a change that cannot be logged.
    #[doc(hidden)]
    pub fn fail_next_append(&self) {
        self.wal.fail_next_write();
    }

    /// Logs `event`; resolves once it is durable.
    pub async fn append(&self, event: &CatalogEvent) -> Result<()> {
        self.wal.append(encode(event)?).await.map(|_| ())
    }
}

const CREATE_NAMESPACE: u8 = 1;
const DROP_NAMESPACE: u8 = 2;
const CREATE_TABLE: u8 = 3;
const DROP_TABLE: u8 = 4;
const CREATE_USER: u8 = 5;
const DROP_USER: u8 = 6;
const GRANT: u8 = 7;
const CREATE_SOURCE: u8 = 8;
const DROP_SOURCE: u8 = 9;
const ALTER_TOPICS: u8 = 10;
const USER_FORGOTTEN: u8 = 11;
/// A `CREATE_TABLE` record with one more field, the definition's SQL:
/// logs written before external tables existed still read as they were.
const CREATE_EXTERNAL_TABLE: u8 = 12;
/// A `CREATE_USER` record with one more field, the password's verifier:
/// logs written before passwords existed still read as they were.
const CREATE_USER_WITH_PASSWORD: u8 = 13;
const SET_PASSWORD: u8 = 14;

fn encode(event: &CatalogEvent) -> Result<Vec<u8>> {
    let mut out = Encoder::default();
    match event {
        CatalogEvent::CreateNamespace { name } => out.u8(CREATE_NAMESPACE).str(name),
        CatalogEvent::DropNamespace { name } => out.u8(DROP_NAMESPACE).str(name),
        CatalogEvent::CreateTable { def, replace } => {
            let kind = match def.definition {
                None => CREATE_TABLE,
                Some(_) => CREATE_EXTERNAL_TABLE,
            };
            out.u8(kind)
                .u8(u8::from(*replace))
                .str(&def.namespace)
                .str(&def.table)
                .str(def.kind.as_str())
                .bytes(&encode_schema(&def.schema)?)
                .pairs(&def.options)
                .pairs(&def.defaults)
                .str(def.storage.as_deref().unwrap_or(""))
                .strs(&def.primary_key);
            if let Some(sql) = &def.definition {
                out.str(sql);
            }
            &mut out
        }
        CatalogEvent::DropTable { namespace, table } => {
            out.u8(DROP_TABLE).str(namespace).str(table)
        }
        CatalogEvent::CreateUser {
            name,
            role,
            verifier,
        } => {
            let kind = match verifier {
                None => CREATE_USER,
                Some(_) => CREATE_USER_WITH_PASSWORD,
            };
            out.u8(kind).str(name).str(&role.to_string());
            if let Some(verifier) = verifier {
                out.str(&verifier.to_string());
            }
            &mut out
        }
        CatalogEvent::SetPassword { name, verifier } => {
            out.u8(SET_PASSWORD).str(name).str(&verifier.to_string())
        }
        CatalogEvent::DropUser { name } => out.u8(DROP_USER).str(name),
        CatalogEvent::UserForgotten { name } => out.u8(USER_FORGOTTEN).str(name),
        CatalogEvent::Grant {
            namespace,
            table,
            user,
            privileges,
            grant,
        } => {
            let privileges: Vec<String> =
                privileges.iter().map(|p| p.as_str().to_string()).collect();
            out.u8(GRANT)
                .str(namespace)
                .str(table)
                .str(user)
                .strs(&privileges)
                .u8(u8::from(*grant))
        }
        CatalogEvent::CreateSource {
            name,
            kind,
            options,
        } => out.u8(CREATE_SOURCE).str(name).str(kind).pairs(options),
        CatalogEvent::DropSource { name } => out.u8(DROP_SOURCE).str(name),
        CatalogEvent::AlterTopics {
            namespace,
            table,
            add,
            topics,
        } => out
            .u8(ALTER_TOPICS)
            .str(namespace)
            .str(table)
            .u8(u8::from(*add))
            .strs(topics),
    };
    Ok(out.finish())
}

fn decode(payload: &[u8]) -> Result<CatalogEvent, String> {
    let mut d = Decoder::new(payload);
    let event = match d.u8("kind")? {
        CREATE_NAMESPACE => CatalogEvent::CreateNamespace {
            name: d.str("name")?,
        },
        DROP_NAMESPACE => CatalogEvent::DropNamespace {
            name: d.str("name")?,
        },
        kind @ (CREATE_TABLE | CREATE_EXTERNAL_TABLE) => CatalogEvent::CreateTable {
            replace: d.u8("replace")? != 0,
            def: TableDef {
                namespace: d.str("namespace")?,
                table: d.str("table")?,
                kind: match d.str("table type")?.as_str() {
                    "user" => TableType::User,
                    "shared" => TableType::Shared,
                    "stream" => TableType::Stream,
                    "view" => TableType::View,
                    other => return Err(format!("unknown table type '{other}'")),
                },
                schema: decode_schema(d.bytes("schema")?)?,
                options: d.pairs("options")?,
                defaults: d.pairs("defaults")?,
                storage: Some(d.str("storage")?).filter(|s| !s.is_empty()),
                primary_key: d.strs("primary key")?,
                definition: match kind {
                    CREATE_EXTERNAL_TABLE => Some(d.str("definition")?),
                    _ => None,
                },
            },
        },
        DROP_TABLE => CatalogEvent::DropTable {
            namespace: d.str("namespace")?,
            table: d.str("table")?,
        },
        kind @ (CREATE_USER | CREATE_USER_WITH_PASSWORD) => CatalogEvent::CreateUser {
            name: d.str("name")?,
            role: d.str("role")?.parse().map_err(|e| format!("role: {e}"))?,
            verifier: match kind {
                CREATE_USER_WITH_PASSWORD => Some(verifier(&mut d)?),
                _ => None,
            },
        },
        SET_PASSWORD => CatalogEvent::SetPassword {
            name: d.str("name")?,
            verifier: verifier(&mut d)?,
        },
        DROP_USER => CatalogEvent::DropUser {
            name: d.str("name")?,
        },
        USER_FORGOTTEN => CatalogEvent::UserForgotten {
            name: d.str("name")?,
        },
        GRANT => CatalogEvent::Grant {
            namespace: d.str("namespace")?,
            table: d.str("table")?,
            user: d.str("user")?,
            privileges: d
                .strs("privileges")?
                .iter()
                .map(|p| p.parse().map_err(|_| format!("unknown privilege '{p}'")))
                .collect::<Result<_, _>>()?,
            grant: d.u8("grant")? != 0,
        },
        CREATE_SOURCE => CatalogEvent::CreateSource {
            name: d.str("name")?,
            kind: d.str("type")?,
            options: d.pairs("options")?,
        },
        DROP_SOURCE => CatalogEvent::DropSource {
            name: d.str("name")?,
        },
        ALTER_TOPICS => CatalogEvent::AlterTopics {
            namespace: d.str("namespace")?,
            table: d.str("table")?,
            add: d.u8("add")? != 0,
            topics: d.strs("topics")?,
        },
        other => return Err(format!("unknown catalog record kind {other}")),
    };
    d.end()?;
    Ok(event)
}

fn verifier(d: &mut Decoder<'_>) -> Result<ScramVerifier, String> {
    d.str("verifier")?
        .parse()
        .map_err(|e| format!("verifier: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn every_event() -> Vec<CatalogEvent> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]));
        vec![
            CatalogEvent::CreateNamespace { name: "app".into() },
            CatalogEvent::CreateTable {
                replace: true,
                def: TableDef {
                    namespace: "app".into(),
                    table: "notes".into(),
                    kind: TableType::Shared,
                    schema,
                    options: vec![("ACCESS_LEVEL".into(), "restricted".into())],
                    defaults: vec![("ts".into(), "now()".into())],
                    storage: Some("app.notes.1".into()),
                    primary_key: vec!["id".into()],
                    definition: None,
                },
            },
            CatalogEvent::CreateTable {
                replace: false,
                def: TableDef {
                    namespace: "app".into(),
                    table: "files".into(),
                    kind: TableType::Shared,
                    schema: Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)])),
                    options: vec![("ACCESS_LEVEL".into(), "private".into())],
                    defaults: vec![],
                    storage: None,
                    primary_key: vec![],
                    definition: Some(
                        "CREATE EXTERNAL TABLE app.files STORED AS CSV LOCATION 'f'".into(),
                    ),
                },
            },
            CatalogEvent::CreateUser {
                name: "alice".into(),
                role: Role::Service,
                verifier: None,
            },
            CatalogEvent::CreateUser {
                name: "bob".into(),
                role: Role::User,
                verifier: Some(ScramVerifier::with_salt("pencil", b"salt", 4096).unwrap()),
            },
            CatalogEvent::SetPassword {
                name: "bob".into(),
                verifier: ScramVerifier::with_salt("ink", b"salt2", 8192).unwrap(),
            },
            CatalogEvent::Grant {
                namespace: "app".into(),
                table: "notes".into(),
                user: "alice".into(),
                privileges: Access::ALL.to_vec(),
                grant: true,
            },
            CatalogEvent::CreateSource {
                name: "feed".into(),
                kind: "generator".into(),
                options: vec![("RATE".into(), "10".into())],
            },
            CatalogEvent::AlterTopics {
                namespace: "app".into(),
                table: "ticks".into(),
                add: true,
                topics: vec!["A".into(), "B".into()],
            },
            CatalogEvent::DropSource {
                name: "feed".into(),
            },
            CatalogEvent::DropUser {
                name: "alice".into(),
            },
            CatalogEvent::UserForgotten {
                name: "alice".into(),
            },
            CatalogEvent::DropTable {
                namespace: "app".into(),
                table: "notes".into(),
            },
            CatalogEvent::DropNamespace { name: "app".into() },
        ]
    }

    #[test]
    fn every_event_decodes_to_itself_and_damage_is_named() {
        for event in every_event() {
            let bytes = encode(&event).unwrap();
            assert_eq!(decode(&bytes), Ok(event.clone()));
            assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "{event:?}");
        }
        assert_eq!(decode(&[99]).unwrap_err(), "unknown catalog record kind 99");
        // A user logged before passwords existed reads as one without.
        let old = [
            &[CREATE_USER][..],
            &[5, 0, 0, 0],
            b"carol",
            &[4, 0, 0, 0],
            b"user",
        ]
        .concat();
        let mut plain = Encoder::default();
        plain.u8(CREATE_USER).str("carol").str("user");
        assert_eq!(plain.finish(), old);
        assert_eq!(
            decode(&old),
            Ok(CatalogEvent::CreateUser {
                name: "carol".into(),
                role: Role::User,
                verifier: None,
            })
        );
        // A damaged verifier is named, never taken for no password.
        let mut damaged = Encoder::default();
        damaged
            .u8(SET_PASSWORD)
            .str("bob")
            .str("SCRAM-SHA-256$4096:x");
        assert!(
            decode(&damaged.finish())
                .unwrap_err()
                .starts_with("verifier:")
        );
    }

    #[tokio::test]
    async fn events_replay_in_order_and_a_failed_replay_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = CatalogLog::open(dir.path(), WalOptions::default(), |_| Ok(())).unwrap();
        for event in every_event() {
            log.append(&event).await.unwrap();
        }
        drop(log);
        let mut seen = Vec::new();
        CatalogLog::open(dir.path(), WalOptions::default(), |e| {
            seen.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, every_event());

        let err = CatalogLog::open(dir.path(), WalOptions::default(), |e| match e {
            CatalogEvent::CreateUser { .. } => Err(TenantError::UserExists("alice".into())),
            _ => Ok(()),
        })
        .unwrap_err();
        assert_eq!(err.code(), "DATA_CORRUPTED");
        assert!(err.to_string().contains("catalog record 4"), "{err}");
    }
}
