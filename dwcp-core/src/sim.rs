//! A virtual-time link joining two [`Connection`]s, for deterministic tests,
//! benchmarks and demos.
//!
//! Each direction is a reliable, in-order byte pipe like a TCP connection:
//! bytes are cut into MTU-sized segments that leave at the link rate after a
//! bounded send buffer, arrive after the one-way delay plus seeded jitter, and
//! a lost segment arrives one round trip later (its retransmission). Delivery
//! is in order, so loss and reordering show up as head-of-line delay, as over
//! TCP. [`Pair::run_until`] jumps virtual time from event to event: a 10-second
//! WAN transfer runs in milliseconds of real time, with no sleeps.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{Config, Connection, Event, OpenParams, Side, StreamError, StreamId};

/// Properties of one direction of the simulated link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Link rate in bits per second; 0 means unlimited.
    pub bandwidth_bps: u64,
    /// One-way propagation delay.
    pub one_way_delay: Duration,
    /// Extra random delay per segment, uniform in `0..jitter` (reorders segments).
    pub jitter: Duration,
    /// Probability that a segment is lost (and retransmitted one RTT later).
    pub loss: f64,
    /// Segment size.
    pub mtu: usize,
    /// Sender-side buffer: bytes that may wait for the link before writes block.
    pub send_buffer: usize,
    /// Seed for jitter and loss.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            bandwidth_bps: 0,
            one_way_delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
            mtu: 1448,
            send_buffer: 64 * 1024,
            seed: 1,
        }
    }
}

/// A small deterministic random number generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Debug)]
struct Segment {
    arrival: Instant,
    data: Bytes,
}

/// One direction of the simulated link.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    rng: Rng,
    free_at: Instant,
    segments: VecDeque<Segment>,
    /// Bytes delivered so far.
    pub delivered: u64,
    /// Segments lost (and retransmitted).
    pub lost: u64,
}

impl Link {
    /// A link starting idle at `now`.
    pub fn new(cfg: LinkConfig, now: Instant) -> Self {
        Link {
            rng: Rng::new(cfg.seed),
            cfg,
            free_at: now,
            segments: VecDeque::new(),
            delivered: 0,
            lost: 0,
        }
    }

    /// Changes the link rate from now on (bits/s, 0 = unlimited).
    pub fn set_bandwidth(&mut self, bps: u64) {
        self.cfg.bandwidth_bps = bps;
    }

    fn serialization(&self, bytes: usize) -> Duration {
        if self.cfg.bandwidth_bps == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((bytes as u64 * 8 * 1_000_000_000) / self.cfg.bandwidth_bps)
    }

    fn backlog(&self, now: Instant) -> Duration {
        self.free_at.saturating_duration_since(now)
    }

    /// True if the send buffer has room.
    pub fn can_send(&self, now: Instant) -> bool {
        // An unlimited link never queues, so its buffer is never full.
        self.cfg.bandwidth_bps == 0 || self.backlog(now) < self.serialization(self.cfg.send_buffer)
    }

    /// When the send buffer will have room again, if it is full now.
    pub fn room_at(&self, now: Instant) -> Option<Instant> {
        if self.can_send(now) {
            None
        } else {
            Some(self.free_at - self.serialization(self.cfg.send_buffer) + Duration::from_nanos(1))
        }
    }

    /// Queues bytes for transmission.
    pub fn push(&mut self, now: Instant, data: Bytes) {
        let mut off = 0;
        while off < data.len() {
            let end = (off + self.cfg.mtu).min(data.len());
            let seg = data.slice(off..end);
            off = end;
            let depart = self.free_at.max(now) + self.serialization(seg.len());
            self.free_at = depart;
            let mut arrival = depart + self.cfg.one_way_delay;
            if !self.cfg.jitter.is_zero() {
                arrival += Duration::from_nanos(self.rng.below(self.cfg.jitter.as_nanos() as u64));
            }
            let mut tries = 0;
            while self.cfg.loss > 0.0 && tries < 16 && self.rng.next_f64() < self.cfg.loss {
                // Lost: the retransmission arrives one round trip later.
                arrival += self.cfg.one_way_delay * 2 + Duration::from_millis(1);
                self.lost += 1;
                tries += 1;
            }
            self.segments.push_back(Segment { arrival, data: seg });
        }
    }

    /// Appends every in-order byte that has arrived by `now` to `out`.
    pub fn deliver(&mut self, now: Instant, out: &mut BytesMut) -> usize {
        let mut n = 0;
        while self.segments.front().is_some_and(|s| s.arrival <= now) {
            if let Some(s) = self.segments.pop_front() {
                out.extend_from_slice(&s.data);
                n += s.data.len();
            }
        }
        self.delivered += n as u64;
        n
    }

    /// When the next in-order segment can be delivered.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.segments.front().map(|s| s.arrival)
    }

    /// Bytes queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.segments.iter().map(|s| s.data.len()).sum()
    }
}

/// One end of a [`Pair`]: a connection, its outgoing link and its receive buffer.
#[derive(Debug)]
pub struct End {
    /// The protocol state machine.
    pub conn: Connection,
    /// The link carrying this end's bytes to the other end.
    pub link: Link,
    inbuf: BytesMut,
    /// When false, this end does not transmit (a stalled or dead peer).
    pub transmit: bool,
}

/// Two connections joined by a simulated link, driven in virtual time.
#[derive(Debug)]
pub struct Pair {
    /// Virtual clock.
    pub now: Instant,
    /// When the pair was created.
    pub start: Instant,
    /// The dialing side.
    pub client: End,
    /// The accepting side.
    pub server: End,
}

impl Pair {
    /// A pair with the same link properties in both directions (the reverse
    /// direction uses `seed + 1`).
    ///
    /// # Panics
    /// If either configuration is invalid (this is a test utility).
    pub fn new(client: Config, server: Config, link: LinkConfig) -> Self {
        let mut back = link.clone();
        back.seed = link.seed.wrapping_add(1);
        Self::with_links(client, server, link, back)
    }

    /// A pair with distinct link properties per direction.
    ///
    /// # Panics
    /// If either configuration is invalid (this is a test utility).
    pub fn with_links(client: Config, server: Config, c2s: LinkConfig, s2c: LinkConfig) -> Self {
        let now = Instant::now();
        #[allow(clippy::expect_used)]
        let make = |cfg: Config, side| Connection::new(cfg, side, now).expect("valid config");
        Pair {
            now,
            start: now,
            client: End {
                conn: make(client, Side::Client),
                link: Link::new(c2s, now),
                inbuf: BytesMut::with_capacity(64 * 1024),
                transmit: true,
            },
            server: End {
                conn: make(server, Side::Server),
                link: Link::new(s2c, now),
                inbuf: BytesMut::with_capacity(64 * 1024),
                transmit: true,
            },
        }
    }

    /// Virtual time elapsed since creation.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Delivers arrived bytes and runs due timers on both ends.
    pub fn receive(&mut self) {
        let now = self.now;
        for (rx, tx) in [(0, 1), (1, 0)] {
            let (r, t) = self.ends(rx, tx);
            if t.link.deliver(now, &mut r.inbuf) > 0 {
                r.conn.handle_input(now, &mut r.inbuf);
            }
            if r.conn.poll_timeout().is_some_and(|t| t <= now) {
                r.conn.handle_timeout(now);
            }
            // The link reports what it delivered, as a transport would.
            let delivered = t.link.delivered;
            t.conn.on_transport_delivered(now, delivered, None);
        }
    }

    /// Moves frames from both connections onto their links while there is room.
    pub fn transmit(&mut self) {
        let now = self.now;
        for end in [&mut self.client, &mut self.server] {
            if !end.transmit {
                continue;
            }
            while end.link.can_send(now) {
                let Some(t) = end.conn.poll_transmit(now) else {
                    break;
                };
                end.link.push(now, t.header);
                if !t.payload.is_empty() {
                    end.link.push(now, t.payload);
                }
            }
        }
    }

    fn ends(&mut self, a: usize, _b: usize) -> (&mut End, &mut End) {
        if a == 0 {
            (&mut self.client, &mut self.server)
        } else {
            (&mut self.server, &mut self.client)
        }
    }

    /// The next time anything happens: an arrival, a timer, or send-buffer room.
    pub fn next_time(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for end in [&self.client, &self.server] {
            consider(end.link.next_arrival());
            consider(end.conn.poll_timeout());
            if end.transmit {
                consider(end.link.room_at(self.now));
            }
        }
        t
    }

    /// Runs one round at the current time: receive, let `app` act, transmit.
    pub fn step(&mut self, app: &mut impl FnMut(&mut Pair)) {
        self.receive();
        app(self);
        self.transmit();
    }

    /// Jumps virtual time to the next event. Returns false if nothing will
    /// ever happen again.
    pub fn advance(&mut self) -> bool {
        match self.next_time() {
            Some(t) => {
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    /// Steps until `done` returns true or `limit` of virtual time has passed.
    /// Returns whether `done` became true.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&mut Pair) -> bool) -> bool {
        self.drive(limit, |_| {}, done)
    }

    /// Steps with `app` acting on every round until `done` or `limit`.
    pub fn drive(
        &mut self,
        limit: Duration,
        mut app: impl FnMut(&mut Pair),
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            self.step(&mut app);
            if done(self) {
                return true;
            }
            if self.now >= deadline || !self.advance() {
                return false;
            }
        }
    }
}

/// Deterministic content for a stream: `len` bytes from `seed`.
#[derive(Debug, Clone)]
pub struct Source {
    rng: Rng,
    remaining: u64,
    hasher: DefaultHasher,
    pending: Option<Bytes>,
}

impl Source {
    /// A source of `len` bytes.
    pub fn new(seed: u64, len: u64) -> Self {
        Source {
            rng: Rng::new(seed),
            remaining: len,
            hasher: DefaultHasher::new(),
            pending: None,
        }
    }

    /// The next chunk of at most `max` bytes, or `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> Option<Bytes> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        if self.remaining == 0 {
            return None;
        }
        let n = (self.remaining as usize).min(max);
        let mut v = vec![0u8; n];
        self.rng.fill(&mut v);
        self.hasher.write(&v);
        self.remaining -= n as u64;
        Some(Bytes::from(v))
    }
}

impl Source {
    /// Hash of everything generated so far (the whole content once exhausted).
    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }
}

/// What a [`Traffic`] received on one stream.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Bytes read.
    pub len: u64,
    /// Hash of the bytes, in order.
    pub hash: u64,
    /// When FIN was read.
    pub finished_at: Option<Instant>,
    /// The error that ended the stream, if any.
    pub error: Option<StreamError>,
    hasher: DefaultHasher,
}

/// A scripted application for one end of a [`Pair`]: opens streams with
/// deterministic content, writes them as fast as flow control allows, reads
/// everything the peer sends and hashes it.
#[derive(Debug, Default)]
pub struct Traffic {
    to_open: VecDeque<(OpenParams, u64, u64)>,
    writing: HashMap<StreamId, Source>,
    want_write: VecDeque<StreamId>,
    /// Completed outgoing streams: id to (length, hash).
    pub sent: HashMap<StreamId, (u64, u64)>,
    /// Incoming streams.
    pub received: HashMap<StreamId, Received>,
    /// Streams whose data is deliberately not read.
    pub paused: std::collections::HashSet<StreamId>,
    /// Ids of outgoing streams, in opening order.
    pub opened: Vec<StreamId>,
    /// Events that ended streams abnormally.
    pub resets: Vec<(StreamId, crate::ErrorCode)>,
    /// Errors that ended outgoing streams (the peer's STOP, a refusal...).
    pub write_errors: Vec<(StreamId, StreamError)>,
    /// Set on `Event::Drained`.
    pub drained: bool,
    /// Set on `Event::Lost`.
    pub lost: Option<crate::ConnectionError>,
    /// Bytes read, over all streams.
    pub bytes_read: u64,
    /// Size of each write.
    pub chunk: usize,
}

impl Traffic {
    /// An application with nothing to send yet.
    pub fn new() -> Self {
        Traffic {
            chunk: 64 * 1024,
            ..Default::default()
        }
    }

    /// Schedules a stream of `len` bytes generated from `seed`.
    pub fn add_stream(&mut self, params: OpenParams, len: u64, seed: u64) {
        self.to_open.push_back((params, len, seed));
    }

    /// Streams still to open or write.
    pub fn pending_sends(&self) -> usize {
        self.to_open.len() + self.writing.len()
    }

    /// Incoming streams read to FIN.
    pub fn finished_count(&self) -> usize {
        self.received
            .values()
            .filter(|r| r.finished_at.is_some())
            .count()
    }

    /// Reacts to events and moves data. Call once per round.
    pub fn poll(&mut self, conn: &mut Connection, now: Instant) {
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::StreamOpened(id) => {
                    // A pure sink: close our direction of incoming streams at once.
                    let _ = conn.finish(id);
                    self.received.insert(id, Received::default());
                    self.read(conn, id, now);
                }
                Event::StreamReadable(id) => self.read(conn, id, now),
                Event::StreamWritable(id) => self.want_write.push_back(id),
                Event::StreamReset { id, code } => self.resets.push((id, code)),
                Event::Drained => self.drained = true,
                Event::Lost(e) => self.lost = Some(e),
                Event::Connected
                | Event::GoAway { .. }
                | Event::StreamClosed(_)
                | Event::StreamAcked(_)
                | Event::StreamStopped { .. } => {}
            }
        }
        while conn.is_established() && !conn.is_draining() {
            let Some((params, len, seed)) = self.to_open.pop_front() else {
                break;
            };
            match conn.open_stream(params.clone()) {
                Ok(id) => {
                    self.opened.push(id);
                    self.writing.insert(id, Source::new(seed, len));
                    self.want_write.push_back(id);
                }
                Err(_) => {
                    self.to_open.push_front((params, len, seed));
                    break;
                }
            }
        }
        let mut rounds = self.want_write.len();
        while rounds > 0 {
            rounds -= 1;
            let Some(id) = self.want_write.pop_front() else {
                break;
            };
            self.write(conn, id);
        }
    }

    fn write(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(src) = self.writing.get_mut(&id) else {
            return;
        };
        loop {
            let Some(chunk) = src.next_chunk(self.chunk) else {
                if conn.finish(id).is_ok() {
                    self.sent.insert(id, (0, src.hasher.finish()));
                }
                if let Some(src) = self.writing.remove(&id) {
                    let _ = src;
                }
                break;
            };
            match conn.send(id, chunk.clone()) {
                Ok(n) if n == chunk.len() => {}
                Ok(n) => {
                    src.pending = Some(chunk.slice(n..));
                    break;
                }
                Err(StreamError::Blocked) => {
                    src.pending = Some(chunk);
                    break;
                }
                Err(e) => {
                    self.writing.remove(&id);
                    self.write_errors.push((id, e));
                    break;
                }
            }
        }
    }

    fn read(&mut self, conn: &mut Connection, id: StreamId, now: Instant) {
        if self.paused.contains(&id) {
            return;
        }
        let Some(entry) = self.received.get_mut(&id) else {
            // One of our own streams: the peer's (empty) direction ends with FIN.
            while let Ok(Some(_)) = conn.recv(id, usize::MAX) {}
            return;
        };
        loop {
            match conn.recv(id, usize::MAX) {
                Ok(Some(b)) => {
                    entry.hasher.write(&b);
                    entry.len += b.len() as u64;
                    self.bytes_read += b.len() as u64;
                }
                Ok(None) => {
                    if entry.finished_at.is_none() {
                        entry.finished_at = Some(now);
                        entry.hash = entry.hasher.finish();
                    }
                    break;
                }
                Err(StreamError::Blocked) => break,
                Err(e) => {
                    entry.error = Some(e);
                    break;
                }
            }
        }
    }

    /// Reads a paused stream now (after un-pausing it).
    pub fn resume(&mut self, conn: &mut Connection, id: StreamId, now: Instant) {
        self.paused.remove(&id);
        self.read(conn, id, now);
    }
}

/// Hash of the content [`Source`] generates for `(seed, len)`, computed the way
/// [`Traffic`] hashes what it reads.
pub fn expected_hash(seed: u64, len: u64, chunk: usize) -> u64 {
    let mut s = Source::new(seed, len);
    while s.next_chunk(chunk).is_some() {}
    s.hasher.finish()
}

/// Runs two [`Traffic`] applications over a pair until `done` or `limit`.
pub fn run_traffic(
    pair: &mut Pair,
    client: &mut Traffic,
    server: &mut Traffic,
    limit: Duration,
    mut done: impl FnMut(&Pair, &Traffic, &Traffic) -> bool,
) -> bool {
    let deadline = pair.now + limit;
    loop {
        pair.receive();
        let now = pair.now;
        client.poll(&mut pair.client.conn, now);
        server.poll(&mut pair.server.conn, now);
        pair.transmit();
        if done(pair, client, server) {
            return true;
        }
        if pair.now >= deadline || !pair.advance() {
            return false;
        }
    }
}
