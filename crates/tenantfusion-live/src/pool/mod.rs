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
//!
//! The module's parts: [`config`] (what the pool is told), [`source_entry`]
//! (a registered source and its counters), [`placement`] (which source and
//! connection carries a topic, failover included), [`connector`] (one
//! connection's task: connect, carry, read), [`route`] (fanning rows out
//! per topic, sequence numbers), [`upkeep`] (idle connections, the minimum,
//! rebalancing, health checks), [`snapshot`] and [`subscription`].

mod config;
mod connector;
mod placement;
mod route;
mod snapshot;
mod source_entry;
mod subscription;
mod upkeep;

pub use config::PoolConfig;
pub use subscription::Subscription;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::assignment::{Assignment, ConnectionId};
use crate::breaker::CircuitBreaker;
use crate::delivery::SubscribeOptions;
use crate::error::{LiveError, Result};
use crate::metrics::{Counter, PoolSnapshot, Traffic};
use crate::registry::{SubscriberId, SubscriptionRegistry};
use crate::selection::{Request, Selector};
use crate::source::{Source, SourceSpec, Topic};

use route::Route;
use source_entry::{SourceEntry, refuse_taken, source_columns};
use subscription::Queue;
use upkeep::{health_checks, upkeep};

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
    /// Upstream batches delivered so far (each numbered for the queues).
    batches: AtomicU64,
    stopped: AtomicBool,
}

#[derive(Debug)]
struct State {
    registry: SubscriptionRegistry,
    subscribers: HashMap<SubscriberId, (Arc<Queue>, Vec<Topic>)>,
    /// The source carrying each wanted topic.
    carriers: HashMap<Topic, String>,
    /// For each topic that failed over, the source it left (where it goes
    /// back to when that source is healthy again).
    homes: HashMap<Topic, String>,
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
                homes: HashMap::new(),
                assignments: HashMap::new(),
                connections: BTreeMap::new(),
                selector,
            }),
            routes: RwLock::default(),
            batches: AtomicU64::new(0),
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
                foreign_rows: Counter::default(),
                messages: Counter::default(),
                rows: Counter::default(),
                gaps: Counter::default(),
                unstable: AtomicU32::new(0),
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

    /// Counters and state of every source: [`snapshot`](Self::snapshot)'s
    /// `sources`, without walking every topic and subscriber (what a
    /// metrics scrape reads).
    pub fn sources(&self) -> Vec<crate::SourceStats> {
        self.inner.source_stats()
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
        // Duplicates dropped by a set: a search per topic made a million
        // topics in one call quadratic.
        let mut seen: HashSet<&str> = HashSet::with_capacity(request.topics.len());
        let mut topics: Vec<Topic> = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            if topic.is_empty() {
                return Err(LiveError::InvalidArgument("a topic cannot be empty".into()));
            }
            if seen.insert(topic) {
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
            state.homes.remove(&topic);
            if let Some(source) = state.carriers.get(&topic).cloned() {
                self.release(&mut state, &source, &topic);
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
