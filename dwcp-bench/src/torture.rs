//! A randomised, seeded torture test of `dwcp_core::net` through its public
//! API only.
//!
//! One process, a server and a client [`Endpoint`] on 127.0.0.1, one
//! connection, direct or (QUIC only) through an emulated WAN
//! ([`TortureConfig::link`]: a `dwcp_wanem` UDP relay with rate, delay,
//! a one-BDP queue and random loss each way). Both sides open streams at the same time; every stream's
//! content is a deterministic byte pattern (a mix of compressible text and
//! incompressible noise) checked incrementally by the reader. Writers mix
//! `send(Bytes)`, `send_raw`, `AsyncWrite::write` and `write_all` with random
//! sizes, then `finish` (or `shutdown`) and `stopped()` to confirm delivery;
//! readers mix `recv()`, `recv_chunk(max)` and `AsyncRead::read` with random
//! sizes. Stream options (compression, interactive) are random, and the
//! accepting side picks its own direction's compression (`set_compression`);
//! some streams carry data both ways, half-closing in either order. A fraction
//! of the streams is disrupted at a random point: writer reset (send direction
//! only) with a distinct code, reader stop with a distinct code, writer or
//! reader half dropped, whole stream dropped, task cancelled by a timer or
//! aborted. Each direction ends on its own: only a whole-stream drop may
//! disturb the other direction.
//!
//! Every direction of every stream ends in exactly one verdict (see
//! [`TortureReport`]): a clean end with missing bytes is a *truncation*, a
//! wrong byte a *corruption*, a reset or stop that arrives with another code a
//! *wrong code*, any operation still pending at the deadline (a read, a write,
//! `stopped()`, or an `accept_stream` that never produced the stream) a
//! *hang*, and a writer that succeeded although its reader let go before it
//! finished a *write into the void*. Peak memory is sampled from
//! `/proc/self/status` and compared with the configured buffers; when the run
//! has its process to itself (`dwcp-bench torture` runs each configuration in
//! a fresh child process) the process's VmHWM counts as well.
//!
//! All choices derive from the seed; timing (and so the exact interleaving) is
//! the only nondeterminism.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dwcp_core::net::{
    stream_error, Compression, Connection, Endpoint, EndpointConfig, RecvStream, SendStream,
    Stream, StreamOptions, Transport,
};
use dwcp_core::tls::DevCa;
use dwcp_core::{CodecId, Config, ErrorCode, StreamError};
use dwcp_wanem::udp::Relay;
use dwcp_wanem::LinkProfile;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const SERVER: &str = "server.dwcp.test";
const CLIENT: &str = "client.dwcp.test";

/// Largest piece handed to one write call (log-uniform 1..=this).
const MAX_PIECE: u64 = 256 * 1024;
/// Largest read buffer (log-uniform 1..=this).
const MAX_READ: u64 = 256 * 1024;
/// How long pending operations may take to end after the connection closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Which transport a torture run uses (serialisable mirror of [`Transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TortureTransport {
    /// QUIC (quinn).
    Quic,
    /// Parallel TCP lanes.
    Tcp,
}

impl TortureTransport {
    fn transport(self) -> Transport {
        match self {
            TortureTransport::Quic => Transport::Quic,
            TortureTransport::Tcp => Transport::Tcp,
        }
    }
}

impl fmt::Display for TortureTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TortureTransport::Quic => "quic",
            TortureTransport::Tcp => "tcp",
        })
    }
}

/// Configuration of one torture run.
#[derive(Debug, Clone)]
pub struct TortureConfig {
    /// Transport under test.
    pub transport: TortureTransport,
    /// Seed of every random choice.
    pub seed: u64,
    /// Streams opened by each side.
    pub streams_per_side: u32,
    /// Largest size of one direction of a stream (sizes are log-uniform in
    /// `0..=max_size`).
    pub max_size: u64,
    /// Fraction of streams disrupted (0.0..=1.0).
    pub disrupt: f64,
    /// Fraction of streams that carry data in both directions.
    pub bidirectional: f64,
    /// Fraction of streams opened as interactive.
    pub interactive: f64,
    /// Every stream task must end within this time from the start of the run.
    pub deadline: Duration,
    /// Protocol settings of both sides (smaller buffers than the defaults, so
    /// the memory bound means something).
    pub protocol: Config,
    /// An emulated WAN between the two endpoints (QUIC only: a UDP relay
    /// applying this profile each way); `None` for loopback.
    pub link: Option<LinkProfile>,
    /// The run has its process to itself (`dwcp-bench torture` runs each
    /// configuration in a fresh child): the peak is then the process's VmHWM
    /// (every page ever resident, not only the 20 ms samples). In a shared
    /// process (the test) VmHWM covers earlier runs too and only the samples
    /// count.
    pub fresh_process: bool,
}

impl TortureConfig {
    /// A configuration with the torture defaults and the given size.
    pub fn new(
        transport: TortureTransport,
        seed: u64,
        streams_per_side: u32,
        max_size: u64,
    ) -> Self {
        TortureConfig {
            transport,
            seed,
            streams_per_side,
            max_size,
            disrupt: 0.25,
            bidirectional: 0.4,
            interactive: 0.15,
            deadline: Duration::from_secs(120),
            protocol: Self::small_buffers(),
            link: None,
            fresh_process: false,
        }
    }

    /// Protocol settings with buffers far below the defaults: 1 MiB per stream
    /// to send, 16 MiB per connection to send, windows up to 2 MiB per stream
    /// and 16 MiB per connection.
    pub fn small_buffers() -> Config {
        Config {
            stream_send_buffer: 1 << 20,
            connection_send_buffer: 16 << 20,
            initial_stream_window: 256 << 10,
            max_stream_window: 2 << 20,
            initial_connection_window: 1 << 20,
            max_connection_window: 16 << 20,
            ..Config::default()
        }
    }

    /// The configured buffers of both connection ends, per end: the send
    /// buffer, the receive window ceiling, and what the transport may keep
    /// in the process until acknowledged ([`Transport::unacked_buffer`]:
    /// QUIC's send window ceiling, copies of bytes the peer may already hold;
    /// TCP keeps these in kernel socket buffers, outside RSS).
    pub fn configured_buffers(&self) -> u64 {
        let p = &self.protocol;
        2 * (p.connection_send_buffer
            + p.max_connection_window as u64
            + self.transport.transport().unacked_buffer(p))
    }
}

/// The result of one torture run. Counters are per stream *direction* (each
/// stream has two); every direction gets exactly one verdict, the worst that
/// applies, in the order corruption, truncation, false end, wrong code, hang,
/// unexpected error, expected error, ok.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TortureReport {
    /// `quic` or `tcp`.
    pub transport: String,
    /// Seed of the run.
    pub seed: u64,
    /// Streams opened by each side.
    pub streams_per_side: u32,
    /// Largest size of one direction.
    pub max_size: u64,
    /// Fraction of streams disrupted.
    pub disrupt: f64,
    /// The emulated link between the endpoints (empty: loopback).
    #[serde(default)]
    pub link: String,
    /// Packets the emulated link lost at random, both ways.
    #[serde(default)]
    pub link_lost: u64,
    /// Packets the emulated link dropped from its full queue, both ways.
    #[serde(default)]
    pub link_queue_drops: u64,
    /// Stream directions judged (2 per stream).
    pub directions: u64,
    /// Streams that were disrupted.
    pub disrupted_streams: u64,
    /// Delivered exactly, with a clean end.
    pub ok: u64,
    /// Ended with an error where one was due (disrupted stream or its sibling direction).
    pub expected_errors: u64,
    /// Clean end with bytes missing (data loss).
    pub truncations: u64,
    /// A byte differs from the pattern, or more bytes than were sent.
    pub corruptions: u64,
    /// Clean end of a direction whose writer never finished (reset or dropped).
    pub false_ends: u64,
    /// A reset arrived as another error than `Reset(the code sent)`.
    pub wrong_codes: u64,
    /// An operation (read, write, accept) still pending at the deadline.
    pub hangs: u64,
    /// An error on a direction nothing disrupted.
    pub unexpected_errors: u64,
    /// Writers whose reader stopped, was dropped or cancelled before the
    /// end, and that still succeeded (`stopped()` Ok) although they called
    /// `finish` only after the reader let go (or never got a `Stopped` error).
    pub writes_into_void: u64,
    /// Pending operations (accept, recv) that did not end within 2 s of
    /// `Connection::close()`.
    pub hangs_after_close: u64,
    /// `open_stream` failures.
    pub open_errors: u64,
    /// Bytes checked against the pattern.
    pub bytes_verified: u64,
    /// Wall time of the run in seconds.
    pub elapsed_secs: f64,
    /// VmRSS when the run started, in bytes.
    pub rss_baseline: u64,
    /// Highest VmRSS sampled during the run, in bytes.
    pub rss_peak: u64,
    /// VmHWM of the process at the end (process lifetime: this run alone
    /// when `fresh_process`).
    pub vm_hwm: u64,
    /// The run had its process to itself; `rss_peak` includes VmHWM.
    pub fresh_process: bool,
    /// Highest number of bytes the harness itself held in write pieces and
    /// read buffers at once.
    pub inflight_peak: u64,
    /// Configured buffers of both ends (send buffer + connection window +
    /// the transport's unacknowledged-data ceiling, each).
    pub configured_buffers: u64,
    /// `1.5 x (configured_buffers + inflight_peak)`: allowed growth above the baseline.
    pub memory_bound: u64,
    /// `rss_peak - rss_baseline <= memory_bound`.
    pub memory_ok: bool,
    /// Seconds from the start at which each phase ended (streams opened by
    /// both sides, acceptors, accepted streams, close checks).
    pub phases: Vec<(String, f64)>,
    /// The first failures, described.
    pub examples: Vec<String>,
}

impl TortureReport {
    /// Names of the failing counters (empty if the run passed).
    pub fn failures(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (name, n) in [
            ("truncations", self.truncations),
            ("corruptions", self.corruptions),
            ("false_ends", self.false_ends),
            ("wrong_codes", self.wrong_codes),
            ("hangs", self.hangs),
            ("hangs_after_close", self.hangs_after_close),
            ("writes_into_void", self.writes_into_void),
            ("unexpected_errors", self.unexpected_errors),
        ] {
            if n > 0 {
                v.push(format!("{name}={n}"));
            }
        }
        // A run that ended before its connection came measured no memory.
        if !self.memory_ok && self.rss_peak > 0 {
            v.push(format!(
                "memory {} MiB over baseline > bound {} MiB",
                (self.rss_peak.saturating_sub(self.rss_baseline)) >> 20,
                self.memory_bound >> 20
            ));
        }
        v
    }

    /// True if any truncation, corruption, false end, wrong code, hang or
    /// memory excess was seen.
    pub fn failed(&self) -> bool {
        !self.failures().is_empty()
    }
}

impl fmt::Display for TortureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        writeln!(
            f,
            "torture {} seed {}{}: {} streams/side, sizes 0..={} KiB, {:.0}% disrupted, {:.1} s",
            self.transport,
            self.seed,
            if self.link.is_empty() {
                String::new()
            } else {
                format!(" over {}", self.link)
            },
            self.streams_per_side,
            self.max_size >> 10,
            self.disrupt * 100.0,
            self.elapsed_secs
        )?;
        let rows: [(&str, u64); 15] = [
            ("directions", self.directions),
            ("disrupted streams", self.disrupted_streams),
            ("ok", self.ok),
            ("expected errors", self.expected_errors),
            ("truncations", self.truncations),
            ("corruptions", self.corruptions),
            ("false clean ends", self.false_ends),
            ("wrong codes", self.wrong_codes),
            ("hangs", self.hangs),
            ("unexpected errors", self.unexpected_errors),
            ("hangs after close", self.hangs_after_close),
            ("open errors", self.open_errors),
            ("writes into the void", self.writes_into_void),
            ("MiB verified", self.bytes_verified >> 20),
            ("inflight peak KiB", self.inflight_peak >> 10),
        ];
        for (k, v) in rows {
            writeln!(f, "  {k:<22} {v:>10}")?;
        }
        if !self.link.is_empty() {
            writeln!(f, "  {:<22} {:>10}", "link: lost at random", self.link_lost)?;
            writeln!(
                f,
                "  {:<22} {:>10}",
                "link: queue drops", self.link_queue_drops
            )?;
        }
        writeln!(
            f,
            "  {:<22} {:>10.1} (baseline {:.1}, peak {:.1}, VmHWM {:.1})",
            "RSS growth MiB",
            mib(self.rss_peak.saturating_sub(self.rss_baseline)),
            mib(self.rss_baseline),
            mib(self.rss_peak),
            mib(self.vm_hwm)
        )?;
        writeln!(
            f,
            "  {:<22} {:>10.1} (1.5 x ({:.0} MiB buffers + in-flight)) {}",
            "memory bound MiB",
            mib(self.memory_bound),
            mib(self.configured_buffers),
            if self.memory_ok { "ok" } else { "EXCEEDED" }
        )?;
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        writeln!(f, "  {:<22} {}", "phases ended at s", phases.join(", "))?;
        for e in &self.examples {
            writeln!(f, "  ! {e}")?;
        }
        let fails = self.failures();
        if fails.is_empty() {
            writeln!(f, "  PASS")
        } else {
            writeln!(f, "  FAIL: {}", fails.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic randomness and content.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(splitmix(seed))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// Log-uniform in `0..=max`.
    fn log_uniform(&mut self, max: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = ((max as f64 + 1.0).ln() * u).exp() - 1.0;
        (v as u64).min(max)
    }
    /// Log-uniform in `1..=max`.
    fn log_uniform1(&mut self, max: u64) -> u64 {
        self.log_uniform(max.saturating_sub(1)) + 1
    }
}

const PATTERN_BLOCK: u64 = 16 * 1024;
const TEXT: &[u8; 64] = b"DWCP torture: the quick brown fox jumps over the lazy dog 01234\n";

/// The pattern of one direction: blocks of text or noise, chosen per block.
#[derive(Debug, Clone, Copy)]
struct Pattern {
    seed: u64,
    /// Percent of blocks that are text.
    text_pct: u64,
}

impl Pattern {
    fn fill(&self, off: u64, out: &mut [u8]) {
        let mut i = 0usize;
        while i < out.len() {
            let pos = off + i as u64;
            let block = pos / PATTERN_BLOCK;
            let n = (((block + 1) * PATTERN_BLOCK - pos) as usize).min(out.len() - i);
            let seg = &mut out[i..i + n];
            if splitmix(self.seed ^ block.wrapping_mul(0xA24B_AED4_963E_E407)) % 100 < self.text_pct
            {
                for (j, b) in seg.iter_mut().enumerate() {
                    let p = pos + j as u64;
                    *b = TEXT[((p + block.wrapping_mul(7)) & 63) as usize];
                }
            } else {
                let mut word_ix = u64::MAX;
                let mut word = 0u64;
                for (j, b) in seg.iter_mut().enumerate() {
                    let p = pos + j as u64;
                    if p >> 3 != word_ix {
                        word_ix = p >> 3;
                        word = splitmix(self.seed ^ word_ix.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    }
                    *b = (word >> ((p & 7) * 8)) as u8;
                }
            }
            i += n;
        }
    }

    /// Index of the first byte of `data` (at stream offset `off`) that differs
    /// from the pattern. Compares in pieces of a fixed stack buffer: the
    /// reader's own memory must not grow with the chunks the library returns
    /// (it is not counted in the memory bound).
    fn mismatch(&self, off: u64, data: &[u8]) -> Option<usize> {
        let mut expect = [0u8; 4096];
        let mut done = 0usize;
        for piece in data.chunks(expect.len()) {
            let e = &mut expect[..piece.len()];
            self.fill(off + done as u64, e);
            if let Some(i) = e.iter().zip(piece).position(|(a, b)| a != b) {
                return Some(done + i);
            }
            done += piece.len();
        }
        None
    }

    fn bytes(&self, off: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(off, &mut v);
        v
    }
}

// ---------------------------------------------------------------------------
// Plans.

/// How a stream is disrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The writer resets with a distinct code at the cut.
    WriterReset,
    /// The writer half is dropped without `finish` at the cut.
    WriterDrop,
    /// The writer's side drops both halves at the cut.
    WriterWholeDrop,
    /// The writer task is cancelled by a timer (`select!`).
    WriterTimer,
    /// The writer task is aborted.
    WriterAbort,
    /// The reader half is dropped at the cut (`STOP(CANCEL)`).
    ReaderDrop,
    /// The reader stops reading with a distinct code at the cut.
    ReaderStop,
    /// The reader's side drops both halves at the cut.
    ReaderWholeDrop,
    /// The reader task is cancelled by a timer (`select!`).
    ReaderTimer,
    /// The reader task is aborted.
    ReaderAbort,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::WriterReset,
        Kind::WriterDrop,
        Kind::WriterWholeDrop,
        Kind::WriterTimer,
        Kind::WriterAbort,
        Kind::ReaderDrop,
        Kind::ReaderStop,
        Kind::ReaderWholeDrop,
        Kind::ReaderTimer,
        Kind::ReaderAbort,
    ];
    fn on_writer(self) -> bool {
        matches!(
            self,
            Kind::WriterReset
                | Kind::WriterDrop
                | Kind::WriterWholeDrop
                | Kind::WriterTimer
                | Kind::WriterAbort
        )
    }
    /// Both halves of one side go: the other direction is disrupted too.
    fn whole(self) -> bool {
        matches!(self, Kind::WriterWholeDrop | Kind::ReaderWholeDrop)
    }
}

#[derive(Debug, Clone, Copy)]
struct Disruption {
    /// 0: opener to acceptor, 1: acceptor to opener.
    dir: usize,
    kind: Kind,
    /// Byte offset of the cut (writer or reader progress).
    at: u64,
    /// Reset or stop code (distinct per stream).
    code: u32,
    /// Delay of timer and abort disruptions.
    delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Both directions at once.
    Concurrent,
    /// The acceptor writes after it has read the opener's direction to its end.
    FwdThenRev,
    /// The opener writes after it has read the acceptor's direction to its end.
    RevThenFwd,
}

#[derive(Debug, Clone, Copy)]
struct DirPlan {
    size: u64,
    pattern: Pattern,
    /// Seed of the writer's and reader's call choices.
    io_seed: u64,
}

#[derive(Debug, Clone)]
struct Plan {
    /// Compression of the opener's direction (set at open) and of the
    /// acceptor's (chosen by the acceptor with `set_compression`).
    compression: [Compression; 2],
    interactive: bool,
    order: Order,
    dirs: [DirPlan; 2],
    disruption: Option<Disruption>,
}

fn plan(cfg: &TortureConfig, side: u8, index: u32) -> Plan {
    let mut r = Rng::new(cfg.seed ^ ((side as u64) << 40) ^ ((index as u64) << 8) ^ 0x7071);
    let pick = |r: &mut Rng| match r.below(6) {
        0 => Compression::Adaptive,
        1 => Compression::Off,
        2 => Compression::Force(CodecId::Lz4, 0),
        3 => Compression::Force(CodecId::Zstd, 1),
        4 => Compression::Force(CodecId::None, 0),
        _ => Compression::Force(CodecId::Zstd, 3),
    };
    let compression = [pick(&mut r), pick(&mut r)];
    let interactive = r.chance(cfg.interactive);
    let bidi = r.chance(cfg.bidirectional);
    let order = match r.below(3) {
        0 => Order::Concurrent,
        1 => Order::FwdThenRev,
        _ => Order::RevThenFwd,
    };
    let dir = |r: &mut Rng, carries: bool| DirPlan {
        size: if carries {
            r.log_uniform(cfg.max_size)
        } else {
            0
        },
        pattern: Pattern {
            seed: r.next(),
            text_pct: [0, 30, 70, 100][r.below(4) as usize],
        },
        io_seed: r.next(),
    };
    let dirs = [dir(&mut r, true), dir(&mut r, bidi)];
    let disruption = if r.chance(cfg.disrupt) {
        let d = if dirs[1].size > 0 {
            r.below(2) as usize
        } else {
            0
        };
        let kind = Kind::ALL[r.below(Kind::ALL.len() as u64) as usize];
        let at = r.below(dirs[d].size.max(1));
        let code = 0x4000_0000 | ((r.next() as u32) & 0x0FF0_0000) | ((side as u32) << 18) | index;
        let delay = Duration::from_micros(r.log_uniform1(200_000));
        Some(Disruption {
            dir: d,
            kind,
            at,
            code,
            delay,
        })
    } else {
        None
    };
    Plan {
        compression,
        interactive,
        order,
        dirs,
        disruption,
    }
}

// ---------------------------------------------------------------------------
// What happened.

#[derive(Debug, Clone, Default, PartialEq)]
enum End {
    /// Not ended (the task never ran or is still running).
    #[default]
    Pending,
    /// Writer: finished. Reader: clean end.
    Clean,
    /// An error from the stream.
    Error(String, Option<StreamError>),
    /// Our planned disruption happened (reset, drop, cancel).
    Disrupted,
    /// Killed because the sibling half on the same side dropped the stream.
    Killed,
    /// Wrong bytes at this offset.
    Corrupt(u64),
    /// Still pending at the deadline.
    Hung,
}

#[derive(Debug, Default)]
struct Side {
    end: End,
    /// Writer: bytes accepted. Reader: bytes verified.
    bytes: u64,
    /// Writer: `finish` returned Ok (its end is then `stopped()`'s outcome).
    finished: bool,
    /// Writer: reset with this code.
    reset: Option<u32>,
    /// Writer: when `finish` returned Ok. Reader: when it let go of the
    /// stream before its end (stop, drop, cancel). A [`Ctx::tick`] value.
    at: Option<u64>,
    /// Reader: the code its writer must see in `Stopped(code)`.
    stop_code: Option<ErrorCode>,
    started: bool,
}

#[derive(Debug, Default)]
struct DirRecord {
    writer: Side,
    reader: Side,
    /// `open_stream` failed: nothing ran (counted as an open error).
    open_failed: bool,
}

type Rec = Arc<Mutex<DirRecord>>;

fn lock(r: &Rec) -> std::sync::MutexGuard<'_, DirRecord> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by every task of a run.
#[derive(Debug)]
struct Ctx {
    deadline: tokio::time::Instant,
    inflight: AtomicI64,
    inflight_peak: AtomicI64,
    verified: AtomicU64,
    /// Orders events across tasks (finish vs stop).
    seq: AtomicU64,
}

impl Ctx {
    fn tick(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn hold(&self, n: usize) {
        let now = self.inflight.fetch_add(n as i64, Ordering::Relaxed) + n as i64;
        self.inflight_peak.fetch_max(now, Ordering::Relaxed);
    }
    fn release(&self, n: usize) {
        self.inflight.fetch_sub(n as i64, Ordering::Relaxed);
    }
}

fn io_end(e: &std::io::Error) -> End {
    End::Error(e.to_string(), stream_error(e).cloned())
}

fn se_end(e: StreamError) -> End {
    End::Error(e.to_string(), Some(e))
}

// ---------------------------------------------------------------------------
// Writer and reader.

/// What a writer or reader does at its cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    /// Writer: `SendStream::reset` (send direction only).
    Reset(u32),
    /// Reader: `RecvStream::stop`.
    Stop(u32),
    Drop,
    WholeDrop,
}

async fn write_dir(
    mut send: SendStream,
    p: DirPlan,
    cut: (u64, Cut),
    rec: Rec,
    ctx: Arc<Ctx>,
    sibling: CancellationToken,
) {
    lock(&rec).writer.started = true;
    let mut r = Rng::new(p.io_seed ^ 0x5752);
    let mut off = 0u64;
    let (cut_at, cut_kind) = cut;
    loop {
        if cut_kind != Cut::None && off >= cut_at {
            match cut_kind {
                Cut::Reset(code) => {
                    // The send direction only: the other one goes on.
                    send.reset(ErrorCode::from_u32(code));
                    let mut g = lock(&rec);
                    g.writer.reset = Some(code);
                    g.writer.end = End::Disrupted;
                }
                Cut::Drop | Cut::WholeDrop => {
                    // An unfinished writer dropped: RESET(CANCEL).
                    drop(send);
                    if cut_kind == Cut::WholeDrop {
                        sibling.cancel();
                    }
                    let mut g = lock(&rec);
                    g.writer.reset = Some(ErrorCode::Cancel.to_u32());
                    g.writer.end = End::Disrupted;
                }
                Cut::Stop(_) | Cut::None => {}
            }
            return;
        }
        if off >= p.size {
            break;
        }
        let mut n = r.log_uniform1(MAX_PIECE).min(p.size - off);
        if cut_kind != Cut::None && cut_at > off {
            n = n.min(cut_at - off);
        }
        let n = n as usize;
        let data = p.pattern.bytes(off, n);
        ctx.hold(n);
        let res = match r.below(8) {
            0..=2 => send
                .send(Bytes::from(data))
                .await
                .map(|_| n)
                .map_err(se_end),
            3 => send
                .send_raw(Bytes::from(data))
                .await
                .map(|_| n)
                .map_err(se_end),
            4 | 5 => send.write(&data).await.map_err(|e| io_end(&e)),
            _ => send
                .write_all(&data)
                .await
                .map(|_| n)
                .map_err(|e| io_end(&e)),
        };
        ctx.release(n);
        match res {
            Ok(k) => {
                off += k as u64;
                lock(&rec).writer.bytes = off;
                if k == 0 {
                    lock(&rec).writer.end = End::Error("write returned 0".into(), None);
                    return;
                }
            }
            Err(e) => {
                lock(&rec).writer.end = e;
                return;
            }
        }
    }
    // Taken before the call: a reader that let go of the stream after this
    // may or may not have had everything (see `judge`).
    let finish_at = ctx.tick();
    let res = if r.chance(0.5) {
        send.finish().map_err(se_end)
    } else {
        send.shutdown().await.map_err(|e| io_end(&e))
    };
    if let Err(e) = res {
        lock(&rec).writer.end = e;
        return;
    }
    {
        let mut g = lock(&rec);
        g.writer.finished = true;
        g.writer.at = Some(finish_at);
    }
    // Confirm delivery: the peer received every byte and the FIN, or it
    // stopped reading (Err(Stopped(code))). Pending at the deadline is a hang.
    let acked = send.stopped().await;
    lock(&rec).writer.end = match acked {
        Ok(()) => End::Clean,
        Err(e) => se_end(e),
    };
}

async fn read_dir(
    mut recv: RecvStream,
    p: DirPlan,
    cut: (u64, Cut),
    rec: Rec,
    ctx: Arc<Ctx>,
    sibling: CancellationToken,
) {
    lock(&rec).reader.started = true;
    let mut r = Rng::new(p.io_seed ^ 0x5244);
    let mut off = 0u64;
    let (cut_at, cut_kind) = cut;
    loop {
        if cut_kind != Cut::None && off >= cut_at {
            let code = match cut_kind {
                Cut::Stop(c) => ErrorCode::from_u32(c),
                _ => ErrorCode::Cancel,
            };
            if let Cut::Stop(_) = cut_kind {
                recv.stop(code);
            }
            drop(recv);
            // Taken after the stop: a writer that finishes after this must fail.
            let at = ctx.tick();
            {
                let mut g = lock(&rec);
                g.reader.end = End::Disrupted;
                g.reader.at = Some(at);
                g.reader.stop_code = Some(code);
            }
            if cut_kind == Cut::WholeDrop {
                sibling.cancel();
            }
            return;
        }
        let how = r.below(10);
        let got: Result<Option<Bytes>, End> = if how < 4 {
            recv.recv().await.map_err(se_end)
        } else if how < 7 {
            let max = r.log_uniform1(MAX_READ) as usize;
            match recv.recv_chunk(max).await {
                Ok(Some(b)) if b.len() > max || b.is_empty() => Err(End::Error(
                    format!("recv_chunk({max}) returned {} bytes", b.len()),
                    None,
                )),
                x => x.map_err(se_end),
            }
        } else {
            let n = r.log_uniform1(MAX_READ) as usize;
            let mut buf = vec![0u8; n];
            ctx.hold(n);
            let res = recv.read(&mut buf).await;
            ctx.release(n);
            match res {
                Ok(0) => Ok(None),
                Ok(k) => {
                    buf.truncate(k);
                    Ok(Some(Bytes::from(buf)))
                }
                Err(e) => Err(io_end(&e)),
            }
        };
        match got {
            Ok(Some(b)) => {
                if off + b.len() as u64 > p.size {
                    lock(&rec).reader.end = End::Corrupt(p.size);
                    return;
                }
                if let Some(i) = p.pattern.mismatch(off, &b) {
                    lock(&rec).reader.end = End::Corrupt(off + i as u64);
                    return;
                }
                off += b.len() as u64;
                ctx.verified.fetch_add(b.len() as u64, Ordering::Relaxed);
                lock(&rec).reader.bytes = off;
            }
            Ok(None) => {
                lock(&rec).reader.end = End::Clean;
                return;
            }
            Err(e) => {
                lock(&rec).reader.end = e;
                return;
            }
        }
    }
}

/// Records how a half ended from outside its task (cancelled, killed, hung)
/// unless it had ended on its own. For a reader that let go of the stream
/// before its end, also when (after its `RecvStream` was dropped) and the
/// code its writer must see (`CANCEL`).
fn set_end(rec: &Rec, writer: bool, e: End, ctx: &Ctx) {
    let mut g = lock(rec);
    let s = if writer { &mut g.writer } else { &mut g.reader };
    if s.end == End::Pending {
        let let_go = !writer && matches!(e, End::Disrupted | End::Killed);
        s.end = e;
        if let_go {
            s.at = Some(ctx.tick());
            s.stop_code = Some(ErrorCode::Cancel);
        }
    }
}

/// Runs one task of a stream half: a kill switch (whole-stream drop by the
/// sibling), an optional timer cancellation, and the deadline. The outcome is
/// recorded once `fut` (and the stream half it owns) has been dropped.
async fn guarded(
    fut: impl std::future::Future<Output = ()>,
    rec: Rec,
    writer: bool,
    kill: CancellationToken,
    timer: Option<Duration>,
    ctx: Arc<Ctx>,
) {
    let timer_fut = async {
        match timer {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let r = tokio::time::timeout_at(ctx.deadline, async {
        tokio::select! {
            _ = fut => None,
            _ = kill.cancelled() => Some(End::Killed),
            _ = timer_fut => Some(End::Disrupted),
        }
    })
    .await;
    match r {
        Ok(None) => {}
        Ok(Some(e)) => set_end(&rec, writer, e, &ctx),
        Err(_) => set_end(&rec, writer, End::Hung, &ctx),
    }
}

/// Drives one side of a stream (opener or acceptor).
fn drive_half(
    stream: Stream,
    plan: &Plan,
    opener: bool,
    recs: [Rec; 2],
    ctx: &Arc<Ctx>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    let (wdir, rdir) = if opener { (0, 1) } else { (1, 0) };
    let (send, recv) = stream.split();
    let wkill = CancellationToken::new();
    let rkill = CancellationToken::new();
    let d = plan.disruption.filter(|d| {
        // Writer-side disruptions act on the writer of d.dir; reader-side on its reader.
        (d.kind.on_writer() && d.dir == wdir) || (!d.kind.on_writer() && d.dir == rdir)
    });
    let cut_of = |d: &Option<Disruption>| -> (u64, Cut) {
        match d.map(|d| (d.kind, d.at, d.code)) {
            Some((Kind::WriterReset, at, code)) => (at, Cut::Reset(code)),
            Some((Kind::ReaderStop, at, code)) => (at, Cut::Stop(code)),
            Some((Kind::WriterDrop | Kind::ReaderDrop, at, _)) => (at, Cut::Drop),
            Some((Kind::WriterWholeDrop | Kind::ReaderWholeDrop, at, _)) => (at, Cut::WholeDrop),
            _ => (0, Cut::None),
        }
    };
    let (wcut, rcut, wtimer, rtimer, wabort, rabort) = match d {
        Some(x) if x.kind.on_writer() => {
            let t = (x.kind == Kind::WriterTimer).then_some(x.delay);
            let a = (x.kind == Kind::WriterAbort).then_some(x.delay);
            (cut_of(&d), (0, Cut::None), t, None, a, None)
        }
        Some(x) => {
            let t = (x.kind == Kind::ReaderTimer).then_some(x.delay);
            let a = (x.kind == Kind::ReaderAbort).then_some(x.delay);
            ((0, Cut::None), cut_of(&d), None, t, None, a)
        }
        None => ((0, Cut::None), (0, Cut::None), None, None, None, None),
    };
    let wait_for_reader =
        (opener && plan.order == Order::RevThenFwd) || (!opener && plan.order == Order::FwdThenRev);
    let (done_tx, done_rx) = oneshot::channel::<()>();

    let rrec = recs[rdir].clone();
    let rplan = plan.dirs[rdir];
    let rctx = ctx.clone();
    let rk = rkill.clone();
    let wk_for_reader = wkill.clone();
    let gctx = ctx.clone();
    // The stream halves' futures are boxed: nested in `guarded`'s select and
    // timeout unboxed, each task's state was 3.1 KiB (8,000 tasks: 44 MiB of
    // harness memory in the measured peak, not counted in the bound); boxed,
    // 0.8 KiB plus the 0.4-0.7 KiB of the half itself.
    let reader = tokio::spawn(async move {
        let fut = Box::pin(async {
            read_dir(recv, rplan, rcut, rrec.clone(), rctx, wk_for_reader).await;
        });
        guarded(fut, rrec.clone(), false, rk, rtimer, gctx).await;
        let _ = done_tx.send(());
    });

    let wrec = recs[wdir].clone();
    let wplan = plan.dirs[wdir];
    let wctx = ctx.clone();
    let gctx = ctx.clone();
    let wk = wkill.clone();
    let rk_for_writer = rkill.clone();
    let writer = tokio::spawn(async move {
        let fut = Box::pin(async {
            if wait_for_reader {
                // Ends when the reader ends, whatever its outcome (or is aborted).
                let _ = done_rx.await;
            }
            write_dir(send, wplan, wcut, wrec.clone(), wctx, rk_for_writer).await;
        });
        guarded(fut, wrec.clone(), true, wk, wtimer, gctx).await;
    });

    for (h, abort, rec, is_writer) in [
        (writer, wabort, recs[wdir].clone(), true),
        (reader, rabort, recs[rdir].clone(), false),
    ] {
        match abort {
            // The aborter owns the task's handle and records the outcome only
            // once the aborted task (and its stream half) is gone.
            Some(delay) => {
                let ctx = ctx.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    h.abort();
                    let _ = h.await;
                    set_end(&rec, is_writer, End::Disrupted, &ctx);
                }));
            }
            None => tasks.push(h),
        }
    }
}

// ---------------------------------------------------------------------------
// Judging.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Expected,
    Truncation,
    Corruption,
    FalseEnd,
    WrongCode,
    Hang,
    Unexpected,
    IntoVoid,
}

fn describe(e: &End) -> String {
    match e {
        End::Error(s, _) => format!("error({s})"),
        e => format!("{e:?}"),
    }
}

fn judge(plan: &Plan, dir: usize, rec: &DirRecord) -> (Verdict, String) {
    let w = &rec.writer;
    let rd = &rec.reader;
    let size = plan.dirs[dir].size;
    let mine = plan.disruption.filter(|d| d.dir == dir);
    // Each direction ends on its own: only a whole-stream drop disrupts the
    // other direction as well.
    let tolerant = mine.is_some() || plan.disruption.is_some_and(|d| d.kind.whole());
    let what = |s: &str| {
        format!(
            "{s}: dir {dir} size {size} writer {} ({} B, finished {}) reader {} ({} B) disruption {:?}",
            describe(&w.end),
            w.bytes,
            w.finished,
            describe(&rd.end),
            rd.bytes,
            plan.disruption.map(|d| (d.dir, d.kind, d.at))
        )
    };
    if rec.open_failed {
        return (Verdict::Unexpected, what("open_stream failed"));
    }
    if let End::Corrupt(at) = rd.end {
        return (Verdict::Corruption, what(&format!("corrupt at {at}")));
    }
    if rd.end == End::Clean && rd.bytes < size {
        return (Verdict::Truncation, what("truncated"));
    }
    if rd.end == End::Clean && !w.finished {
        return (Verdict::FalseEnd, what("clean end, writer never finished"));
    }
    if let (Some(code), End::Error(_, e)) = (w.reset, &rd.end) {
        let want = StreamError::Reset(ErrorCode::from_u32(code));
        if e.as_ref() != Some(&want) {
            let lost = matches!(e, Some(StreamError::ConnectionLost(_)));
            if !lost {
                return (Verdict::WrongCode, what("wrong reset code at the reader"));
            }
        }
    }
    // Every operation pending at the deadline is a hang, including an
    // `accept_stream` that never produced the stream (`Pending` halves).
    if [&rd.end, &w.end]
        .iter()
        .any(|e| matches!(e, End::Hung | End::Pending))
    {
        let why = if rd.end == End::Pending && !rd.started {
            "hang (stream never accepted or reader never ran)"
        } else {
            "hang"
        };
        return (Verdict::Hang, what(why));
    }
    // The reader let go before the end (stop, drop, cancel): its writer must
    // fail with Stopped(the reader's code), unless it had called `finish`
    // before the reader let go (then the FIN may have arrived first).
    if let (Some(r_at), Some(code)) = (rd.at, rd.stop_code) {
        let finished_before = w.at.is_some_and(|w_at| w_at < r_at);
        match &w.end {
            End::Clean if !finished_before => {
                return (
                    Verdict::IntoVoid,
                    what("writer succeeded after its reader stopped"),
                );
            }
            End::Error(_, e) if e.as_ref() != Some(&StreamError::Stopped(code)) => {
                return (
                    Verdict::WrongCode,
                    what(&format!("writer error is not Stopped({code})")),
                );
            }
            _ => {}
        }
    }
    if rd.end == End::Clean && w.end == End::Clean {
        return (Verdict::Ok, String::new());
    }
    if !tolerant {
        return (
            Verdict::Unexpected,
            what("error on an undisrupted direction"),
        );
    }
    // A writer that finished everything before its (timer or abort)
    // disruption fired: its reader must get everything.
    let writer_cut = mine.is_some_and(|d| d.kind.on_writer());
    if writer_cut && w.finished && matches!(rd.end, End::Error(..)) {
        return (Verdict::Unexpected, what("error after the writer finished"));
    }
    (Verdict::Expected, String::new())
}

// ---------------------------------------------------------------------------
// Memory.

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss() -> u64 {
    status_kib("VmRSS:").unwrap_or(0) * 1024
}

// ---------------------------------------------------------------------------
// The run.

async fn endpoints(cfg: &TortureConfig) -> Result<(Endpoint, Endpoint), String> {
    let ca = DevCa::new().map_err(|e| e.to_string())?;
    let mk = |name: &str| -> Result<EndpointConfig, String> {
        let mut c = EndpointConfig::new(
            ca.config_for(name).map_err(|e| e.to_string())?,
            cfg.transport.transport(),
        );
        c.protocol = cfg.protocol.clone();
        Ok(c)
    };
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Endpoint::bind(any, mk(SERVER)?)
        .await
        .map_err(|e| e.to_string())?;
    let client = Endpoint::bind(any, mk(CLIENT)?)
        .await
        .map_err(|e| e.to_string())?;
    Ok((server, client))
}

/// "50 Mbit/s, 40 ms RTT, 2 % loss each way, 244 KiB queue".
fn describe_link(p: &LinkProfile) -> String {
    let rate = p.rate_bps.map_or("unlimited".to_string(), |r| {
        format!("{} Mbit/s", r / 1_000_000)
    });
    let loss = format!("{:.3}", p.loss * 100.0);
    format!(
        "{rate}, {} ms RTT, {} % loss each way, {} KiB queue",
        (p.delay * 2).as_millis(),
        loss.trim_end_matches('0').trim_end_matches('.'),
        p.queue_bytes >> 10
    )
}

/// The address the client dials: the server's, or that of a relay applying
/// `cfg.link` each way (returned, to be held while the run lasts).
async fn through_link(
    cfg: &TortureConfig,
    server: SocketAddr,
) -> Result<(SocketAddr, Option<Relay>), String> {
    let Some(profile) = &cfg.link else {
        return Ok((server, None));
    };
    if cfg.transport != TortureTransport::Quic {
        return Err("an emulated link is QUIC only (a UDP relay)".into());
    }
    let back = LinkProfile {
        seed: profile.seed.wrapping_add(1),
        ..profile.clone()
    };
    let relay = Relay::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        server,
        profile.clone(),
        back,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((relay.local_addr(), Some(relay)))
}

fn parse_route(route: &[u8]) -> Option<(u8, u32)> {
    let s = std::str::from_utf8(route).ok()?;
    let (side, ix) = s.split_once(':')?;
    let side = match side {
        "c" => 0,
        "s" => 1,
        _ => return None,
    };
    Some((side, ix.parse().ok()?))
}

type Records = Arc<Vec<Vec<[Rec; 2]>>>;

/// Accepts the other side's streams and drives their acceptor halves, until
/// it has every stream the other side opened (`expected`, lowered by open
/// errors) or the deadline. A stream never accepted leaves its records
/// `Pending`, which `judge` counts as a hang.
fn acceptor(
    conn: Connection,
    cfg: Arc<TortureConfig>,
    opener_side: u8,
    expected: Arc<AtomicU64>,
    recs: Records,
    ctx: Arc<Ctx>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut accepted = 0u64;
        while accepted < expected.load(Ordering::SeqCst) {
            // Short slices, so that a lowered `expected` is seen.
            let until =
                (tokio::time::Instant::now() + Duration::from_millis(200)).min(ctx.deadline);
            let mut s = match tokio::time::timeout_at(until, conn.accept_stream()).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(_) if until >= ctx.deadline => return,
                Err(_) => continue,
            };
            accepted += 1;
            let Some((side, ix)) = parse_route(&s.route()) else {
                continue;
            };
            if side != opener_side || ix >= cfg.streams_per_side {
                continue;
            }
            let p = plan(&cfg, side, ix);
            // The accepting side chooses its own direction's compression.
            s.set_compression(p.compression[1]);
            let mut v = Vec::new();
            drive_half(
                s,
                &p,
                false,
                recs[side as usize][ix as usize].clone(),
                &ctx,
                &mut v,
            );
            tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(v);
        }
    })
}

/// Runs one torture configuration.
pub async fn run(cfg: TortureConfig) -> TortureReport {
    let start = Instant::now();
    let mut report = TortureReport {
        transport: cfg.transport.to_string(),
        seed: cfg.seed,
        streams_per_side: cfg.streams_per_side,
        max_size: cfg.max_size,
        disrupt: cfg.disrupt,
        link: cfg.link.as_ref().map(describe_link).unwrap_or_default(),
        configured_buffers: cfg.configured_buffers(),
        ..TortureReport::default()
    };
    let (server, client) = match endpoints(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            report.unexpected_errors += 1;
            report.examples.push(format!("endpoints: {e}"));
            return report;
        }
    };
    // Held to the end of the run: dropping the relay cuts the link.
    let (addr, relay) = match through_link(&cfg, server.local_addr()).await {
        Ok(x) => x,
        Err(e) => {
            report.unexpected_errors += 1;
            report.examples.push(format!("link: {e}"));
            return report;
        }
    };
    // The deadline covers the handshake too: through a link that loses
    // most packets it may never finish.
    let connecting = tokio::time::timeout(cfg.deadline, async {
        tokio::join!(client.connect(addr, SERVER), server.accept())
    });
    let Ok((c, s)) = connecting.await else {
        report.hangs += 1;
        report.examples.push(format!(
            "connect: no connection within the deadline ({:?})",
            cfg.deadline
        ));
        report.elapsed_secs = start.elapsed().as_secs_f64();
        return report;
    };
    let (cconn, sconn) = match (c, s) {
        (Ok(c), Some(s)) => (c, s),
        (c, s) => {
            report.unexpected_errors += 1;
            report.examples.push(format!(
                "connect: {:?} / accepted: {}",
                c.err(),
                s.is_some()
            ));
            return report;
        }
    };

    let baseline = rss();
    report.rss_baseline = baseline;
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = CancellationToken::new();
    let sampler = {
        let peak = peak.clone();
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !stop.is_cancelled() {
                tokio::select! {
                    _ = tick.tick() => { peak.fetch_max(rss(), Ordering::Relaxed); }
                    _ = stop.cancelled() => {}
                }
            }
        })
    };

    let ctx = Arc::new(Ctx {
        deadline: tokio::time::Instant::now() + cfg.deadline,
        inflight: AtomicI64::new(0),
        inflight_peak: AtomicI64::new(0),
        verified: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let cfg = Arc::new(cfg);
    let n = cfg.streams_per_side;
    let recs: Records = Arc::new(
        (0..2)
            .map(|_| {
                (0..n)
                    .map(|_| [Rec::default(), Rec::default()])
                    .collect::<Vec<_>>()
            })
            .collect(),
    );
    let acc_tasks = Arc::new(Mutex::new(Vec::new()));
    let expected = [
        Arc::new(AtomicU64::new(n as u64)),
        Arc::new(AtomicU64::new(n as u64)),
    ];
    let acceptors = [
        acceptor(
            sconn.clone(),
            cfg.clone(),
            0,
            expected[0].clone(),
            recs.clone(),
            ctx.clone(),
            acc_tasks.clone(),
        ),
        acceptor(
            cconn.clone(),
            cfg.clone(),
            1,
            expected[1].clone(),
            recs.clone(),
            ctx.clone(),
            acc_tasks.clone(),
        ),
    ];

    // Open from both sides at once, interleaved.
    let mut open_tasks = Vec::new();
    for i in 0..n {
        for (side, conn) in [(0u8, &cconn), (1u8, &sconn)] {
            let p = plan(&cfg, side, i);
            let opts = StreamOptions {
                route: Bytes::from(format!("{}:{i}", if side == 0 { "c" } else { "s" })),
                compression: p.compression[0],
                interactive: p.interactive,
                ..StreamOptions::default()
            };
            match conn.open_stream(opts) {
                Ok(st) => drive_half(
                    st,
                    &p,
                    true,
                    recs[side as usize][i as usize].clone(),
                    &ctx,
                    &mut open_tasks,
                ),
                Err(e) => {
                    expected[side as usize].fetch_sub(1, Ordering::SeqCst);
                    for r in &recs[side as usize][i as usize] {
                        lock(r).open_failed = true;
                    }
                    report.open_errors += 1;
                    if report.examples.len() < 10 {
                        report.examples.push(format!("open {side}:{i}: {e}"));
                    }
                }
            }
        }
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in open_tasks {
        let _ = t.await;
    }
    let phase = |r: &mut TortureReport, name: &str| {
        r.phases
            .push((name.to_string(), start.elapsed().as_secs_f64()));
    };
    phase(&mut report, "openers");
    // The acceptors end once they have every stream the other side opened,
    // or at the deadline (never earlier: a stream still to be accepted then is
    // judged a hang, not given up on after a grace period).
    for a in acceptors {
        let _ = a.await;
    }
    phase(&mut report, "acceptors");
    loop {
        let batch: Vec<_> =
            std::mem::take(&mut *acc_tasks.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            break;
        }
        for t in batch {
            let _ = t.await;
        }
    }
    phase(&mut report, "accepted");

    // Pending operations must end when the connection closes.
    let probe = cconn.open_stream(StreamOptions {
        route: Bytes::from_static(b"probe"),
        ..StreamOptions::default()
    });
    let server_probe = tokio::time::timeout(Duration::from_secs(2), sconn.accept_stream())
        .await
        .ok()
        .flatten();
    let mut pending = Vec::new();
    {
        let c = cconn.clone();
        pending.push((
            "client accept_stream",
            tokio::spawn(async move {
                let _ = c.accept_stream().await;
            }),
        ));
        let s = sconn.clone();
        pending.push((
            "server accept_stream",
            tokio::spawn(async move {
                let _ = s.accept_stream().await;
            }),
        ));
        if let Ok(mut p) = probe {
            pending.push((
                "client probe recv",
                tokio::spawn(async move {
                    let _ = p.recv().await;
                }),
            ));
        }
        if let Some(mut p) = server_probe {
            pending.push((
                "server probe recv",
                tokio::spawn(async move {
                    let _ = p.recv().await;
                }),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    cconn.close(ErrorCode::NoError, "torture done");
    for (name, h) in pending {
        if tokio::time::timeout(CLOSE_GRACE, h).await.is_err() {
            report.hangs_after_close += 1;
            report
                .examples
                .push(format!("{name} still pending {CLOSE_GRACE:?} after close"));
        }
    }
    sconn.close(ErrorCode::NoError, "torture done");
    phase(&mut report, "close");

    sampling.cancel();
    let _ = sampler.await;
    report.rss_peak = peak.load(Ordering::Relaxed).max(rss());
    report.vm_hwm = status_kib("VmHWM:").unwrap_or(0) * 1024;
    report.fresh_process = cfg.fresh_process;
    if cfg.fresh_process {
        report.rss_peak = report.rss_peak.max(report.vm_hwm);
    }
    report.inflight_peak = ctx.inflight_peak.load(Ordering::Relaxed).max(0) as u64;
    report.memory_bound = (1.5 * (report.configured_buffers + report.inflight_peak) as f64) as u64;
    report.memory_ok = report.rss_peak.saturating_sub(report.rss_baseline) <= report.memory_bound;
    report.bytes_verified = ctx.verified.load(Ordering::Relaxed);
    if let Some(relay) = &relay {
        let (forward, back) = relay.stats();
        report.link_lost = forward.lost + back.lost;
        report.link_queue_drops = forward.queue_drops + back.queue_drops;
    }

    let mut examples = Vec::new();
    for side in 0..2u8 {
        for i in 0..n {
            let p = plan(&cfg, side, i);
            if p.disruption.is_some() {
                report.disrupted_streams += 1;
            }
            for dir in 0..2 {
                let g = lock(&recs[side as usize][i as usize][dir]);
                let (v, why) = judge(&p, dir, &g);
                report.directions += 1;
                match v {
                    Verdict::Ok => report.ok += 1,
                    Verdict::Expected => report.expected_errors += 1,
                    Verdict::Truncation => report.truncations += 1,
                    Verdict::Corruption => report.corruptions += 1,
                    Verdict::FalseEnd => report.false_ends += 1,
                    Verdict::WrongCode => report.wrong_codes += 1,
                    Verdict::Hang => report.hangs += 1,
                    Verdict::Unexpected => report.unexpected_errors += 1,
                    Verdict::IntoVoid => report.writes_into_void += 1,
                }
                if !why.is_empty() && examples.len() < 8 {
                    examples.push(format!(
                        "{}:{i} {} {why}",
                        if side == 0 { "c" } else { "s" },
                        if p.interactive { "interactive" } else { "bulk" }
                    ));
                }
            }
        }
    }
    report.examples.extend(examples);
    if relay.is_some() {
        // Both ends closed above; let their close cross the relay before
        // it goes, or the connections linger to their idle timeout.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = tokio::join!(cconn.closed(), sconn.closed());
        })
        .await;
    }
    drop((cconn, sconn));
    drop((client, server));
    drop(relay);
    report.elapsed_secs = start.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_offset_consistent() {
        let p = Pattern {
            seed: 7,
            text_pct: 50,
        };
        let whole = p.bytes(0, 100_000);
        let mut part = vec![0u8; 3000];
        p.fill(40_001, &mut part);
        assert_eq!(&whole[40_001..43_001], &part[..]);
        assert_eq!(p.mismatch(1, &whole[1..]), None);
        let mut bad = whole[7_000..20_000].to_vec();
        bad[9_001] ^= 1;
        assert_eq!(p.mismatch(7_000, &bad), Some(9_001));
        assert_ne!(
            whole,
            Pattern {
                seed: 8,
                text_pct: 50
            }
            .bytes(0, 100_000)
        );
    }

    #[test]
    fn log_uniform_stays_in_range() {
        let mut r = Rng::new(1);
        let mut seen_zero = false;
        let mut seen_max_half = false;
        for _ in 0..10_000 {
            let v = r.log_uniform(1 << 20);
            assert!(v <= 1 << 20);
            seen_zero |= v == 0;
            seen_max_half |= v > 1 << 19;
        }
        assert!(seen_zero && seen_max_half);
    }

    #[test]
    fn plans_are_seeded() {
        let cfg = TortureConfig::new(TortureTransport::Tcp, 3, 10, 1 << 20);
        let a = plan(&cfg, 0, 5);
        let b = plan(&cfg, 0, 5);
        assert_eq!(a.dirs[0].size, b.dirs[0].size);
        assert_eq!(a.dirs[0].pattern.seed, b.dirs[0].pattern.seed);
        assert_eq!(a.compression, b.compression);
        assert!(cfg.protocol.validate().is_ok());
    }
}
