//! Which source and connection carries each wanted topic: choosing a
//! source, placing topics under its cap, opening connections, and moving
//! topics when a connection is lost, a source keeps failing, or is removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::assignment::{Assignment, ConnectionId, Placement};
use crate::breaker::BreakerState;
use crate::error::{LiveError, Result};
use crate::metrics::Traffic;
use crate::selection::{Candidate, Request, Selection};
use crate::source::Topic;

use super::ConnectionHandle;
use super::PoolInner;
use super::State;
use super::connector::ConnectionTask;
use super::source_entry::SourceEntry;

impl PoolInner {
    /// Picks a source for `request`, never `exclude`.
    pub(super) fn select(
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

    /// The registered source `name`; `PROVIDER_NOT_FOUND` if there is none.
    fn entry(&self, name: &str) -> Result<Arc<SourceEntry>> {
        self.sources
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LiveError::SourceNotFound(format!("no source named '{name}'")))
    }

    /// Another healthy source of `source`'s kind that can take `topics`
    /// (when `source` is removed, or keeps failing to connect).
    fn other_source(
        &self,
        state: &mut State,
        source: &SourceEntry,
        topics: &[Topic],
    ) -> Option<String> {
        let wanted: Vec<&str> = topics.iter().map(|t| &**t).collect();
        let request = Request {
            kind: Some(source.source.spec().kind),
            topics: &wanted,
            ..Request::default()
        };
        match self.select(state, &request, Some(source.name())) {
            Ok(other) if other.name != source.name() => Some(other.name),
            _ => None,
        }
    }

    pub(super) fn remove_source(self: &Arc<Self>, name: &str) -> Result<()> {
        let mut state = self.state.lock();
        let entry = self.entry(name)?;
        let carried = topics_with(&state.carriers, name);
        let target = if carried.is_empty() {
            None
        } else {
            match self.other_source(&mut state, &entry, &carried) {
                Some(other) => Some(other),
                None => {
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
        state.homes.retain(|_, home| home.as_str() != name);
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
    pub(super) fn assignment<'s>(
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
    pub(super) fn place(
        self: &Arc<Self>,
        state: &mut State,
        source: &str,
        topic: &Topic,
    ) -> Result<()> {
        let entry = self.entry(source)?;
        let placement = self
            .assignment(&mut state.assignments, &entry)
            .assign(topic)?;
        state.carriers.insert(Arc::clone(topic), source.to_string());
        self.carry_out(state, &entry, placement, false);
        Ok(())
    }

    /// Makes a placement happen: wake the connection that now carries more,
    /// or start the one to be opened.
    pub(super) fn carry_out(
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

    pub(super) fn spawn_connection(
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

    /// A connection that was up is gone: its topics go to the connections
    /// left or to a rebuilt one (which waits a jittered backoff first).
    pub(super) fn connection_lost(self: &Arc<Self>, source: &Arc<SourceEntry>, id: ConnectionId) {
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

    /// Moves the topics that failed over back to the source they left, once
    /// that source has been healthy for the pool's `fail_back_after`
    /// (every health check passed, no connect failed). Like a failover, the
    /// move counts as an interruption of each topic; rows the topic misses
    /// while the source connects show as gaps where it numbers them.
    pub(super) fn fail_back(
        self: &Arc<Self>,
        state: &mut State,
        sources: &[Arc<SourceEntry>],
        now: Instant,
    ) {
        let Some(after) = self.config.fail_back_after else {
            return;
        };
        if state.homes.is_empty() {
            return;
        }
        for home in sources {
            let healthy = home
                .health
                .lock()
                .healthy_since
                .is_some_and(|since| now.saturating_duration_since(since) >= after);
            if !healthy || home.breaker.lock().state(now) != BreakerState::Closed {
                continue;
            }
            let name = home.name();
            let returning = topics_with(&state.homes, name);
            if returning.is_empty() {
                continue;
            }
            tracing::info!(
                to = name,
                topics = returning.len(),
                "failing back: the source has been healthy for {after:?}"
            );
            // It proved itself: its connections start without the streak
            // of losses that moved the topics away.
            home.unstable.store(0, Ordering::SeqCst);
            let routes = self.routes.read();
            for topic in returning {
                state.homes.remove(&topic);
                let Some(current) = state.carriers.get(&topic).cloned() else {
                    continue;
                };
                if current == name {
                    continue;
                }
                self.release(state, &current, &topic);
                if let Some(route) = routes.get(&topic) {
                    route.interruptions.add(1);
                }
                // The home may be at its connection limit: then the topic
                // stays where it is.
                if self.place(state, name, &topic).is_err() {
                    let _ = self.place(state, &current, &topic);
                }
            }
        }
    }

    /// Takes `topic` off `source`'s assignment (it stays wanted) and tells
    /// the connection that carried it.
    pub(super) fn release(&self, state: &mut State, source: &str, topic: &Topic) {
        state.carriers.remove(topic);
        let released = state
            .assignments
            .get_mut(source)
            .and_then(|a| a.release(topic));
        if let Some((connection, idle)) = released
            && let Some(handle) = state.connections.get_mut(&(source.to_string(), connection))
        {
            if idle {
                handle.idle_since = Some(Instant::now());
            }
            handle.wake.notify_one();
        }
    }

    /// A connection of `source` that cannot connect hands its topics to
    /// another healthy source of the same kind. `false` (keep trying) when
    /// there is none or the connection carries nothing.
    pub(super) fn fail_over(self: &Arc<Self>, source: &Arc<SourceEntry>, id: ConnectionId) -> bool {
        let mut state = self.state.lock();
        let name = source.name();
        let topics: Vec<Topic> = match state.assignments.get(name) {
            Some(a) if a.contains(id) => a.topics_of(id).cloned().collect(),
            _ => return true,
        };
        if topics.is_empty() {
            return false;
        }
        let Some(other) = self.other_source(&mut state, source, &topics) else {
            return false;
        };
        tracing::warn!(
            from = name,
            to = other.as_str(),
            topics = topics.len(),
            "failing over: the source keeps failing, its topics move"
        );
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
                continue;
            }
            // Where it belongs is where it first failed over from.
            if state.homes.get(&topic).is_some_and(|home| *home == other) {
                state.homes.remove(&topic);
            } else {
                state.homes.entry(topic).or_insert_with(|| name.to_string());
            }
        }
        true
    }
}

/// The topics `map` gives `source` for.
fn topics_with(map: &HashMap<Topic, String>, source: &str) -> Vec<Topic> {
    map.iter()
        .filter(|(_, s)| s.as_str() == source)
        .map(|(topic, _)| Arc::clone(topic))
        .collect()
}
