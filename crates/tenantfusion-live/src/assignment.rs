//! Which connection carries which topic, under a source's per-connection cap.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{LiveError, Result};

use crate::source::Topic;

/// One upstream connection of a source, as the assignment knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Where [`Assignment::assign`] put a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The topic was carried already, by this connection.
    Carried(ConnectionId),
    /// On an open connection that had room (the least loaded one).
    Existing(ConnectionId),
    /// Every connection was full: the caller opens this new one.
    Open(ConnectionId),
}

impl Placement {
    /// The connection that carries the topic.
    pub fn connection(self) -> ConnectionId {
        match self {
            Placement::Carried(id) | Placement::Existing(id) | Placement::Open(id) => id,
        }
    }
}

/// A topic moved by [`Assignment::rebalance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The topic.
    pub topic: Topic,
    /// The connection that carried it.
    pub from: ConnectionId,
    /// The connection that carries it now.
    pub to: ConnectionId,
}

/// Topics placed on connections so that no connection carries more than the
/// cap and a new connection is opened only when every open one is full: `n`
/// topics need `ceil(n / cap)` connections. New topics go to the least
/// loaded connection with room.
///
/// It decides; the pool carries the decisions out on real connections.
#[derive(Debug, Clone)]
pub struct Assignment {
    cap: Option<usize>,
    max_connections: Option<usize>,
    connections: BTreeMap<ConnectionId, BTreeSet<Topic>>,
    /// Every connection by `(load, id)`: the least and most loaded are
    /// found without a walk over all connections, which made placing a
    /// million topics on 5,000 connections quadratic.
    by_load: BTreeSet<(usize, ConnectionId)>,
    placed: HashMap<Topic, ConnectionId>,
    next: u64,
}

impl Assignment {
    /// An empty assignment for a source with these limits (`None`: unlimited).
    pub fn new(max_topics_per_connection: Option<usize>, max_connections: Option<usize>) -> Self {
        Self {
            cap: max_topics_per_connection.map(|c| c.max(1)),
            max_connections,
            connections: BTreeMap::new(),
            by_load: BTreeSet::new(),
            placed: HashMap::new(),
            next: 0,
        }
    }

    /// Places `topic`, opening a connection only when all are full.
    /// `RESOURCES_EXHAUSTED` when all are full and no more may be opened.
    pub fn assign(&mut self, topic: &str) -> Result<Placement> {
        if let Some(id) = self.placed.get(topic) {
            return Ok(Placement::Carried(*id));
        }
        let cap = self.cap.unwrap_or(usize::MAX);
        // The least loaded has room if any has.
        let roomiest = self
            .by_load
            .first()
            .filter(|(load, _)| *load < cap)
            .map(|(_, id)| *id);
        let placement = match roomiest {
            Some(id) => Placement::Existing(id),
            None => Placement::Open(self.open_connection().map_err(|_| {
                LiveError::ResourcesExhausted(format!(
                    "all {} connections carry {cap} topics; cannot place '{topic}'",
                    self.connections.len()
                ))
            })?),
        };
        let id = placement.connection();
        let topic = Topic::from(topic);
        self.add_topic(id, topic.clone());
        self.placed.insert(topic, id);
        Ok(placement)
    }

    /// Puts `topic` on connection `id`, keeping `by_load` in step.
    fn add_topic(&mut self, id: ConnectionId, topic: Topic) {
        if let Some(topics) = self.connections.get_mut(&id) {
            let before = topics.len();
            if topics.insert(topic) {
                self.by_load.remove(&(before, id));
                self.by_load.insert((before + 1, id));
            }
        }
    }

    /// Takes `topic` off connection `id`, keeping `by_load` in step;
    /// whether `id` is left empty (`None`: no such connection).
    fn remove_topic(&mut self, id: ConnectionId, topic: &str) -> Option<bool> {
        let topics = self.connections.get_mut(&id)?;
        let before = topics.len();
        if topics.remove(topic) {
            self.by_load.remove(&(before, id));
            self.by_load.insert((before - 1, id));
        }
        Some(topics.is_empty())
    }

    /// Stops carrying `topic`: the connection that carried it and whether it
    /// is now idle (the pool may close it after its idle timeout).
    pub fn release(&mut self, topic: &str) -> Option<(ConnectionId, bool)> {
        let id = self.placed.remove(topic)?;
        let empty = self.remove_topic(id, topic)?;
        Some((id, empty))
    }

    /// Forgets an idle or closed connection without placing its topics again
    /// (see [`remove_connection`](Self::remove_connection) for a lost one).
    pub fn close_idle(&mut self, id: ConnectionId) -> bool {
        match self.connections.get(&id) {
            Some(topics) if topics.is_empty() => {
                self.by_load.remove(&(0, id));
                self.connections.remove(&id).is_some()
            }
            _ => false,
        }
    }

    /// A connection died: its topics go to the connections left, least
    /// loaded first, then to a new connection (the lost one's slot is free,
    /// and its topics fit one connection, so they always find a place).
    pub fn remove_connection(&mut self, id: ConnectionId) -> Result<Vec<(Topic, Placement)>> {
        let mut placed = Vec::new();
        for topic in self.take_connection(id) {
            let placement = self.assign(&topic)?;
            placed.push((topic, placement));
        }
        Ok(placed)
    }

    /// Removes a connection and returns its topics without placing them
    /// (they are to go to another source).
    pub fn take_connection(&mut self, id: ConnectionId) -> Vec<Topic> {
        let orphans = self.connections.remove(&id).unwrap_or_default();
        self.by_load.remove(&(orphans.len(), id));
        for topic in &orphans {
            self.placed.remove(topic);
        }
        orphans.into_iter().collect()
    }

    /// Opens a connection with no topics (to keep a minimum warm); new topics
    /// go to it first, as the least loaded. `RESOURCES_EXHAUSTED` at the
    /// connection limit.
    pub fn open_connection(&mut self) -> Result<ConnectionId> {
        if let Some(max) = self.max_connections
            && self.connections.len() >= max
        {
            return Err(LiveError::ResourcesExhausted(format!(
                "the source allows {max} connections and all are open"
            )));
        }
        self.next += 1;
        let id = ConnectionId(self.next);
        self.connections.insert(id, BTreeSet::new());
        self.by_load.insert((0, id));
        Ok(id)
    }

    /// Whether `id` is one of the connections.
    pub fn contains(&self, id: ConnectionId) -> bool {
        self.connections.contains_key(&id)
    }

    /// Moves topics from the fullest connection to the emptiest while the
    /// fullest carries more than `threshold * cap` topics and the emptiest
    /// two or more fewer: connections come back under the threshold where
    /// there is room, with as few moves (resubscriptions) as that takes.
    /// No-op without a cap.
    pub fn rebalance(&mut self, threshold: f64) -> Vec<Move> {
        let mut moves = Vec::new();
        let Some(cap) = self.cap else {
            return moves;
        };
        let limit = threshold * cap as f64;
        loop {
            // The most loaded, the lowest id among equals; the least loaded.
            let (Some(&(most, _)), Some(&(least, to))) =
                (self.by_load.last(), self.by_load.first())
            else {
                return moves;
            };
            if most as f64 <= limit || most < least + 2 {
                return moves;
            }
            let Some(&(_, from)) = self.by_load.range((most, ConnectionId(0))..).next() else {
                return moves;
            };
            let Some(topic) = self.connections.get(&from).and_then(|t| t.last().cloned()) else {
                return moves;
            };
            self.remove_topic(from, &topic);
            self.add_topic(to, topic.clone());
            self.placed.insert(topic.clone(), to);
            moves.push(Move { topic, from, to });
        }
    }

    /// The connection carrying `topic`.
    pub fn connection_of(&self, topic: &str) -> Option<ConnectionId> {
        self.placed.get(topic).copied()
    }

    /// The topics `id` carries.
    pub fn topics_of(&self, id: ConnectionId) -> impl Iterator<Item = &Topic> {
        self.connections.get(&id).into_iter().flatten()
    }

    /// Connections and how many topics each carries, in id order.
    pub fn loads(&self) -> Vec<(ConnectionId, usize)> {
        self.connections
            .iter()
            .map(|(id, t)| (*id, t.len()))
            .collect()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Topics carried.
    pub fn topic_count(&self) -> usize {
        self.placed.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ten_thousand_topics_at_cap_200_use_50_connections() {
        let mut a = Assignment::new(Some(200), None);
        for t in 0..10_000 {
            a.assign(&format!("T{t}")).unwrap();
        }
        assert_eq!(a.connection_count(), 50);
        assert!(a.loads().iter().all(|(_, n)| *n == 200));
        assert_eq!(
            a.assign("T5").unwrap(),
            Placement::Carried(a.connection_of("T5").unwrap())
        );
    }

    #[test]
    fn a_lost_connection_s_topics_fill_the_others_first() {
        let mut a = Assignment::new(Some(10), None);
        for t in 0..25 {
            a.assign(&format!("T{t}")).unwrap();
        }
        // 10 + 10 + 5: losing a full one puts 5 on the third, then opens one.
        let lost = ConnectionId(1);
        let placed = a.remove_connection(lost).unwrap();
        assert_eq!(placed.len(), 10);
        let opened = placed
            .iter()
            .filter(|(_, p)| matches!(p, Placement::Open(_)))
            .count();
        assert_eq!(opened, 1);
        assert_eq!(a.topic_count(), 25);
        assert_eq!(a.connection_count(), 3);
        assert!(a.connection_of("T0").is_some_and(|c| c != lost));
    }

    #[test]
    fn the_connection_limit_is_respected_and_a_lost_slot_is_reused() {
        let mut a = Assignment::new(Some(2), Some(2));
        for t in ["A", "B", "C", "D"] {
            a.assign(t).unwrap();
        }
        assert_eq!(a.assign("E").unwrap_err().code(), "RESOURCES_EXHAUSTED");
        let placed = a.remove_connection(ConnectionId(1)).unwrap();
        assert_eq!(placed.len(), 2);
        assert!(matches!(placed[0].1, Placement::Open(ConnectionId(3))));
        assert_eq!(placed[1].1, Placement::Existing(ConnectionId(3)));
        assert_eq!(a.connection_count(), 2, "the lost one was rebuilt");
    }

    #[test]
    fn rebalance_evens_out_connections_above_the_threshold() {
        let mut a = Assignment::new(Some(200), None);
        for t in 0..201 {
            a.assign(&format!("T{t}")).unwrap();
        }
        assert_eq!(a.loads(), [(ConnectionId(1), 200), (ConnectionId(2), 1)]);
        let moves = a.rebalance(0.8);
        assert_eq!(moves.len(), 40, "down to 0.8 x 200, no further");
        assert_eq!(a.loads(), [(ConnectionId(1), 160), (ConnectionId(2), 41)]);
        assert!(a.rebalance(0.8).is_empty(), "balanced stays balanced");
        for m in &moves {
            assert_eq!(a.connection_of(&m.topic), Some(m.to));
        }
    }

    #[test]
    fn releasing_the_last_topic_reports_an_idle_connection() {
        let mut a = Assignment::new(Some(2), None);
        a.assign("A").unwrap();
        a.assign("B").unwrap();
        assert_eq!(a.release("A"), Some((ConnectionId(1), false)));
        assert_eq!(a.release("B"), Some((ConnectionId(1), true)));
        assert_eq!(a.release("B"), None);
        assert!(a.close_idle(ConnectionId(1)));
        assert_eq!(a.connection_count(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(u8),
        Release(u8),
        Lose(u8),
        Rebalance,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Assign),
            2 => any::<u8>().prop_map(Op::Release),
            1 => any::<u8>().prop_map(Op::Lose),
            1 => Just(Op::Rebalance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Under any sequence of operations: no connection over the cap,
        /// every wanted topic carried exactly once, and a connection is only
        /// opened when every open one is full.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..200), cap in 1usize..8) {
            let mut a = Assignment::new(Some(cap), None);
            let mut wanted = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Assign(t) => {
                        let full_before = a.loads().iter().all(|(_, n)| *n >= cap);
                        let placement = a.assign(&format!("T{t}")).unwrap();
                        if matches!(placement, Placement::Open(_)) {
                            prop_assert!(full_before);
                        }
                        wanted.insert(t);
                    }
                    Op::Release(t) => {
                        a.release(&format!("T{t}"));
                        wanted.remove(&t);
                    }
                    Op::Lose(c) => {
                        let ids: Vec<_> = a.loads().into_iter().map(|(id, _)| id).collect();
                        if !ids.is_empty() {
                            let placed = a.remove_connection(ids[c as usize % ids.len()]);
                            prop_assert!(placed.is_ok());
                        }
                    }
                    Op::Rebalance => {
                        a.rebalance(0.8);
                    }
                }
                prop_assert!(a.loads().iter().all(|(_, n)| *n <= cap));
                let index: Vec<_> = a.by_load.iter().map(|(n, id)| (*id, *n)).collect();
                let mut loads = a.loads();
                loads.sort_by_key(|(id, n)| (*n, *id));
                prop_assert_eq!(index, loads, "the load index matches the connections");
                prop_assert_eq!(a.topic_count(), wanted.len());
                for t in &wanted {
                    let id = a.connection_of(&format!("T{t}"));
                    prop_assert!(id.is_some());
                    let carried = a.topics_of(id.unwrap()).any(|x| x.as_ref() == format!("T{t}"));
                    prop_assert!(carried);
                }
            }
        }
    }
}
