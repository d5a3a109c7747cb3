//! TCP lane preambles and their assembly into connections, without I/O.
//!
//! Each lane starts, inside TLS, with a 22-byte preamble: `"DWCL"`, a
//! 16-byte connection nonce, the lane index and the lane count. The acceptor
//! keeps lanes by nonce until every index of a group has arrived, all with
//! the same count and peer identity; a lane that contradicts its group
//! discards the group. Groups are bounded in number and in age.
//!
//! [`spawn_lanes`] then starts a connection over established lanes, TCP or
//! in-memory alike: the driver task, routing frames with [`LaneRouter`], and a
//! reader and a writer per lane. It and the writer are the only parts of this
//! module that do I/O (the rest is what the fuzz targets exercise).

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::net::connection::Connection;
use crate::net::driver::{self, Shared, WRITE_BATCH};
use crate::net::reader::{read_lane, LaneRole};
use crate::net::transport::{LaneTx, StatsFn, Transport};
use crate::{Connection as Core, Transmit};

/// The preamble's first four bytes.
pub(crate) const PREAMBLE_MAGIC: &[u8; 4] = b"DWCL";
/// Length of a lane preamble.
pub(crate) const PREAMBLE_LEN: usize = 22;
/// Most lanes in one connection.
pub(crate) const MAX_LANES: usize = 64;
/// Lane groups waiting for their other lanes, at most.
pub(crate) const MAX_PENDING_GROUPS: usize = 256;

/// A lane's preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Preamble {
    /// Identifies the connection the lane belongs to.
    pub(crate) nonce: [u8; 16],
    /// This lane's position, below `count`.
    pub(crate) index: usize,
    /// Lanes in the connection, 1 to [`MAX_LANES`].
    pub(crate) count: usize,
}

/// Why a lane was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LaneError {
    /// The preamble does not start with `"DWCL"` or is short.
    #[error("not a DWCP TCP lane (bad preamble)")]
    BadMagic,
    /// Count zero or above [`MAX_LANES`], or index not below count.
    #[error("invalid lane {index} of {count}")]
    BadIndex {
        /// Index given.
        index: usize,
        /// Count given.
        count: usize,
    },
    /// Too many groups are waiting for lanes.
    #[error("too many half-open lane groups")]
    TooManyGroups,
    /// The lane's count, identity or index contradicts its group (which is dropped).
    #[error("lane does not match its group (count, identity or index)")]
    Mismatch,
}

impl Preamble {
    /// Parses a preamble.
    pub(crate) fn parse(pre: &[u8]) -> Result<Preamble, LaneError> {
        if pre.len() != PREAMBLE_LEN || &pre[..4] != PREAMBLE_MAGIC {
            return Err(LaneError::BadMagic);
        }
        let index = usize::from(pre[20]);
        let count = usize::from(pre[21]);
        if count == 0 || count > MAX_LANES || index >= count {
            return Err(LaneError::BadIndex { index, count });
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&pre[4..20]);
        Ok(Preamble {
            nonce,
            index,
            count,
        })
    }

    /// Encodes a preamble (`index < count <= MAX_LANES`, checked by the caller).
    pub(crate) fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut pre = [0u8; PREAMBLE_LEN];
        pre[..4].copy_from_slice(PREAMBLE_MAGIC);
        pre[4..20].copy_from_slice(&self.nonce);
        pre[20] = self.index as u8;
        pre[21] = self.count as u8;
        pre
    }
}

/// Lanes of one connection still waiting for the others.
#[derive(Debug)]
pub(crate) struct Group<T> {
    /// By index.
    pub(crate) lanes: Vec<Option<T>>,
    /// The peer identity of the first lane.
    pub(crate) identity: Option<String>,
    started: Instant,
}

/// A complete group: its lanes in index order and the group's identity.
pub(crate) type CompleteGroup<T> = (Vec<T>, Option<String>);

/// Pending lane groups, keyed by nonce.
#[derive(Debug)]
pub(crate) struct LaneGroups<T> {
    groups: HashMap<[u8; 16], Group<T>>,
    max_age: Duration,
}

impl<T> LaneGroups<T> {
    /// Groups older than `max_age` are dropped.
    pub(crate) fn new(max_age: Duration) -> Self {
        LaneGroups {
            groups: HashMap::new(),
            max_age,
        }
    }

    /// Groups waiting now.
    pub(crate) fn pending(&self) -> usize {
        self.groups.len()
    }

    /// Adds a lane. Returns its group when complete (every lane present, in
    /// index order, with the group's identity).
    pub(crate) fn arrive(
        &mut self,
        now: Instant,
        pre: Preamble,
        identity: Option<String>,
        lane: T,
    ) -> Result<Option<CompleteGroup<T>>, LaneError> {
        let max_age = self.max_age;
        self.groups
            .retain(|_, g| now.saturating_duration_since(g.started) < max_age);
        if !self.groups.contains_key(&pre.nonce) && self.groups.len() >= MAX_PENDING_GROUPS {
            return Err(LaneError::TooManyGroups);
        }
        let g = self.groups.entry(pre.nonce).or_insert_with(|| Group {
            lanes: (0..pre.count).map(|_| None).collect(),
            identity: identity.clone(),
            started: now,
        });
        if g.lanes.len() != pre.count
            || g.identity != identity
            || g.lanes.get(pre.index).is_none_or(Option::is_some)
        {
            self.groups.remove(&pre.nonce);
            return Err(LaneError::Mismatch);
        }
        g.lanes[pre.index] = Some(lane);
        if !g.lanes.iter().all(Option::is_some) {
            return Ok(None);
        }
        let Some(g) = self.groups.remove(&pre.nonce) else {
            return Ok(None);
        };
        Ok(Some((g.lanes.into_iter().flatten().collect(), g.identity)))
    }
}

/// Routes frames onto N ordered byte lanes (TCP or in-memory): connection
/// frames and interactive streams on lane 0, bulk stream `id` on lane
/// `1 + id % (N - 1)`, so small messages never queue behind bulk frames in a
/// lane (with one lane, everything on it).
#[derive(Debug)]
pub(crate) struct LaneRouter {
    lanes: Vec<LaneTx>,
}

impl LaneRouter {
    pub(crate) fn new(lanes: Vec<LaneTx>) -> LaneRouter {
        LaneRouter { lanes }
    }
}

impl Transport for LaneRouter {
    fn route(&mut self, t: &Transmit, _shared: &Arc<Shared>) -> Option<(u64, LaneTx)> {
        let stream = t.stream;
        let interactive = stream != 0 && t.interactive;
        let n = self.lanes.len();
        if n == 0 {
            return None;
        }
        let i = if stream == 0 || interactive || n == 1 {
            0
        } else {
            1 + stream as usize % (n - 1)
        };
        self.lanes.get(i).cloned().map(|l| (i as u64, l))
    }

    fn close(&mut self) {
        self.lanes.clear();
    }
}

/// Starts a connection over already-established byte lanes (TCP+TLS lanes or
/// in-memory pipes). Lane 0 carries connection frames.
pub(crate) fn spawn_lanes<R, W>(
    core: Core,
    lanes: Vec<(R, W)>,
    stats: StatsFn,
    peer_identity: Option<String>,
    remote_addr: Option<std::net::SocketAddr>,
    link_rate: Option<f64>,
) -> Connection
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut txs = Vec::with_capacity(lanes.len());
    let mut rxs = Vec::with_capacity(lanes.len());
    for _ in 0..lanes.len() {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        txs.push(tx);
        rxs.push(rx);
    }
    let shared = Shared::new(
        core,
        Box::new(LaneRouter::new(txs)),
        stats,
        peer_identity,
        remote_addr,
        link_rate,
    );
    for (i, ((r, w), rx)) in lanes.into_iter().zip(rxs).enumerate() {
        let role = if i == 0 {
            LaneRole::Control
        } else {
            LaneRole::Lane
        };
        tokio::spawn(read_lane(r, shared.clone(), role));
        tokio::spawn(write_lane(w, rx, shared.clone()));
    }
    tokio::spawn(driver::drive(shared.clone()));
    Connection::new(Arc::clone(&shared))
}

/// Frames queued per TCP or in-memory lane before the driver waits for the
/// lane writer. Several streams share a lane, so the queue is kept short (with
/// `TCP_NOTSENT_LOWAT` below it) to let the scheduler, not a queue, decide the
/// order: a 1 KiB message waits behind at most this many frames of its lane.
pub(crate) const LANE_QUEUE: usize = 4;
/// Writes frames to a byte lane with vectored writes, then shuts it down.
pub(crate) async fn write_lane<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Transmit>,
    shared: Arc<Shared>,
) {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(WRITE_BATCH * 2);
    while let Some(t) = rx.recv().await {
        push(&mut batch, t);
        while batch.len() < WRITE_BATCH * 2 {
            match rx.try_recv() {
                Ok(t) => push(&mut batch, t),
                Err(_) => break,
            }
        }
        if let Err(e) = write_all_vectored(&mut w, &mut batch).await {
            shared.transport_failed(&format!("lane write failed: {e}"));
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

fn push(batch: &mut VecDeque<Bytes>, t: Transmit) {
    batch.push_back(t.header);
    if !t.payload.is_empty() {
        batch.push_back(t.payload);
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    batch: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !batch.is_empty() {
        let n = {
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(nonce: u8, index: usize, count: usize) -> Preamble {
        Preamble {
            nonce: [nonce; 16],
            index,
            count,
        }
    }

    #[test]
    fn preambles_round_trip_and_bad_ones_are_refused() {
        let p = pre(7, 2, 3);
        assert_eq!(Preamble::parse(&p.encode()), Ok(p));
        let mut b = p.encode();
        b[0] = b'X';
        assert_eq!(Preamble::parse(&b), Err(LaneError::BadMagic));
        assert_eq!(Preamble::parse(&b[..21]), Err(LaneError::BadMagic));
        for (i, c) in [(0, 0), (3, 3), (0, 65)] {
            let mut b = p.encode();
            (b[20], b[21]) = (i, c);
            assert!(matches!(
                Preamble::parse(&b),
                Err(LaneError::BadIndex { .. })
            ));
        }
    }

    #[test]
    fn a_group_completes_in_any_order_and_contradictions_drop_it() {
        let t = Instant::now();
        let mut g = LaneGroups::new(Duration::from_secs(10));
        let id = || Some("peer".to_string());
        assert_eq!(g.arrive(t, pre(1, 1, 2), id(), "b"), Ok(None));
        assert_eq!(
            g.arrive(t, pre(1, 0, 2), id(), "a"),
            Ok(Some((vec!["a", "b"], id())))
        );
        assert_eq!(g.pending(), 0);
        // Same index twice, another count, another identity.
        for second in [
            (pre(2, 0, 2), id()),
            (pre(2, 1, 3), id()),
            (pre(2, 1, 2), Some("other".into())),
        ] {
            assert_eq!(g.arrive(t, pre(2, 0, 2), id(), "x"), Ok(None));
            assert_eq!(
                g.arrive(t, second.0, second.1, "y"),
                Err(LaneError::Mismatch)
            );
            assert_eq!(g.pending(), 0);
        }
    }

    #[test]
    fn pending_groups_are_bounded_and_expire() {
        let t = Instant::now();
        let mut g = LaneGroups::new(Duration::from_secs(10));
        for n in 0..MAX_PENDING_GROUPS {
            let mut p = pre(0, 0, 2);
            p.nonce[..8].copy_from_slice(&(n as u64).to_be_bytes());
            assert_eq!(g.arrive(t, p, None, ()), Ok(None));
        }
        assert_eq!(
            g.arrive(t, pre(9, 0, 2), None, ()),
            Err(LaneError::TooManyGroups)
        );
        let later = t + Duration::from_secs(11);
        assert_eq!(g.arrive(later, pre(9, 0, 2), None, ()), Ok(None));
        assert_eq!(g.pending(), 1);
    }
}
