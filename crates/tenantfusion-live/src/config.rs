//! The pool and its sources from a TOML file, with settings inherited in
//! three layers: `[defaults]` < `[types.<kind>]` < `[sources.<name>]`.
//!
//! ```toml
//! [pool]
//! strategy = "priority"            # round_robin | weighted_round_robin | least_loaded | priority
//! health_interval_ms = 5000
//!
//! [defaults]                       # every source
//! max_topics_per_connection = 200
//!
//! [types.websocket]                # every WebSocket source
//! ping_interval_ms = 15000
//!
//! [sources.feed]
//! type = "websocket"
//! url = "ws://127.0.0.1:9001/feed"
//! schema = "ticks"                 # or columns = ["topic:utf8", "price:float64", ...]
//! max_topics_per_connection = 100  # this one only
//! ```
//!
//! Every key is checked when the file is read; an error names it as a
//! dotted path (`sources.feed.url`) and, for an inherited value, the layer
//! it came from. A key in `[defaults]` must be known to some source type;
//! it applies to the types that know it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LiveError, Result};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use toml::{Table, Value};

use crate::generator::{GeneratorConfig, GeneratorSource, tick_schema};
use crate::pool::{LivePool, PoolConfig};
use crate::rest::{RestConfig, RestSource};
use crate::selection::{Strategy, Validation};
use crate::source::{Source, SourceKind, SourceSettings};
use crate::stomp::{StompConfig, StompSource};
use crate::websocket::{WebSocketConfig, WebSocketSource};

/// A pool's settings and its sources, as read from a file.
#[derive(Debug)]
pub struct LiveConfig {
    /// The pool's settings.
    pub pool: PoolConfig,
    /// The sources, in name order.
    pub sources: Vec<Arc<dyn Source>>,
}

impl LiveConfig {
    /// Reads `text`; `INVALID_CONFIG` naming the key for anything wrong.
    pub fn from_toml(text: &str) -> Result<Self> {
        let root: Table = text
            .parse()
            .map_err(|e: toml::de::Error| invalid("(file)", e.to_string().trim()))?;
        let mut sections = Section::new("", &root);
        let pool = pool_config(&sections.table("pool")?)?;
        let defaults = sections.table("defaults")?;
        let types = sections.table("types")?;
        let sources = sections.table("sources")?;
        sections.finish()?;
        for key in defaults.keys() {
            if !SourceKind::ALL.iter().any(|k| knows(*k, key)) {
                return Err(invalid(
                    &format!("defaults.{key}"),
                    "no source type has this setting",
                ));
            }
        }
        let mut by_type: BTreeMap<&str, &Table> = BTreeMap::new();
        for (kind, table) in types.iter() {
            let Some(table) = table.as_table() else {
                return Err(invalid(&format!("types.{kind}"), "must be a table"));
            };
            if parse_kind(kind).is_none() {
                return Err(invalid(
                    &format!("types.{kind}"),
                    "unknown source type; one of generator, websocket, stomp, rest",
                ));
            }
            by_type.insert(kind, table);
        }
        let mut built = Vec::new();
        for (name, table) in sources.iter() {
            let key = format!("sources.{name}");
            let table = table
                .as_table()
                .ok_or_else(|| invalid(&key, "must be a table"))?;
            let kind_name = table
                .get("type")
                .ok_or_else(|| {
                    invalid(
                        &format!("{key}.type"),
                        "missing; one of generator, websocket, stomp, rest",
                    )
                })?
                .as_str()
                .ok_or_else(|| invalid(&format!("{key}.type"), "must be a string"))?;
            let kind = parse_kind(kind_name)
                .ok_or_else(|| invalid(&format!("{key}.type"), &format!("unknown source type '{kind_name}'; one of generator, websocket, stomp, rest")))?;
            let mut settings = Settings::layered(
                name,
                kind,
                &defaults,
                by_type.get(kind_name).copied(),
                table,
            );
            built.push(source(name, kind, &mut settings)?);
            settings.finish()?;
        }
        Ok(Self {
            pool,
            sources: built,
        })
    }

    /// Reads the file at `path`.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("(file)", &format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// One source from `NAME = value` options, as SQL's `CREATE SOURCE name
    /// TYPE kind WITH (...)` gives them: the keys of a `[sources.<name>]`
    /// section, any case. Numbers and `true`/`false` are read as such;
    /// `COLUMNS` and `TOPIC_PREFIXES` are comma-separated lists.
    ///
    /// ```
    /// use tenantfusion_live::LiveConfig;
    /// let options = [("INTERVAL_MS".to_string(), "50".to_string())];
    /// let source = LiveConfig::source_from_options("ticks", "generator", &options).unwrap();
    /// assert_eq!(source.spec().name, "ticks");
    /// let err = LiveConfig::source_from_options("ticks", "generator", &[("URL".into(), "x".into())]);
    /// assert_eq!(err.unwrap_err().code(), "INVALID_CONFIG");
    /// ```
    pub fn source_from_options(
        name: &str,
        kind: &str,
        options: &[(String, String)],
    ) -> Result<Arc<dyn Source>> {
        let kind_name = kind.to_ascii_lowercase();
        let kind = parse_kind(&kind_name).ok_or_else(|| {
            invalid(
                &format!("sources.{name}.type"),
                &format!("unknown source type '{kind}'; one of generator, websocket, stomp, rest"),
            )
        })?;
        let mut own = Table::new();
        for (key, value) in options {
            let key = key.to_ascii_lowercase();
            let value = if matches!(key.as_str(), "columns" | "topic_prefixes") {
                Value::Array(
                    value
                        .split(',')
                        .map(|v| Value::String(v.trim().to_string()))
                        .collect(),
                )
            } else if let Ok(n) = value.parse::<i64>() {
                Value::Integer(n)
            } else if let Ok(b) = value.parse::<bool>() {
                Value::Boolean(b)
            } else {
                Value::String(value.clone())
            };
            own.insert(key, value);
        }
        let empty = Table::new();
        let mut settings = Settings::layered(name, kind, &empty, None, &own);
        let built = source(name, kind, &mut settings)?;
        settings.finish()?;
        Ok(built)
    }

    /// A pool with these settings and sources (inside a tokio runtime).
    pub fn build(self) -> Result<LivePool> {
        let pool = LivePool::new(self.pool)?;
        for source in self.sources {
            pool.add_source(source)?;
        }
        Ok(pool)
    }
}

fn invalid(key: &str, message: &str) -> LiveError {
    LiveError::InvalidConfig {
        key: key.into(),
        message: message.into(),
    }
}

fn parse_kind(name: &str) -> Option<SourceKind> {
    SourceKind::ALL
        .iter()
        .copied()
        .find(|k| k.to_string() == name)
}

/// Keys every source type takes.
const COMMON: &[&str] = &[
    "type",
    "max_topics_per_connection",
    "weight",
    "priority",
    "topic_prefixes",
];
/// Keys of sources whose rows are described in the file.
const ROWS: &[&str] = &["schema", "columns", "sequence_column", "timestamp_column"];

fn own_keys(kind: SourceKind) -> &'static [&'static str] {
    match kind {
        SourceKind::Generator => &["interval_ms", "seed"],
        SourceKind::WebSocket => &[
            "url",
            "max_connections",
            "subscribe_message",
            "unsubscribe_message",
            "ping_interval_ms",
            "max_message_bytes",
        ],
        SourceKind::Stomp => &[
            "address",
            "max_connections",
            "login",
            "passcode",
            "virtual_host",
            "destination_prefix",
            "heartbeat_ms",
            "reply_timeout_ms",
            "max_frame_bytes",
        ],
        SourceKind::Rest => &[
            "base_url",
            "path",
            "topics_per_request",
            "poll_interval_ms",
            "max_requests_per_second",
            "max_idle_connections",
            "request_timeout_ms",
            "max_body_bytes",
            "concurrent_requests",
        ],
    }
}

fn knows(kind: SourceKind, key: &str) -> bool {
    COMMON.contains(&key)
        || own_keys(kind).contains(&key)
        || (kind != SourceKind::Generator && ROWS.contains(&key))
}

/// The keys of one table, so that unknown ones can be reported.
struct Section<'a> {
    path: &'a str,
    table: &'a Table,
    used: BTreeSet<&'a str>,
}

impl<'a> Section<'a> {
    fn new(path: &'a str, table: &'a Table) -> Self {
        Self {
            path,
            table,
            used: BTreeSet::new(),
        }
    }

    fn table(&mut self, key: &'a str) -> Result<Table> {
        self.used.insert(key);
        match self.table.get(key) {
            None => Ok(Table::new()),
            Some(Value::Table(t)) => Ok(t.clone()),
            Some(_) => Err(invalid(&join(self.path, key), "must be a table")),
        }
    }

    fn finish(self) -> Result<()> {
        match self.table.keys().find(|k| !self.used.contains(k.as_str())) {
            Some(key) => Err(invalid(&join(self.path, key), "unknown setting")),
            None => Ok(()),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// One source's settings after inheritance: each value with the layer it
/// came from, read by typed getters that remember what was asked for.
struct Settings<'a> {
    path: String,
    values: BTreeMap<&'a str, (&'a Value, String)>,
    used: BTreeSet<String>,
}

impl<'a> Settings<'a> {
    fn layered(
        name: &str,
        kind: SourceKind,
        defaults: &'a Table,
        of_type: Option<&'a Table>,
        own: &'a Table,
    ) -> Self {
        let path = format!("sources.{name}");
        let mut values = BTreeMap::new();
        for (key, value) in defaults.iter().filter(|(k, _)| knows(kind, k)) {
            values.insert(key.as_str(), (value, format!("defaults.{key}")));
        }
        for (key, value) in of_type.into_iter().flatten() {
            values.insert(key.as_str(), (value, format!("types.{kind}.{key}")));
        }
        for (key, value) in own {
            values.insert(key.as_str(), (value, format!("{path}.{key}")));
        }
        Self {
            path,
            values,
            // `type` was read to choose the kind.
            used: BTreeSet::from(["type".to_string()]),
        }
    }

    /// The value of `key` and where it was set.
    fn get(&mut self, key: &str) -> Option<(&'a Value, String)> {
        self.used.insert(key.to_string());
        self.values.get(key).map(|(v, origin)| (*v, origin.clone()))
    }

    fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::String(s), _)) => Ok(Some(s.clone())),
            Some((_, origin)) => Err(invalid(&origin, "must be a string")),
        }
    }

    fn required(&mut self, key: &str) -> Result<String> {
        let path = format!("{}.{key}", self.path);
        self.string(key)?
            .ok_or_else(|| invalid(&path, "missing; this source type needs it"))
    }

    fn integer(&mut self, key: &str, min: i64) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Integer(n), _)) if *n >= min => Ok(Some(*n as u64)),
            Some((_, origin)) => Err(invalid(
                &origin,
                &format!("must be an integer of at least {min}"),
            )),
        }
    }

    fn millis(&mut self, key: &str) -> Result<Option<Duration>> {
        Ok(self.integer(key, 1)?.map(Duration::from_millis))
    }

    /// Overwrites `target` with `key`'s value in milliseconds, if set.
    fn set_millis(&mut self, key: &str, target: &mut Duration) -> Result<()> {
        if let Some(value) = self.millis(key)? {
            *target = value;
        }
        Ok(())
    }

    /// Overwrites `target` with `key`'s string, if set.
    fn set_string(&mut self, key: &str, target: &mut String) -> Result<()> {
        if let Some(value) = self.string(key)? {
            *target = value;
        }
        Ok(())
    }

    /// Overwrites `target` with `key`'s integer (at least `min`), if set.
    fn set_usize(&mut self, key: &str, min: i64, target: &mut usize) -> Result<()> {
        if let Some(value) = self.integer(key, min)? {
            *target = value as usize;
        }
        Ok(())
    }

    fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some((Value::Array(items), origin)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid(&origin, "must be an array of strings"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some((_, origin)) => Err(invalid(&origin, "must be an array of strings")),
        }
    }

    /// `schema = "ticks"` or `columns = ["name:type", ...]`.
    fn schema(&mut self) -> Result<SchemaRef> {
        let named = self.string("schema")?;
        let columns = self.strings("columns")?;
        match (named, columns) {
            (Some(_), Some(_)) => Err(invalid(
                &format!("{}.columns", self.path),
                "give either schema or columns, not both",
            )),
            (Some(name), None) if name == "ticks" => Ok(tick_schema()),
            (Some(name), None) => Err(invalid(
                &format!("{}.schema", self.path),
                &format!("unknown schema '{name}'; the built-in one is 'ticks'"),
            )),
            (None, Some(columns)) => columns_schema(&format!("{}.columns", self.path), &columns),
            (None, None) => Err(invalid(
                &format!("{}.schema", self.path),
                "missing; give schema = \"ticks\" or columns = [\"topic:utf8\", ...]",
            )),
        }
    }

    /// Errors on a key set for this source (or its type) that nothing read.
    fn finish(self) -> Result<()> {
        for (key, (_, origin)) in &self.values {
            if !self.used.contains(*key) && !origin.starts_with("defaults.") {
                return Err(invalid(origin, "unknown setting for this source type"));
            }
        }
        Ok(())
    }
}

fn columns_schema(key: &str, columns: &[String]) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(columns.len());
    for column in columns {
        let (name, kind) = column
            .split_once(':')
            .ok_or_else(|| invalid(key, &format!("'{column}' is not name:type")))?;
        let data_type = match kind.trim() {
            "utf8" | "string" => DataType::Utf8,
            "int64" => DataType::Int64,
            "uint64" => DataType::UInt64,
            "float64" | "double" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, None),
            "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, None),
            other => {
                return Err(invalid(
                    key,
                    &format!(
                        "type '{other}' of '{name}'; one of utf8, int64, uint64, float64, boolean, timestamp_ms, timestamp_us"
                    ),
                ));
            }
        };
        fields.push(Field::new(name.trim(), data_type, true));
    }
    if fields.first().map(Field::data_type) != Some(&DataType::Utf8) {
        return Err(invalid(
            key,
            "the first column is the topic and must be utf8",
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn pool_config(table: &Table) -> Result<PoolConfig> {
    let mut settings = Settings {
        path: "pool".into(),
        values: table
            .iter()
            .map(|(k, v)| (k.as_str(), (v, format!("pool.{k}"))))
            .collect(),
        used: BTreeSet::new(),
    };
    let mut config = PoolConfig::default();
    let d = PoolConfig::default();
    settings.set_usize("min_connections", 0, &mut config.min_connections)?;
    config.max_connections = settings.integer("max_connections", 1)?.map(|n| n as usize);
    settings.set_millis("idle_timeout_ms", &mut config.idle_timeout)?;
    settings.set_millis("health_interval_ms", &mut config.health_interval)?;
    settings.set_millis("maintenance_interval_ms", &mut config.maintenance_interval)?;
    settings.set_millis("connect_timeout_ms", &mut config.connect_timeout)?;
    settings.set_millis("request_timeout_ms", &mut config.request_timeout)?;
    settings.set_millis("min_stable_ms", &mut config.min_stable)?;
    // 0 turns fail-back off.
    if let Some(after) = settings.integer("fail_back_after_ms", 0)? {
        config.fail_back_after = (after > 0).then(|| Duration::from_millis(after));
    }
    config.failover_after = settings
        .integer("failover_after", 1)?
        .map_or(d.failover_after, |n| n.min(u64::from(u32::MAX)) as u32);
    config.sequence_window = settings
        .integer("sequence_window", 1)?
        .unwrap_or(d.sequence_window);
    if let Some((value, origin)) = settings.get("rebalance_threshold") {
        config.rebalance_threshold = value
            .as_float()
            .ok_or_else(|| invalid(&origin, "must be a number like 0.8"))?;
    }
    settings.set_millis("backoff_initial_ms", &mut config.backoff.initial)?;
    settings.set_millis("backoff_max_ms", &mut config.backoff.max)?;
    if let Some((value, origin)) = settings.get("backoff_multiplier") {
        config.backoff.multiplier = value
            .as_float()
            .filter(|m| *m >= 1.0)
            .ok_or_else(|| invalid(&origin, "must be a number of at least 1.0"))?;
    }
    settings.set_usize(
        "breaker_failure_threshold",
        1,
        &mut config.breaker.failure_threshold,
    )?;
    settings.set_millis("breaker_window_ms", &mut config.breaker.window)?;
    settings.set_millis("breaker_cool_down_ms", &mut config.breaker.cool_down)?;
    settings.set_usize(
        "breaker_half_open_probes",
        1,
        &mut config.breaker.half_open_probes,
    )?;
    if let Some(name) = settings.string("strategy")? {
        config.strategy = match name.as_str() {
            "round_robin" => Strategy::RoundRobin,
            "weighted_round_robin" => Strategy::WeightedRoundRobin,
            "least_loaded" => Strategy::LeastLoaded,
            "priority" => Strategy::Priority,
            other => {
                return Err(invalid(
                    "pool.strategy",
                    &format!(
                        "'{other}'; one of round_robin, weighted_round_robin, least_loaded, priority"
                    ),
                ));
            }
        };
    }
    if let Some(name) = settings.string("validation")? {
        config.validation = match name.as_str() {
            "strict" => Validation::Strict,
            "lenient" => Validation::Lenient,
            "basic" => Validation::Basic,
            other => {
                return Err(invalid(
                    "pool.validation",
                    &format!("'{other}'; one of strict, lenient, basic"),
                ));
            }
        };
    }
    config.default_source = settings.string("default_source")?;
    settings.finish()?;
    config.validate().map_err(|e| match e {
        LiveError::InvalidConfig { key, message } => invalid(&format!("pool.{key}"), &message),
        other => other,
    })?;
    Ok(config)
}

/// Reads the settings every source type shares into `into`. Keys a type
/// does not know stay unread, so `finish` reports them when they are set.
fn read_common(into: &mut SourceSettings, kind: SourceKind, s: &mut Settings<'_>) -> Result<()> {
    let to_u32 = |n: u64| n.min(u64::from(u32::MAX)) as u32;
    into.max_topics_per_connection = s
        .integer("max_topics_per_connection", 1)?
        .map(|n| n as usize);
    if let Some(weight) = s.integer("weight", 0)? {
        into.weight = to_u32(weight);
    }
    if let Some(priority) = s.integer("priority", 0)? {
        into.priority = to_u32(priority);
    }
    if let Some(prefixes) = s.strings("topic_prefixes")? {
        into.topic_prefixes = prefixes;
    }
    if knows(kind, "max_connections") {
        into.max_connections = s.integer("max_connections", 1)?.map(|n| n as usize);
    }
    if knows(kind, "sequence_column") {
        into.sequence_column = s.string("sequence_column")?;
        into.timestamp_column = s.string("timestamp_column")?;
    }
    Ok(())
}

/// Builds one source from its settings; constructor errors name the source.
fn source(name: &str, kind: SourceKind, s: &mut Settings<'_>) -> Result<Arc<dyn Source>> {
    let named = |e: LiveError| match e {
        LiveError::InvalidArgument(message) => invalid(&format!("sources.{name}"), &message),
        other => other,
    };
    Ok(match kind {
        SourceKind::Generator => {
            // The generator's rows are fixed; its share of the common keys
            // is the cap and the balancing weights.
            let mut common = SourceSettings::new(name, tick_schema());
            read_common(&mut common, kind, s)?;
            let d = GeneratorConfig::default();
            let config = GeneratorConfig {
                name: name.into(),
                max_topics_per_connection: common.max_topics_per_connection,
                interval: s.millis("interval_ms")?.unwrap_or(d.interval),
                seed: s.integer("seed", 0)?.unwrap_or(d.seed),
            };
            Arc::new(GeneratorSource::new(config).with_balancing(common.weight, common.priority))
        }
        SourceKind::WebSocket => {
            let mut config = WebSocketConfig::new(name, s.required("url")?, s.schema()?);
            read_common(&mut config.source, kind, s)?;
            s.set_string("subscribe_message", &mut config.subscribe_message)?;
            s.set_string("unsubscribe_message", &mut config.unsubscribe_message)?;
            s.set_millis("ping_interval_ms", &mut config.ping_interval)?;
            s.set_usize("max_message_bytes", 1_024, &mut config.max_message_bytes)?;
            Arc::new(WebSocketSource::new(config).map_err(named)?)
        }
        SourceKind::Stomp => {
            let mut config = StompConfig::new(name, s.required("address")?, s.schema()?);
            read_common(&mut config.source, kind, s)?;
            s.set_string("login", &mut config.login)?;
            s.set_string("passcode", &mut config.passcode)?;
            s.set_string("virtual_host", &mut config.virtual_host)?;
            s.set_string("destination_prefix", &mut config.destination_prefix)?;
            if let Some(beat) = s.integer("heartbeat_ms", 0)? {
                config.heartbeat = Duration::from_millis(beat);
            }
            s.set_millis("reply_timeout_ms", &mut config.reply_timeout)?;
            s.set_usize("max_frame_bytes", 1_024, &mut config.max_frame_bytes)?;
            Arc::new(StompSource::new(config).map_err(named)?)
        }
        SourceKind::Rest => {
            let mut config = RestConfig::new(
                name,
                s.required("base_url")?,
                s.required("path")?,
                s.schema()?,
            );
            read_common(&mut config.source, kind, s)?;
            s.set_usize("topics_per_request", 1, &mut config.topics_per_request)?;
            s.set_millis("poll_interval_ms", &mut config.poll_interval)?;
            config.max_requests_per_second = s
                .integer("max_requests_per_second", 1)?
                .map(|n| n.min(u64::from(u32::MAX)) as u32);
            s.set_usize("max_idle_connections", 0, &mut config.max_idle_connections)?;
            s.set_millis("request_timeout_ms", &mut config.request_timeout)?;
            s.set_usize("max_body_bytes", 1, &mut config.max_body_bytes)?;
            s.set_usize("concurrent_requests", 1, &mut config.concurrent_requests)?;
            Arc::new(RestSource::new(config).map_err(named)?)
        }
    })
}
