//! Who wants which topic, kept apart from the connections that carry them.

use std::collections::{BTreeMap, BTreeSet};

use crate::source::Topic;

/// One subscriber (a live query, a stream table's declared interest, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

/// Topic -> subscribers. The upstream must carry exactly the topics that have
/// at least one subscriber; the methods say when that set changes. Because
/// it does not know about connections, a lost connection loses nothing here:
/// the pool replays [`topics`](Self::topics) onto the connections it has.
///
/// ```
/// use tenantfusion_live::SubscriptionRegistry;
/// let mut registry = SubscriptionRegistry::default();
/// let (a, b) = (registry.new_subscriber(), registry.new_subscriber());
/// assert!(registry.subscribe(a, "AAPL"));   // first interest: subscribe upstream
/// assert!(!registry.subscribe(b, "AAPL"));  // shared: nothing to do upstream
/// assert!(!registry.unsubscribe(a, "AAPL"));
/// assert!(registry.unsubscribe(b, "AAPL")); // last one left: release upstream
/// ```
#[derive(Debug, Default)]
pub struct SubscriptionRegistry {
    topics: BTreeMap<Topic, BTreeSet<SubscriberId>>,
    next: u64,
}

impl SubscriptionRegistry {
    /// A new subscriber identity.
    pub fn new_subscriber(&mut self) -> SubscriberId {
        self.next += 1;
        SubscriberId(self.next)
    }

    /// Adds `subscriber` to `topic`; `true` if the topic had no subscriber
    /// before (the upstream must start carrying it).
    pub fn subscribe(&mut self, subscriber: SubscriberId, topic: &str) -> bool {
        match self.topics.get_mut(topic) {
            Some(subscribers) => {
                subscribers.insert(subscriber);
                false
            }
            None => {
                self.topics
                    .insert(Topic::from(topic), BTreeSet::from([subscriber]));
                true
            }
        }
    }

    /// Removes `subscriber` from `topic`; `true` if it was the last one (the
    /// upstream may release the topic).
    pub fn unsubscribe(&mut self, subscriber: SubscriberId, topic: &str) -> bool {
        let Some(subscribers) = self.topics.get_mut(topic) else {
            return false;
        };
        if !subscribers.remove(&subscriber) || !subscribers.is_empty() {
            return false;
        }
        self.topics.remove(topic);
        true
    }

    /// Removes `subscriber` from every topic; returns the topics left with
    /// no subscriber.
    pub fn remove_subscriber(&mut self, subscriber: SubscriberId) -> Vec<Topic> {
        let mut released = Vec::new();
        self.topics.retain(|topic, subscribers| {
            subscribers.remove(&subscriber);
            let keep = !subscribers.is_empty();
            if !keep {
                released.push(topic.clone());
            }
            keep
        });
        released
    }

    /// Every topic with at least one subscriber, in order.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.keys()
    }

    /// How many subscribers `topic` has.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, BTreeSet::len)
    }

    /// The subscribers of `topic`.
    pub fn subscribers(&self, topic: &str) -> impl Iterator<Item = SubscriberId> + '_ {
        self.topics.get(topic).into_iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_live_while_someone_wants_them() {
        let mut registry = SubscriptionRegistry::default();
        let a = registry.new_subscriber();
        let b = registry.new_subscriber();
        assert!(registry.subscribe(a, "X"));
        assert!(registry.subscribe(a, "Y"));
        assert!(!registry.subscribe(b, "Y"));
        assert!(!registry.subscribe(b, "Y"), "subscribing twice counts once");
        assert_eq!(registry.subscriber_count("Y"), 2);
        assert!(!registry.unsubscribe(b, "X"), "b never had X");
        assert_eq!(registry.remove_subscriber(a), vec![Topic::from("X")]);
        assert_eq!(registry.topics().collect::<Vec<_>>(), [&Topic::from("Y")]);
        assert_eq!(registry.subscribers("Y").collect::<Vec<_>>(), [b]);
        assert!(registry.unsubscribe(b, "Y"));
        assert_eq!(registry.topics().count(), 0);
    }
}
