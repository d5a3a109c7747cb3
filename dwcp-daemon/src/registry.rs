//! The table of tunnelled connections in progress (for `/api/v1/dwcp/streams`
//! and for draining).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

/// Which side opened the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A local application connected to one of our tunnels.
    Outbound,
    /// A peer reached one of our services.
    Inbound,
}

/// One tunnelled connection.
#[derive(Debug)]
pub struct Entry {
    /// Registry id (not the DWCP stream id, which is per connection).
    pub id: u64,
    /// DWCP stream id on its connection.
    pub stream_id: u64,
    /// Peer name.
    pub peer: String,
    /// Tunnel (outbound) or service (inbound) name.
    pub name: String,
    /// Who opened it.
    pub direction: Direction,
    /// Traffic class name.
    pub class: String,
    /// When it started.
    pub started: Instant,
    /// Application bytes sent to the peer.
    pub sent: AtomicU64,
    /// Application bytes received from the peer.
    pub received: AtomicU64,
}

/// The registry. Entries leave it when their [`Guard`] drops.
#[derive(Debug)]
pub struct Registry {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<Entry>>>,
    count: watch::Sender<usize>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next: AtomicU64::new(1),
            map: Mutex::default(),
            count: watch::channel(0).0,
        }
    }
}

/// Keeps an entry in the registry while alive.
#[derive(Debug)]
pub struct Guard {
    registry: Arc<Registry>,
    /// The entry.
    pub entry: Arc<Entry>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry.
    pub fn insert(
        self: &Arc<Self>,
        stream_id: u64,
        peer: &str,
        name: &str,
        direction: Direction,
        class: &str,
    ) -> Guard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            stream_id,
            peer: peer.to_string(),
            name: name.to_string(),
            direction,
            class: class.to_string(),
            started: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        });
        let n = {
            let mut m = self.lock();
            m.insert(id, entry.clone());
            m.len()
        };
        self.count.send_replace(n);
        Guard {
            registry: self.clone(),
            entry,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries `offset..offset + limit` in id order, and the total.
    pub fn page(&self, offset: usize, limit: usize) -> (Vec<Arc<Entry>>, usize) {
        let m = self.lock();
        (
            m.values().skip(offset).take(limit).cloned().collect(),
            m.len(),
        )
    }

    /// Number of entries per peer.
    pub fn per_peer(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.lock().values() {
            *out.entry(e.peer.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Waits until the registry is empty.
    pub async fn wait_empty(&self) {
        let mut rx = self.count.subscribe();
        // Only fails if the sender is gone, which `self` owns.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let n = {
            let mut m = self.registry.lock();
            m.remove(&self.entry.id);
            m.len()
        };
        self.registry.count.send_replace(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_leave_with_their_guard() {
        let r = Arc::new(Registry::default());
        let a = r.insert(1, "p", "t", Direction::Outbound, "bulk");
        let b = r.insert(3, "p", "t", Direction::Inbound, "bulk");
        assert_eq!(r.len(), 2);
        let (page, total) = r.page(1, 10);
        assert_eq!((page.len(), total), (1, 2));
        assert_eq!(page[0].stream_id, 3);
        drop(a);
        assert_eq!(r.per_peer().get("p"), Some(&1));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_empty().await })
        };
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert!(r.is_empty());
    }
}
