//! Change notification: who is told when a partition gets new rows.
//!
//! Listeners are kept per partition key, so a user table's writer tells
//! only the live queries of that user's partition: another user's listener
//! is never even looked at. Publishing costs one relaxed load while a table
//! has no listeners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use parking_lot::RwLock;
use tenantfusion_core::ChangeListener;
use tokio::sync::RwLock as AsyncRwLock;

use crate::matching::rows_at;
use crate::store::{PartitionKey, PartitionStore};

/// Which way rows told to listeners went.
#[derive(Debug, Clone, Copy)]
enum Published {
    Added,
    Removed,
}

type Listeners = HashMap<PartitionKey, Vec<(u64, Arc<dyn ChangeListener>)>>;

/// The listeners of one table.
#[derive(Debug, Default)]
pub struct ChangeListeners {
    /// Writers hold it shared while they append and publish; a new listener
    /// holds it exclusively while it reads its snapshot and registers.
    gate: AsyncRwLock<()>,
    listeners: RwLock<Listeners>,
    count: AtomicUsize,
    next_id: AtomicU64,
}

/// A registration; dropping it stops the events.
#[derive(Debug)]
pub struct Watch {
    listeners: Weak<ChangeListeners>,
    id: u64,
    keys: Vec<PartitionKey>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(listeners) = self.listeners.upgrade() {
            listeners.remove(self.id, &self.keys);
        }
    }
}

impl ChangeListeners {
    /// Appends `batches` to a partition and tells its listeners, with new
    /// listeners held off until both are done.
    pub(crate) async fn append(
        &self,
        store: &dyn PartitionStore,
        partition: &PartitionKey,
        batches: Vec<RecordBatch>,
    ) -> Result<u64> {
        let _writing = self.gate.read().await;
        if self.count.load(Ordering::SeqCst) == 0 {
            // No listener can register while the gate is held.
            return store.append(partition, batches).await;
        }
        let added = store.append(partition, batches.clone()).await?;
        self.publish(partition, &batches, Published::Added);
        Ok(added)
    }

    /// [`PartitionStore::replace`] (UPDATE, DELETE), telling the partition's
    /// listeners which rows went and which came; returns the rows changed.
    pub(crate) async fn replace(
        &self,
        store: &dyn PartitionStore,
        partition: &PartitionKey,
        old: RecordBatch,
        new: Option<RecordBatch>,
    ) -> Result<u64> {
        let _writing = self.gate.read().await;
        if self.count.load(Ordering::SeqCst) == 0 {
            return Ok(store.replace(partition, old, new).await?.len() as u64);
        }
        let found = store.replace(partition, old.clone(), new.clone()).await?;
        if !found.is_empty() {
            self.publish(partition, &[rows_at(&old, &found)?], Published::Removed);
            if let Some(new) = new {
                self.publish(partition, &[rows_at(&new, &found)?], Published::Added);
            }
        }
        Ok(found.len() as u64)
    }

    /// Registers `listener` for `keys` after handing it the rows of the
    /// partitions `read` in `store` (`None`: every partition), with writers
    /// held off in between. `PartitionKey::Shared` on a table stored per
    /// topic means every topic.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        keys: Vec<PartitionKey>,
        listener: Arc<dyn ChangeListener>,
        store: &dyn PartitionStore,
        read: Option<Vec<PartitionKey>>,
    ) -> Result<Watch> {
        let _writers_wait = self.gate.write().await;
        let mut snapshot = Vec::new();
        for key in read.unwrap_or_else(|| store.keys()) {
            snapshot.extend(store.read(&key).await?);
        }
        listener.on_snapshot(snapshot);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut listeners = self.listeners.write();
        for key in &keys {
            listeners
                .entry(key.clone())
                .or_default()
                .push((id, Arc::clone(&listener)));
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(Watch {
            listeners: Arc::downgrade(self),
            id,
            keys,
        })
    }

    /// Tells the listeners of `partition` (and, for a topic, those of every
    /// topic) about `rows`.
    fn publish(&self, partition: &PartitionKey, rows: &[RecordBatch], what: Published) {
        if self.count.load(Ordering::SeqCst) == 0 || rows.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        {
            let listeners = self.listeners.read();
            let all_topics = matches!(partition, PartitionKey::Topic(_))
                .then(|| listeners.get(&PartitionKey::Shared))
                .flatten();
            for (id, listener) in listeners
                .get(partition)
                .into_iter()
                .chain(all_topics)
                .flatten()
            {
                let listening = match what {
                    Published::Added => listener.on_rows(rows),
                    Published::Removed => listener.on_removed(rows),
                };
                if !listening {
                    gone.push(*id);
                }
            }
        }
        if !gone.is_empty() {
            let mut listeners = self.listeners.write();
            for list in listeners.values_mut() {
                list.retain(|(id, _)| !gone.contains(id));
            }
            listeners.retain(|_, list| !list.is_empty());
        }
    }

    /// Live listeners.
    pub fn listener_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn remove(&self, id: u64, keys: &[PartitionKey]) {
        let mut listeners = self.listeners.write();
        for key in keys {
            if let Some(list) = listeners.get_mut(key) {
                list.retain(|(other, _)| *other != id);
                if list.is_empty() {
                    listeners.remove(key);
                }
            }
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}
