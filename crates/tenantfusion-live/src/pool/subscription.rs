//! What a subscriber holds: its queue of one topic's rows at a time, and
//! the handle that unsubscribes it when dropped.

use std::sync::{Arc, Weak};

use arrow::record_batch::RecordBatch;

use super::PoolInner;
use crate::delivery::{Delivery, DeliveryQueue, LiveEvent, QueueStats};
use crate::error::Result;
use crate::registry::SubscriberId;
use crate::source::Topic;

/// What the pool queues for a subscriber: one topic's rows.
pub(crate) type Queue = DeliveryQueue<(Topic, RecordBatch)>;

fn live_event(delivery: Delivery<(Topic, RecordBatch)>) -> LiveEvent {
    match delivery {
        Delivery::Item((topic, batch)) => LiveEvent::Rows { topic, batch },
        Delivery::Lagged(missed) => LiveEvent::Lagged { missed },
    }
}

/// A live subscription to some topics. Dropping it unsubscribes: topics
/// nobody else wants are released upstream.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tenantfusion_live::*;
/// let pool = LivePool::new(PoolConfig::default()).unwrap();
/// pool.add_source(Arc::new(GeneratorSource::new(GeneratorConfig::default()))).unwrap();
/// let mut sub = pool
///     .subscribe(&Request { topics: &["AAPL"], ..Request::default() }, SubscribeOptions::default())
///     .unwrap();
/// let Some(LiveEvent::Rows { topic, batch }) = sub.recv().await.unwrap() else { panic!() };
/// assert_eq!(&*topic, "AAPL");
/// assert!(batch.num_rows() >= 1);
/// # });
/// ```
#[derive(Debug)]
pub struct Subscription {
    id: SubscriberId,
    topics: Vec<Topic>,
    queue: Arc<Queue>,
    pool: Weak<PoolInner>,
    warning: Option<String>,
}

impl Subscription {
    pub(crate) fn new(
        id: SubscriberId,
        topics: Vec<Topic>,
        queue: Arc<Queue>,
        pool: Weak<PoolInner>,
    ) -> Self {
        Self {
            id,
            topics,
            queue,
            pool,
            warning: None,
        }
    }

    pub(crate) fn with_warning(mut self, warning: Option<String>) -> Self {
        self.warning = warning;
        self
    }

    /// Why the source chosen for this subscription's new topics does not
    /// meet every capability asked for, when the pool's validation is
    /// lenient and settled for the best partial match.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The next event; `Ok(None)` once the pool has stopped, and
    /// `SLOW_CONSUMER` if the subscription was disconnected for lagging.
    pub async fn recv(&mut self) -> Result<Option<LiveEvent>> {
        Ok(self.queue.recv().await?.map(live_event))
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<LiveEvent>> {
        Ok(self.queue.try_recv()?.map(live_event))
    }

    /// This subscriber's identity in the pool.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// Queue length and counters.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.unsubscribe(self.id);
        }
    }
}
