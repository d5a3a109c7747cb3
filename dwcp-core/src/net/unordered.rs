//! Reading a QUIC stream out of order and putting it back in order here.
//!
//! quinn's ordered read keeps what arrives behind a lost packet in its own
//! assembler, and closes the connection when one stream's buffer holds more
//! than 1,024 pieces ("too many gaps in stream buffer", an internal error).
//! On a long lossy path a stream holds thousands of packets behind its
//! oldest hole, and a sender that overruns the bottleneck queue (quinn's BBR
//! lost a third of its packets on a 100 Mbit/s, 200 ms, 5 % loss path)
//! leaves a gap every few packets: the connection died within seconds, every
//! stream with it. So DWCP reads QUIC streams unordered and reassembles them
//! in [`Reassembly`], which has no limit on pieces, only on bytes.
//!
//! The bytes held out of order are bounded for the whole connection by a
//! shared [`HoleBudget`]. quinn extends a stream's flow-control window as
//! chunks are read, in order or not, so its window no longer bounds what
//! waits behind a hole; the budget does (the configured connection window: a
//! sender's data in flight is within its own send window, which DWCP keeps at
//! most that large). A peer that goes beyond it is refused with an error,
//! never buffered without bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::net::copies::Inbox;

/// Bytes held out of order by every stream of one connection, and their limit.
#[derive(Debug)]
pub(crate) struct HoleBudget {
    held: AtomicU64,
    limit: u64,
}

impl HoleBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(HoleBudget {
            held: AtomicU64::new(0),
            limit,
        })
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// One stream's data put back in order: chunks that arrived ahead of a hole
/// wait in `ahead`, charged to the connection's [`HoleBudget`].
#[derive(Debug)]
pub(crate) struct Reassembly {
    /// Offset of the next byte to deliver.
    next: u64,
    /// Chunks beyond `next`, by offset (never overlapping), each charged to
    /// the budget.
    ahead: BTreeMap<u64, Bytes>,
    budget: Arc<HoleBudget>,
}

impl Reassembly {
    /// An empty reassembly starting at stream offset `start`.
    pub(crate) fn new(start: u64, budget: Arc<HoleBudget>) -> Self {
        Reassembly {
            next: start,
            ahead: BTreeMap::new(),
            budget,
        }
    }

    /// Takes a chunk at `offset`. Returns the bytes now deliverable in
    /// order, if the chunk was the next one (more may follow from
    /// [`Reassembly::pop`]).
    ///
    /// # Errors
    /// Holding the chunk would take the connection over its budget.
    pub(crate) fn insert(&mut self, offset: u64, mut data: Bytes) -> io::Result<Option<Bytes>> {
        // What was delivered already (quinn does not repeat data; this keeps
        // the order whatever comes).
        let mut at = offset;
        if at < self.next {
            let skip = (self.next - at).min(data.len() as u64) as usize;
            data = data.slice(skip..);
            at = self.next;
        }
        if data.is_empty() {
            return Ok(None);
        }
        if at == self.next {
            self.next += data.len() as u64;
            return Ok(Some(data));
        }
        // Held ahead, in pieces that do not overlap what is held already.
        while !data.is_empty() {
            if let Some((&o, held)) = self.ahead.range(..=at).next_back() {
                let end = o + held.len() as u64;
                if end > at {
                    let skip = (end - at).min(data.len() as u64) as usize;
                    data = data.slice(skip..);
                    at += skip as u64;
                    continue;
                }
            }
            let stop = match self.ahead.range(at + 1..).next() {
                Some((&o, _)) if o < at + data.len() as u64 => o,
                _ => at + data.len() as u64,
            };
            let piece = data.split_to((stop - at) as usize);
            self.hold(at, piece)?;
            at = stop;
        }
        Ok(None)
    }

    /// Takes a copy of bytes at `offset` (`copies.rs`): only what continues
    /// the bytes delivered is used. A copy beyond a hole is dropped, never
    /// held, so copies take none of the budget and cannot leave a hole at
    /// the end of the stream.
    pub(crate) fn insert_copy(&mut self, offset: u64, data: Bytes) -> Option<Bytes> {
        if offset > self.next {
            return None;
        }
        // At or before `next`, `insert` delivers at once and holds nothing.
        self.insert(offset, data).ok().flatten()
    }

    /// Keeps `data` at `at`, charged to the budget.
    fn hold(&mut self, at: u64, data: Bytes) -> io::Result<()> {
        let n = data.len() as u64;
        let before = self.budget.held.fetch_add(n, Ordering::Relaxed);
        if before + n > self.budget.limit {
            self.budget.held.fetch_sub(n, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer sent more than {} bytes beyond missing data on this connection",
                    self.budget.limit
                ),
            ));
        }
        self.ahead.insert(at, data);
        Ok(())
    }

    /// Stops holding the chunk at `at`.
    fn release(&mut self, at: u64) -> Option<Bytes> {
        let data = self.ahead.remove(&at)?;
        self.budget
            .held
            .fetch_sub(data.len() as u64, Ordering::Relaxed);
        Some(data)
    }

    /// The next chunk in order, if it has arrived.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        loop {
            let (&at, _) = self.ahead.first_key_value()?;
            if at > self.next {
                return None;
            }
            let data = self.release(at)?;
            // A chunk that began before `next` (delivered in the meantime by
            // an in-order insert) gives only its tail.
            let skip = (self.next - at).min(data.len() as u64) as usize;
            let data = data.slice(skip..);
            if !data.is_empty() {
                self.next += data.len() as u64;
                return Some(data);
            }
        }
    }

    /// Whether chunks wait behind a hole.
    pub(crate) fn has_holes(&self) -> bool {
        !self.ahead.is_empty()
    }
}

impl Drop for Reassembly {
    fn drop(&mut self) {
        let held: u64 = self.ahead.values().map(|d| d.len() as u64).sum();
        self.budget.held.fetch_sub(held, Ordering::Relaxed);
    }
}

/// A QUIC receive stream read out of order and delivered in order, as
/// [`AsyncRead`] for the lane reader.
pub(crate) struct UnorderedRecv {
    recv: quinn::RecvStream,
    order: Reassembly,
    /// In-order bytes not yet handed to the reader.
    front: Bytes,
    /// quinn reported the end of the stream.
    finished: bool,
    /// Copies of the stream's bytes sent as datagrams (copies.rs).
    copies: Inbox,
}

impl std::fmt::Debug for UnorderedRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnorderedRecv")
            .field("order", &self.order)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl UnorderedRecv {
    /// Reads `recv` from stream offset `start` (what was read in order
    /// before), and the copies of its bytes that arrive in `copies`.
    pub(crate) fn new(
        recv: quinn::RecvStream,
        start: u64,
        budget: Arc<HoleBudget>,
        copies: Inbox,
    ) -> Self {
        UnorderedRecv {
            recv,
            order: Reassembly::new(start, budget),
            front: Bytes::new(),
            finished: false,
            copies,
        }
    }
}

impl AsyncRead for UnorderedRecv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.front.is_empty() {
                this.front = this.order.pop().unwrap_or_default();
            }
            if !this.front.is_empty() {
                let n = this.front.len().min(buf.remaining());
                buf.put_slice(&this.front.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                if this.order.has_holes() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the QUIC stream ended with data missing",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            // A copy that arrived before the stream's own bytes.
            if let Poll::Ready((offset, data)) = this.copies.poll_recv(cx) {
                if let Some(data) = this.order.insert_copy(offset, data) {
                    this.copies.used();
                    this.front = data;
                }
                continue;
            }
            // quinn's read is cancel-safe: polled once and dropped, it
            // leaves the waker registered when nothing has arrived.
            let read = this.recv.read_chunk(usize::MAX, false);
            match std::pin::pin!(read).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(chunk))) => {
                    // What comes next is ready at once; what waited behind
                    // a hole follows from `pop`, in offset order.
                    if let Some(data) = this.order.insert(chunk.offset, chunk.bytes)? {
                        this.front = data;
                    }
                }
                Poll::Ready(Ok(None)) => this.finished = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::from(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of a 64 KiB stream delivered in a scrambled order come out
    /// whole and in order, and nothing stays charged to the budget.
    #[test]
    fn chunks_in_any_order_come_out_in_order() {
        let data: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
        let data = Bytes::from(data);
        let budget = HoleBudget::new(1 << 20);
        for seed in 1..20u64 {
            let mut rng = crate::sim::Rng::new(seed);
            // Chunks of 1..3000 bytes, some overlapping their neighbour.
            let mut chunks = Vec::new();
            let mut off = 0usize;
            while off < data.len() {
                let len = (rng.below(3000) as usize + 1).min(data.len() - off);
                let start = off.saturating_sub(rng.below(3) as usize * 100);
                chunks.push((start as u64, data.slice(start..off + len)));
                off += len;
            }
            for i in (1..chunks.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                chunks.swap(i, j);
            }
            let mut r = Reassembly::new(0, budget.clone());
            let mut out = Vec::new();
            for (o, c) in chunks {
                if let Some(b) = r.insert(o, c).expect("within budget") {
                    out.extend_from_slice(&b);
                }
                while let Some(b) = r.pop() {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out.len(), data.len(), "seed {seed}");
            assert!(out == data[..], "seed {seed}");
            assert!(!r.has_holes());
            assert_eq!(budget.held(), 0);
        }
    }

    /// A copy is used only where it continues the delivered bytes: one
    /// beyond a hole is dropped and takes none of the budget; one that
    /// overlaps what was delivered gives only the new bytes.
    #[test]
    fn copies_continue_the_delivered_bytes_or_are_dropped() {
        let budget = HoleBudget::new(10_000);
        let mut r = Reassembly::new(0, budget.clone());
        assert!(r.insert_copy(100, Bytes::from(vec![1u8; 50])).is_none());
        assert_eq!(budget.held(), 0);
        assert!(!r.has_holes());
        let head = r.insert(0, Bytes::from(vec![2u8; 80])).expect("in order");
        assert_eq!(head.map(|h| h.len()), Some(80));
        let tail = r.insert_copy(40, Bytes::from(vec![3u8; 60]));
        assert_eq!(
            tail.map(|t| t.len()),
            Some(20),
            "only bytes 80..100 are new"
        );
        // The stream's own bytes, later, are cut to what is still new.
        let own = r.insert(0, Bytes::from(vec![2u8; 120])).expect("in order");
        assert_eq!(own.map(|o| o.len()), Some(20));
    }

    /// A peer that keeps a hole open and sends on beyond it is refused at
    /// the connection's budget, shared by its streams; what a stream held is
    /// released when it goes.
    #[test]
    fn data_beyond_holes_is_bounded_per_connection() {
        let budget = HoleBudget::new(10_000);
        let mut a = Reassembly::new(0, budget.clone());
        let mut b = Reassembly::new(0, budget.clone());
        let chunk = Bytes::from(vec![7u8; 4_000]);
        assert!(a.insert(100, chunk.clone()).expect("fits").is_none());
        assert!(b.insert(100, chunk.clone()).expect("fits").is_none());
        assert_eq!(budget.held(), 8_000);
        let err = a.insert(5_000, chunk.clone()).expect_err("over the budget");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(budget.held(), 8_000);
        drop(b);
        assert_eq!(budget.held(), 4_000);
        // Filling the hole releases what waited behind it.
        let head = a.insert(0, Bytes::from(vec![1u8; 100])).expect("in order");
        assert_eq!(head.map(|h| h.len()), Some(100));
        assert_eq!(a.pop().map(|c| c.len()), Some(4_000));
        assert_eq!(budget.held(), 0);
    }
}
