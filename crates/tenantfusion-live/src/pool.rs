//! The pool: sources, their shared connections, the subscription registry,
//! and the tasks that keep connections in step with what is wanted.
//!
//! One lock (`state`) guards the decisions: who wants which topic, which
//! source and connection carries it. Connection tasks read upstream and
//! deliver without that lock, through `routes` (topic -> subscribers' queues).
//! A connection task learns what to carry by reading its share of the
//! assignment when woken, so every change (subscribe, release, rebalance,
//! failover, replay after a reconnect) is one rule: carry what the
//! assignment says.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::error::{LiveError, Result};
use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    DataType, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::assignment::{Assignment, ConnectionId, Placement};
use crate::backoff::Backoff;
use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::delivery::{Queue, SubscribeOptions, Subscription, split_by_topic};
use crate::metrics::{
    ConnectionStats, Counter, Latency, PoolSnapshot, SourceStats, SubscriberStats, TopicStats,
    Traffic,
};
use crate::registry::{SubscriberId, SubscriptionRegistry};
use crate::selection::{Candidate, Request, Selection, Selector, Strategy, Validation};
use crate::source::{Connection, Source, SourceSpec, Topic, Upstream, now_us};

/// How the pool manages connections. Every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Connections kept open per source even with no topics.
    pub min_connections: usize,
    /// Most connections per source (also bounded by the source's own
    /// `max_connections`).
    pub max_connections: Option<usize>,
    /// A connection with no topics for this long is closed.
    pub idle_timeout: Duration,
    /// Time between two health checks of a source.
    pub health_interval: Duration,
    /// Time between two rounds of upkeep: closing idle connections,
    /// opening the minimum, rebalancing.
    pub maintenance_interval: Duration,
    /// A connection carrying more than this share of its source's cap gives
    /// topics to emptier connections.
    pub rebalance_threshold: f64,
    /// Waits between reconnect attempts.
    pub backoff: Backoff,
    /// When a source's breaker opens and how it recovers.
    pub breaker: BreakerConfig,
    /// Failed connect attempts after which a connection's topics move to
    /// another healthy source of the same kind (if there is one).
    pub failover_after: u32,
    /// How sources are picked among those of a kind.
    pub strategy: Strategy,
    /// How strictly requests' capabilities are matched.
    pub validation: Validation,
    /// The source used when a request names neither source nor kind.
    pub default_source: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_connections: 0,
            max_connections: None,
            idle_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            maintenance_interval: Duration::from_secs(1),
            rebalance_threshold: 0.8,
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            failover_after: 3,
            strategy: Strategy::RoundRobin,
            validation: Validation::Strict,
            default_source: None,
        }
    }
}

impl PoolConfig {
    /// Checks the values; `INVALID_CONFIG` names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(LiveError::InvalidConfig {
                key: key.into(),
                message: why.into(),
            })
        };
        if !(self.rebalance_threshold > 0.0 && self.rebalance_threshold <= 1.0) {
            return bad("rebalance_threshold", "must be in (0, 1]");
        }
        if self.max_connections == Some(0) {
            return bad("max_connections", "must be at least 1");
        }
        if let Some(max) = self.max_connections
            && self.min_connections > max
        {
            return bad("min_connections", "must not exceed max_connections");
        }
        for (key, d) in [
            ("idle_timeout", self.idle_timeout),
            ("health_interval", self.health_interval),
            ("maintenance_interval", self.maintenance_interval),
            ("backoff.max", self.backoff.max),
            ("breaker.cool_down", self.breaker.cool_down),
        ] {
            if d.is_zero() {
                return bad(key, "must be longer than zero");
            }
        }
        if self.breaker.failure_threshold == 0 {
            return bad("breaker.failure_threshold", "must be at least 1");
        }
        if self.failover_after == 0 {
            return bad("failover_after", "must be at least 1");
        }
        Ok(())
    }
}

/// Shared upstream connections for many subscribers.
///
/// Subscribers ask for topics ([`subscribe`](Self::subscribe)); the pool
/// picks a source, places each new topic on a connection under the source's
/// cap (opening one only when all are full), and fans every upstream batch
/// out per topic to the subscribers' queues. A lost connection's topics go
/// to the connections left (or a rebuilt one, after a jittered backoff); a
/// source that keeps refusing hands its topics to another source of the
/// same kind. Nobody asked for is forgotten: the registry of subscribers is
/// kept apart from connections.
///
/// Must be created inside a tokio runtime; its tasks stop when it is dropped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use tenantfusion_live::*;
/// let pool = LivePool::new(PoolConfig::default()).unwrap();
/// let generator = GeneratorConfig { max_topics_per_connection: Some(2), ..Default::default() };
/// pool.add_source(Arc::new(GeneratorSource::new(generator))).unwrap();
/// let topics = ["A", "B", "C"];
/// let _sub = pool.subscribe(&Request { topics: &topics, ..Request::default() }, SubscribeOptions::default()).unwrap();
/// let snapshot = pool.snapshot();
/// assert_eq!(snapshot.sources[0].connections, 2); // ceil(3 / 2)
/// # });
/// ```
#[derive(Debug)]
pub struct LivePool {
    inner: Arc<PoolInner>,
}

/// What the pool's tasks and subscriptions share.
#[derive(Debug)]
pub(crate) struct PoolInner {
    config: PoolConfig,
    runtime: Handle,
    sources: RwLock<BTreeMap<String, Arc<SourceEntry>>>,
    state: Mutex<State>,
    routes: RwLock<HashMap<Topic, Arc<Route>>>,
    stopped: AtomicBool,
}

#[derive(Debug)]
struct State {
    registry: SubscriptionRegistry,
    subscribers: HashMap<SubscriberId, (Arc<Queue>, Vec<Topic>)>,
    /// The source carrying each wanted topic.
    carriers: HashMap<Topic, String>,
    assignments: HashMap<String, Assignment>,
    connections: BTreeMap<(String, ConnectionId), ConnectionHandle>,
    selector: Selector,
}

#[derive(Debug)]
struct ConnectionHandle {
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    traffic: Arc<Traffic>,
    idle_since: Option<Instant>,
}

impl ConnectionHandle {
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

#[derive(Debug)]
struct SourceEntry {
    source: Arc<dyn Source>,
    breaker: Mutex<CircuitBreaker>,
    connects: Counter,
    connect_failures: Counter,
    lost: Counter,
    malformed: Counter,
    last_error: Mutex<Option<String>>,
    health: Mutex<Health>,
    latency: Mutex<Latency>,
    sequence_column: Option<usize>,
    timestamp_column: Option<(usize, TimeUnit)>,
}

impl SourceEntry {
    fn name(&self) -> &str {
        &self.source.spec().name
    }

    /// The event time of `batch`'s first row, in microseconds.
    fn event_time_us(&self, batch: &RecordBatch) -> Option<i64> {
        let (column, unit) = self.timestamp_column?;
        let array = batch.column(column);
        if array.is_empty() || array.is_null(0) {
            return None;
        }
        Some(match unit {
            TimeUnit::Second => {
                array.as_primitive_opt::<TimestampSecondType>()?.value(0) * 1_000_000
            }
            TimeUnit::Millisecond => {
                array
                    .as_primitive_opt::<TimestampMillisecondType>()?
                    .value(0)
                    * 1_000
            }
            TimeUnit::Microsecond => array
                .as_primitive_opt::<TimestampMicrosecondType>()?
                .value(0),
            TimeUnit::Nanosecond => {
                array
                    .as_primitive_opt::<TimestampNanosecondType>()?
                    .value(0)
                    / 1_000
            }
        })
    }
}

/// Health checks of one source: the last results, for an error rate.
#[derive(Debug, Default)]
struct Health {
    checks: u64,
    recent: VecDeque<bool>,
    last_latency: Option<Duration>,
}

const HEALTH_WINDOW: usize = 20;

/// One wanted topic: its subscribers and what has passed through.
#[derive(Debug)]
struct Route {
    topic: Topic,
    subscribers: RwLock<Vec<(SubscriberId, Arc<Queue>)>>,
    /// The highest sequence number delivered.
    last_sequence: Mutex<Option<u64>>,
    traffic: Traffic,
    gaps: Counter,
    interruptions: Counter,
    duplicates: Counter,
}

impl Route {
    fn new(topic: Topic) -> Self {
        Self {
            topic,
            subscribers: RwLock::default(),
            last_sequence: Mutex::default(),
            traffic: Traffic::default(),
            gaps: Counter::default(),
            interruptions: Counter::default(),
            duplicates: Counter::default(),
        }
    }

    /// Drops rows already delivered (a topic can briefly be carried by two
    /// connections while it moves) and counts sequence numbers skipped.
    /// A row without a usable number (null, or negative in an `Int64`
    /// column) is malformed: it is dropped and moves nothing, since taking
    /// `-1` for `u64::MAX` would make every later row look delivered.
    fn sequence(&self, part: RecordBatch, column: Option<usize>) -> Sequenced {
        let Some(column) = column else {
            return Sequenced::whole(part);
        };
        let array = part.column(column);
        let numbers: Vec<Option<u64>> = if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            a.iter().collect()
        } else if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            a.iter()
                .map(|v| v.and_then(|v| u64::try_from(v).ok()))
                .collect()
        } else {
            return Sequenced::whole(part);
        };
        let mut last = self.last_sequence.lock();
        let mut keep = Vec::with_capacity(numbers.len());
        let mut malformed = 0;
        let mut duplicates = 0;
        for n in numbers {
            let Some(n) = n else {
                malformed += 1;
                keep.push(false);
                continue;
            };
            let fresh = last.is_none_or(|l| n > l);
            if fresh {
                if let Some(l) = *last {
                    self.gaps.add(n - l - 1);
                }
                *last = Some(n);
            } else {
                duplicates += 1;
            }
            keep.push(fresh);
        }
        drop(last);
        self.duplicates.add(duplicates);
        let all = part.num_rows() as u64;
        let rows = if malformed + duplicates == 0 {
            Ok(Some(part))
        } else if malformed + duplicates == keep.len() as u64 {
            Ok(None)
        } else {
            filter_record_batch(&part, &BooleanArray::from(keep)).map(Some)
        };
        match rows {
            Ok(rows) => Sequenced { rows, malformed },
            // Filtering a batch by a mask of its own length does not fail;
            // if it ever did, the rows are dropped and counted, not hidden.
            Err(_) => Sequenced {
                rows: None,
                malformed: all,
            },
        }
    }
}

/// What [`Route::sequence`] kept of a batch.
#[derive(Debug)]
struct Sequenced {
    /// The rows to deliver, if any.
    rows: Option<RecordBatch>,
    /// Rows dropped for having no usable sequence number.
    malformed: u64,
}

impl Sequenced {
    fn whole(part: RecordBatch) -> Self {
        Self {
            rows: Some(part),
            malformed: 0,
        }
    }
}

impl LivePool {
    /// A pool with no sources yet. Starts its upkeep and health-check tasks
    /// on the current tokio runtime.
    pub fn new(config: PoolConfig) -> Result<Self> {
        config.validate()?;
        let runtime = Handle::try_current().map_err(|_| {
            LiveError::InvalidArgument("LivePool::new must be called inside a tokio runtime".into())
        })?;
        let selector = {
            let selector = Selector::new(config.strategy).with_validation(config.validation);
            match &config.default_source {
                Some(name) => selector.with_default(name.clone()),
                None => selector,
            }
        };
        let inner = Arc::new(PoolInner {
            config,
            runtime,
            sources: RwLock::default(),
            state: Mutex::new(State {
                registry: SubscriptionRegistry::default(),
                subscribers: HashMap::new(),
                carriers: HashMap::new(),
                assignments: HashMap::new(),
                connections: BTreeMap::new(),
                selector,
            }),
            routes: RwLock::default(),
            stopped: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        inner.runtime.spawn(upkeep(weak.clone()));
        inner.runtime.spawn(health_checks(weak));
        Ok(Self { inner })
    }

    /// Whether `source` can be added now: what [`add_source`](Self::add_source)
    /// checks, changing nothing.
    pub fn check_source(&self, source: &dyn Source) -> Result<()> {
        let spec = source.spec();
        source_columns(spec)?;
        refuse_taken(&spec.name, &self.inner.sources.read())
    }

    /// Registers a source. Errors if the name is taken or its declared
    /// schema does not fit (topic column first, as `Utf8`; sequence column
    /// an integer; timestamp column a timestamp).
    pub fn add_source(&self, source: Arc<dyn Source>) -> Result<()> {
        let (sequence_column, timestamp_column) = source_columns(source.spec())?;
        let name = source.spec().name.clone();
        let mut sources = self.inner.sources.write();
        refuse_taken(&name, &sources)?;
        sources.insert(
            name,
            Arc::new(SourceEntry {
                source,
                breaker: Mutex::new(CircuitBreaker::new(self.inner.config.breaker)),
                connects: Counter::default(),
                connect_failures: Counter::default(),
                lost: Counter::default(),
                malformed: Counter::default(),
                last_error: Mutex::default(),
                health: Mutex::default(),
                latency: Mutex::default(),
                sequence_column,
                timestamp_column,
            }),
        );
        drop(sources);
        self.inner.maintain();
        Ok(())
    }

    /// Unregisters a source and closes its connections. The topics it
    /// carries move to another healthy source of the same kind; when no
    /// source can take them the removal is refused (`INVALID_ARGUMENT`)
    /// and nothing changes. `PROVIDER_NOT_FOUND` for an unknown name.
    pub fn remove_source(&self, name: &str) -> Result<()> {
        self.inner.remove_source(name)
    }

    /// Subscribes to `request.topics` with a queue of `options`. Topics that
    /// nobody carried yet go to one source chosen for the request (by name,
    /// kind, capabilities, health and the pool's strategy); topics carried
    /// already are shared. Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(
        &self,
        request: &Request<'_>,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        self.inner.subscribe(request, options)
    }

    /// What a registered source is (its schema, capabilities, weights).
    pub fn source_spec(&self, name: &str) -> Option<SourceSpec> {
        self.inner
            .sources
            .read()
            .get(name)
            .map(|entry| entry.source.spec().clone())
    }

    /// Counters and state of every source, connection, topic and subscriber.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.inner.snapshot()
    }

    /// Stops every connection and ends every subscription (`recv` returns
    /// `None`). Dropping the pool does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for LivePool {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl PoolInner {
    fn subscribe(
        self: &Arc<Self>,
        request: &Request<'_>,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(LiveError::InvalidArgument(
                "the live pool has been shut down".into(),
            ));
        }
        let mut topics: Vec<Topic> = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            if topic.is_empty() {
                return Err(LiveError::InvalidArgument("a topic cannot be empty".into()));
            }
            if !topics.iter().any(|t| &**t == *topic) {
                topics.push(Topic::from(*topic));
            }
        }
        if topics.is_empty() {
            return Err(LiveError::InvalidArgument(
                "subscribe to at least one topic".into(),
            ));
        }
        let mut state = self.state.lock();
        let new: Vec<&str> = topics
            .iter()
            .filter(|t| state.registry.subscriber_count(t) == 0)
            .map(|t| &**t)
            .collect();
        let selection = if new.is_empty() {
            None
        } else {
            let request = Request {
                topics: &new,
                ..request.clone()
            };
            Some(self.select(&mut state, &request, None)?)
        };
        let source = selection.as_ref().map(|s| s.name.clone());
        let warning = selection.and_then(|s| s.warning);
        let id = state.registry.new_subscriber();
        let queue = Arc::new(Queue::new(options));
        state
            .subscribers
            .insert(id, (Arc::clone(&queue), topics.clone()));
        let mut failure = None;
        for topic in &topics {
            let first = state.registry.subscribe(id, topic);
            self.routes
                .write()
                .entry(Arc::clone(topic))
                .or_insert_with(|| Arc::new(Route::new(Arc::clone(topic))))
                .subscribers
                .write()
                .push((id, Arc::clone(&queue)));
            if first
                && let Some(source) = &source
                && let Err(e) = self.place(&mut state, source, topic)
            {
                failure = Some(e);
                break;
            }
        }
        drop(state);
        if let Some(e) = failure {
            self.unsubscribe(id);
            return Err(e);
        }
        Ok(Subscription::new(id, topics, queue, Arc::downgrade(self)).with_warning(warning))
    }

    /// Picks a source for `request`, never `exclude`.
    fn select(
        &self,
        state: &mut State,
        request: &Request<'_>,
        exclude: Option<&str>,
    ) -> Result<Selection> {
        let sources = self.sources.read();
        let now = Instant::now();
        let candidates: Vec<Candidate<'_>> = sources
            .values()
            .filter(|e| Some(e.name()) != exclude)
            .map(|e| Candidate {
                spec: e.source.spec(),
                healthy: e.breaker.lock().state(now) != BreakerState::Open,
                load: state
                    .assignments
                    .get(e.name())
                    .map_or(0, Assignment::topic_count),
            })
            .collect();
        state.selector.select(request, &candidates)
    }

    fn remove_source(self: &Arc<Self>, name: &str) -> Result<()> {
        let mut state = self.state.lock();
        let entry = self
            .sources
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LiveError::SourceNotFound(format!("no source named '{name}'")))?;
        let carried: Vec<Topic> = state
            .carriers
            .iter()
            .filter(|(_, source)| source.as_str() == name)
            .map(|(topic, _)| Arc::clone(topic))
            .collect();
        let target = if carried.is_empty() {
            None
        } else {
            let wanted: Vec<&str> = carried.iter().map(|t| &**t).collect();
            let request = Request {
                kind: Some(entry.source.spec().kind),
                topics: &wanted,
                ..Request::default()
            };
            match self.select(&mut state, &request, Some(name)) {
                Ok(other) if other.name != name => Some(other.name),
                _ => {
                    return Err(LiveError::InvalidArgument(format!(
                        "source '{name}' carries {} topic(s) and no other healthy {} source can take them; \
                         unsubscribe first or add one",
                        carried.len(),
                        entry.source.spec().kind
                    )));
                }
            }
        };
        self.sources.write().remove(name);
        state.assignments.remove(name);
        let closing: Vec<(String, ConnectionId)> = state
            .connections
            .keys()
            .filter(|(source, _)| source.as_str() == name)
            .cloned()
            .collect();
        for key in closing {
            if let Some(handle) = state.connections.remove(&key) {
                handle.stop();
            }
        }
        if let Some(target) = target {
            let routes = self.routes.read();
            for topic in carried {
                state.carriers.remove(&topic);
                if let Some(route) = routes.get(&topic) {
                    route.interruptions.add(1);
                }
                self.place(&mut state, &target, &topic)?;
            }
        }
        Ok(())
    }

    /// The assignment of `source`'s topics, made on first use with the
    /// source's cap and the lower of its and the pool's connection limits.
    fn assignment<'s>(
        &self,
        assignments: &'s mut HashMap<String, Assignment>,
        source: &SourceEntry,
    ) -> &'s mut Assignment {
        let capabilities = &source.source.spec().capabilities;
        let max = match (capabilities.max_connections, self.config.max_connections) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        assignments
            .entry(source.name().to_string())
            .or_insert_with(|| Assignment::new(capabilities.max_topics_per_connection, max))
    }

    /// Puts `topic` on a connection of `source`, opening one if all are full.
    fn place(self: &Arc<Self>, state: &mut State, source: &str, topic: &Topic) -> Result<()> {
        let entry = self
            .sources
            .read()
            .get(source)
            .cloned()
            .ok_or_else(|| LiveError::SourceNotFound(format!("no source named '{source}'")))?;
        let placement = self
            .assignment(&mut state.assignments, &entry)
            .assign(topic)?;
        state.carriers.insert(Arc::clone(topic), source.to_string());
        self.carry_out(state, &entry, placement, false);
        Ok(())
    }

    /// Makes a placement happen: wake the connection that now carries more,
    /// or start the one to be opened.
    fn carry_out(
        self: &Arc<Self>,
        state: &mut State,
        source: &Arc<SourceEntry>,
        placement: Placement,
        after_loss: bool,
    ) {
        match placement {
            Placement::Carried(_) => {}
            Placement::Existing(id) => {
                if let Some(handle) = state.connections.get_mut(&(source.name().to_string(), id)) {
                    handle.idle_since = None;
                    handle.wake.notify_one();
                }
            }
            Placement::Open(id) => self.spawn_connection(state, source, id, after_loss),
        }
    }

    fn spawn_connection(
        self: &Arc<Self>,
        state: &mut State,
        source: &Arc<SourceEntry>,
        id: ConnectionId,
        after_loss: bool,
    ) {
        let handle = ConnectionHandle {
            wake: Arc::new(Notify::new()),
            stop: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
            traffic: Arc::new(Traffic::default()),
            idle_since: None,
        };
        let task = ConnectionTask {
            pool: Arc::clone(self),
            source: Arc::clone(source),
            id,
            wake: Arc::clone(&handle.wake),
            stop: Arc::clone(&handle.stop),
            connected: Arc::clone(&handle.connected),
            traffic: Arc::clone(&handle.traffic),
            after_loss,
        };
        state
            .connections
            .insert((source.name().to_string(), id), handle);
        self.runtime.spawn(task.run());
    }

    /// Removes a subscriber; topics left with nobody are released upstream.
    pub(crate) fn unsubscribe(&self, id: SubscriberId) {
        let mut state = self.state.lock();
        let Some((queue, topics)) = state.subscribers.remove(&id) else {
            return;
        };
        queue.close();
        for topic in topics {
            if let Some(route) = self.routes.read().get(&topic) {
                route.subscribers.write().retain(|(s, _)| *s != id);
            }
            if !state.registry.unsubscribe(id, &topic) {
                continue;
            }
            self.routes.write().remove(&topic);
            let Some(source) = state.carriers.remove(&topic) else {
                continue;
            };
            let released = state
                .assignments
                .get_mut(&source)
                .and_then(|a| a.release(&topic));
            if let Some((connection, idle)) = released
                && let Some(handle) = state.connections.get_mut(&(source, connection))
            {
                if idle {
                    handle.idle_since = Some(Instant::now());
                }
                handle.wake.notify_one();
            }
        }
    }

    /// The topics connection `id` of `source` is to carry; `None` once it is
    /// no longer part of the assignment (closed as idle, or failed over).
    fn desired(&self, source: &str, id: ConnectionId) -> Option<HashSet<Topic>> {
        let state = self.state.lock();
        let assignment = state.assignments.get(source)?;
        assignment
            .contains(id)
            .then(|| assignment.topics_of(id).cloned().collect())
    }

    /// Fans `batch` out per topic to the subscribers' queues.
    fn deliver(&self, source: &SourceEntry, traffic: &Traffic, batch: &RecordBatch) {
        traffic.messages.add(1);
        traffic.rows.add(batch.num_rows() as u64);
        traffic.bytes.add(batch.get_array_memory_size() as u64);
        let parts = match split_by_topic(batch) {
            Ok(parts) => parts,
            Err(_) => {
                traffic.malformed.add(1);
                source.malformed.add(1);
                return;
            }
        };
        let mut latencies = Vec::with_capacity(parts.len());
        let mut disconnected = Vec::new();
        let mut to_wake = Vec::new();
        let routes = self.routes.read();
        for (topic, part) in parts {
            let Some(route) = routes.get(topic) else {
                continue;
            };
            let sequenced = route.sequence(part, source.sequence_column);
            if sequenced.malformed > 0 {
                traffic.malformed.add(1);
                source.malformed.add(1);
            }
            let Some(part) = sequenced.rows else {
                continue;
            };
            if let Some(at) = source.event_time_us(&part) {
                latencies.push((now_us() as i64).saturating_sub(at).max(0) as u64);
            }
            route.traffic.messages.add(1);
            route.traffic.rows.add(part.num_rows() as u64);
            for (id, queue) in route.subscribers.read().iter() {
                if !queue.push_quietly((Arc::clone(&route.topic), part.clone())) {
                    disconnected.push(*id);
                }
                if queue.needs_wake() {
                    to_wake.push(Arc::clone(queue));
                }
            }
        }
        drop(routes);
        // One wake per subscriber per upstream batch, not per topic in it.
        for queue in to_wake {
            queue.wake();
        }
        if !latencies.is_empty() {
            let mut histogram = source.latency.lock();
            for micros in latencies {
                histogram.record(micros);
            }
        }
        for id in disconnected {
            self.unsubscribe(id);
        }
    }

    /// A connection that was up is gone: its topics go to the connections
    /// left or to a rebuilt one (which waits a jittered backoff first).
    fn connection_lost(self: &Arc<Self>, source: &Arc<SourceEntry>, id: ConnectionId) {
        let mut state = self.state.lock();
        let key = (source.name().to_string(), id);
        if state.connections.remove(&key).is_none() {
            return;
        }
        source.lost.add(1);
        let Some(assignment) = state.assignments.get_mut(source.name()) else {
            return;
        };
        let placed = match assignment.remove_connection(id) {
            Ok(placed) => placed,
            // Cannot happen: the lost connection's slot is free. Should it
            // ever, the topics stay wanted and the next subscribe or upkeep
            // retries; nothing is dropped from the registry.
            Err(_) => return,
        };
        let routes = self.routes.read();
        for (topic, placement) in placed {
            if let Some(route) = routes.get(&topic) {
                route.interruptions.add(1);
            }
            self.carry_out(&mut state, source, placement, true);
        }
    }

    /// A connection of `source` that cannot connect hands its topics to
    /// another healthy source of the same kind. `false` (keep trying) when
    /// there is none or the connection carries nothing.
    fn fail_over(self: &Arc<Self>, source: &Arc<SourceEntry>, id: ConnectionId) -> bool {
        let mut state = self.state.lock();
        let name = source.name();
        let topics: Vec<Topic> = match state.assignments.get(name) {
            Some(a) if a.contains(id) => a.topics_of(id).cloned().collect(),
            _ => return true,
        };
        if topics.is_empty() {
            return false;
        }
        let wanted: Vec<&str> = topics.iter().map(|t| &**t).collect();
        let request = Request {
            kind: Some(source.source.spec().kind),
            topics: &wanted,
            ..Request::default()
        };
        let other = match self.select(&mut state, &request, Some(name)) {
            Ok(other) if other.name != name => other.name,
            _ => return false,
        };
        if let Some(a) = state.assignments.get_mut(name) {
            a.take_connection(id);
        }
        state.connections.remove(&(name.to_string(), id));
        for topic in topics {
            state.carriers.remove(&topic);
            // The other source may be at its connection limit: then the
            // topic stays with this one, on a fresh connection.
            if self.place(&mut state, &other, &topic).is_err() {
                let _ = self.place(&mut state, name, &topic);
            }
        }
        true
    }

    /// Upkeep: close connections idle past the timeout (above the minimum),
    /// open up to the minimum, rebalance connections above the threshold.
    fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let sources: Vec<Arc<SourceEntry>> = self.sources.read().values().cloned().collect();
        let mut state = self.state.lock();
        for source in sources {
            let name = source.name().to_string();
            let State {
                assignments,
                connections,
                ..
            } = &mut *state;
            let assignment = self.assignment(assignments, &source);
            for (id, load) in assignment.loads() {
                let key = (name.clone(), id);
                let Some(handle) = connections.get_mut(&key) else {
                    continue;
                };
                if load > 0 {
                    handle.idle_since = None;
                    continue;
                }
                let since = *handle.idle_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.config.idle_timeout
                    && assignment.connection_count() > self.config.min_connections
                    && assignment.close_idle(id)
                {
                    handle.stop();
                    connections.remove(&key);
                }
            }
            let mut opened = Vec::new();
            while assignment.connection_count() < self.config.min_connections {
                match assignment.open_connection() {
                    Ok(id) => opened.push(id),
                    Err(_) => break,
                }
            }
            let moves = assignment.rebalance(self.config.rebalance_threshold);
            for id in opened {
                self.spawn_connection(&mut state, &source, id, false);
            }
            for m in moves {
                for id in [m.to, m.from] {
                    if let Some(handle) = state.connections.get(&(name.clone(), id)) {
                        handle.wake.notify_one();
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> PoolSnapshot {
        let state = self.state.lock();
        let sources = self.sources.read();
        let routes = self.routes.read();
        let assignment = |name: &str| state.assignments.get(name);
        let now = Instant::now();
        PoolSnapshot {
            sources: sources
                .values()
                .map(|e| {
                    let health = e.health.lock();
                    let failed = health.recent.iter().filter(|ok| !**ok).count();
                    SourceStats {
                        name: e.name().to_string(),
                        kind: e.source.spec().kind,
                        breaker: e.breaker.lock().state(now),
                        connections: assignment(e.name()).map_or(0, Assignment::connection_count),
                        topics: assignment(e.name()).map_or(0, Assignment::topic_count),
                        connects: e.connects.get(),
                        connect_failures: e.connect_failures.get(),
                        lost: e.lost.get(),
                        malformed: e.malformed.get(),
                        last_error: e.last_error.lock().clone(),
                        health_checks: health.checks,
                        error_rate: if health.recent.is_empty() {
                            0.0
                        } else {
                            failed as f64 / health.recent.len() as f64
                        },
                        last_check_latency: health.last_latency,
                        latency: e.latency.lock().summary(),
                    }
                })
                .collect(),
            connections: state
                .connections
                .iter()
                .map(|((source, id), h)| ConnectionStats {
                    source: source.clone(),
                    id: *id,
                    connected: h.connected.load(Ordering::SeqCst),
                    topics: assignment(source).map_or(0, |a| a.topics_of(*id).count()),
                    messages: h.traffic.messages.get(),
                    rows: h.traffic.rows.get(),
                    bytes: h.traffic.bytes.get(),
                    malformed: h.traffic.malformed.get(),
                })
                .collect(),
            topics: routes
                .values()
                .map(|r| {
                    let source = state.carriers.get(&r.topic).cloned().unwrap_or_default();
                    TopicStats {
                        topic: Arc::clone(&r.topic),
                        connection: assignment(&source).and_then(|a| a.connection_of(&r.topic)),
                        source,
                        subscribers: r.subscribers.read().len(),
                        messages: r.traffic.messages.get(),
                        rows: r.traffic.rows.get(),
                        gaps: r.gaps.get(),
                        interruptions: r.interruptions.get(),
                        duplicates: r.duplicates.get(),
                    }
                })
                .collect(),
            subscribers: state
                .subscribers
                .iter()
                .map(|(id, (queue, topics))| SubscriberStats {
                    id: *id,
                    topics: topics.len(),
                    queue: queue.stats(),
                })
                .collect(),
        }
    }

    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let state = self.state.lock();
        for handle in state.connections.values() {
            handle.stop();
        }
        for (queue, _) in state.subscribers.values() {
            queue.close();
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Upkeep every `maintenance_interval` until the pool is dropped.
async fn upkeep(pool: Weak<PoolInner>) {
    loop {
        let interval = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.config.maintenance_interval,
            _ => return,
        };
        tokio::time::sleep(interval).await;
        match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.maintain(),
            _ => return,
        }
    }
}

/// Probes every source every `health_interval`; results feed the breakers
/// (which decide where new work goes) and the reported error rate.
async fn health_checks(pool: Weak<PoolInner>) {
    loop {
        let interval = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.config.health_interval,
            _ => return,
        };
        tokio::time::sleep(interval).await;
        let sources: Vec<Arc<SourceEntry>> = match pool.upgrade() {
            Some(pool) if !pool.is_stopped() => pool.sources.read().values().cloned().collect(),
            _ => return,
        };
        for source in sources {
            if !source.breaker.lock().allow(Instant::now()) {
                continue;
            }
            let started = Instant::now();
            let ok = matches!(
                tokio::time::timeout(interval, source.source.probe()).await,
                Ok(Ok(()))
            );
            let done = Instant::now();
            {
                let mut breaker = source.breaker.lock();
                if ok {
                    breaker.record_success(done);
                } else {
                    breaker.record_failure(done);
                }
            }
            let mut health = source.health.lock();
            health.checks += 1;
            health.last_latency = Some(done - started);
            health.recent.push_back(ok);
            if health.recent.len() > HEALTH_WINDOW {
                health.recent.pop_front();
            }
        }
    }
}

/// Drives one upstream connection: connect (with backoff and the breaker),
/// carry what the assignment says, read and deliver; report a loss.
struct ConnectionTask {
    pool: Arc<PoolInner>,
    source: Arc<SourceEntry>,
    id: ConnectionId,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    traffic: Arc<Traffic>,
    /// A rebuilt connection waits a jittered backoff before its first
    /// attempt, so connections lost together do not reconnect together.
    after_loss: bool,
}

impl ConnectionTask {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.pool.is_stopped()
    }

    async fn run(self) {
        let Some(mut connection) = self.connect().await else {
            return;
        };
        self.connected.store(true, Ordering::SeqCst);
        let outcome = self.serve(&mut connection).await;
        self.connected.store(false, Ordering::SeqCst);
        // Best effort: the connection may be gone already.
        let _ = connection.close().await;
        if let Err(e) = outcome
            && !self.stopped()
        {
            *self.source.last_error.lock() = Some(e.to_string());
            self.pool.connection_lost(&self.source, self.id);
        }
    }

    /// `None` when stopped or when the topics went to another source.
    async fn connect(&self) -> Option<Box<dyn Connection>> {
        let mut attempt: u32 = 0;
        loop {
            if self.stopped() {
                return None;
            }
            if attempt > 0 || self.after_loss {
                let wait = self
                    .pool
                    .config
                    .backoff
                    .delay(attempt.saturating_sub(1), &mut rand::rng());
                tokio::time::sleep(wait).await;
                if self.stopped() {
                    return None;
                }
            }
            let allowed = self.source.breaker.lock().allow(Instant::now());
            if allowed {
                match self.source.source.connect().await {
                    Ok(connection) => {
                        self.source.breaker.lock().record_success(Instant::now());
                        self.source.connects.add(1);
                        return Some(connection);
                    }
                    Err(e) => {
                        self.source.breaker.lock().record_failure(Instant::now());
                        self.source.connect_failures.add(1);
                        *self.source.last_error.lock() = Some(e.to_string());
                    }
                }
            }
            attempt = attempt.saturating_add(1);
            if attempt >= self.pool.config.failover_after
                && self.pool.fail_over(&self.source, self.id)
            {
                return None;
            }
        }
    }

    /// Carries and reads until stopped (`Ok`) or the connection fails (`Err`).
    async fn serve(&self, connection: &mut Box<dyn Connection>) -> Result<()> {
        let mut carried: HashSet<Topic> = HashSet::new();
        loop {
            if self.stopped() {
                return Ok(());
            }
            let Some(desired) = self.pool.desired(self.source.name(), self.id) else {
                return Ok(());
            };
            let add: Vec<Topic> = desired.difference(&carried).cloned().collect();
            let remove: Vec<Topic> = carried.difference(&desired).cloned().collect();
            if !add.is_empty() {
                connection.subscribe(&add).await?;
                carried.extend(add);
            }
            if !remove.is_empty() {
                connection.unsubscribe(&remove).await?;
                for topic in &remove {
                    carried.remove(topic);
                }
            }
            loop {
                tokio::select! {
                    biased;
                    _ = self.wake.notified() => break,
                    event = connection.next_event() => match event? {
                        Upstream::Rows(batch) => self.pool.deliver(&self.source, &self.traffic, &batch),
                        Upstream::Malformed(_) => {
                            self.traffic.malformed.add(1);
                            self.source.malformed.add(1);
                        }
                        Upstream::Closed => {
                            return Err(LiveError::UpstreamUnavailable(format!(
                                "source '{}' closed the connection",
                                self.source.name()
                            )));
                        }
                    },
                }
            }
        }
    }
}

/// `INVALID_ARGUMENT` when `sources` has one named `name` already.
fn refuse_taken(name: &str, sources: &BTreeMap<String, Arc<SourceEntry>>) -> Result<()> {
    if sources.contains_key(name) {
        return Err(LiveError::InvalidArgument(format!(
            "a source named '{name}' is already registered"
        )));
    }
    Ok(())
}

/// Where a source's rows carry their sequence number and event time.
type SourceColumns = (Option<usize>, Option<(usize, TimeUnit)>);

/// A source's sequence and timestamp columns, checked against its schema
/// (and its name checked present).
fn source_columns(spec: &SourceSpec) -> Result<SourceColumns> {
    let schema = &spec.capabilities.schema;
    let name = spec.name.clone();
    if name.is_empty() {
        return Err(LiveError::InvalidArgument("a source needs a name".into()));
    }
    if schema.fields().first().map(|f| f.data_type()) != Some(&DataType::Utf8) {
        return Err(LiveError::SchemaMismatch(format!(
            "source '{name}': the first column must be the topic, as Utf8"
        )));
    }
    let column = |what: &str, wanted: &Option<String>| -> Result<Option<(usize, DataType)>> {
        let Some(column) = wanted else {
            return Ok(None);
        };
        let (index, field) = schema.column_with_name(column).ok_or_else(|| {
            LiveError::SchemaMismatch(format!(
                "source '{name}': {what} column '{column}' is not in its schema"
            ))
        })?;
        Ok(Some((index, field.data_type().clone())))
    };
    let sequence_column = match column("sequence", &spec.capabilities.sequence_column)? {
        Some((i, DataType::UInt64 | DataType::Int64)) => Some(i),
        Some((_, other)) => {
            return Err(LiveError::SchemaMismatch(format!(
                "source '{name}': the sequence column must be UInt64 or Int64, not {other}"
            )));
        }
        None => None,
    };
    let timestamp_column = match column("timestamp", &spec.capabilities.timestamp_column)? {
        Some((i, DataType::Timestamp(unit, _))) => Some((i, unit)),
        Some((_, other)) => {
            return Err(LiveError::SchemaMismatch(format!(
                "source '{name}': the timestamp column must be a Timestamp, not {other}"
            )));
        }
        None => None,
    };
    Ok((sequence_column, timestamp_column))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(seqs: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, true),
        ]));
        let topics = StringArray::from(vec!["T"; seqs.len()]);
        RecordBatch::try_new(
            schema,
            vec![Arc::new(topics), Arc::new(Int64Array::from(seqs))],
        )
        .unwrap()
    }

    fn kept(sequenced: &Sequenced) -> Vec<i64> {
        sequenced.rows.as_ref().map_or_else(Vec::new, |rows| {
            rows.column(1).as_primitive::<Int64Type>().values().to_vec()
        })
    }

    #[test]
    fn a_negative_or_null_sequence_number_is_malformed_and_moves_nothing() {
        let route = Route::new(Arc::from("T"));
        let first = route.sequence(batch(vec![Some(5), Some(-1), None, Some(6)]), Some(1));
        assert_eq!(kept(&first), [5, 6]);
        assert_eq!(first.malformed, 2);
        // Read as u64, -1 was u64::MAX: every later row was a "duplicate".
        let next = route.sequence(batch(vec![Some(7), Some(9)]), Some(1));
        assert_eq!(kept(&next), [7, 9]);
        assert_eq!(next.malformed, 0);
        assert_eq!(route.gaps.get(), 1, "8 skipped");
        assert_eq!(route.duplicates.get(), 0);
        let only_bad = route.sequence(batch(vec![Some(-5)]), Some(1));
        assert!(only_bad.rows.is_none());
        assert_eq!(only_bad.malformed, 1);
        let replayed = route.sequence(batch(vec![Some(9), Some(10)]), Some(1));
        assert_eq!(kept(&replayed), [10]);
        assert_eq!(route.duplicates.get(), 1);
    }

    #[test]
    fn unsigned_sequence_numbers_keep_their_nulls_out() {
        let route = Route::new(Arc::from("T"));
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("seq", DataType::UInt64, true),
        ]));
        let part = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["T"; 3])),
                Arc::new(UInt64Array::from(vec![Some(1), None, Some(2)])),
            ],
        )
        .unwrap();
        let sequenced = route.sequence(part, Some(1));
        assert_eq!(sequenced.malformed, 1);
        assert_eq!(sequenced.rows.unwrap().num_rows(), 2);
    }
}
