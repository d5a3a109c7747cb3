//! The codec layer's sending side: compresses chunks according to a policy,
//! with reusable zstd contexts, and feeds the selector its measurements.
//!
//! An [`Encoder`] does CPU work; run it off the I/O path (the async layer uses
//! tokio's blocking pool). Uncompressed chunks keep their `Bytes` (zero copy).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::frame::Encoding;
use crate::selector::{Level, Selector, Wait};
use crate::zstd_stream::{self, StreamCompressor};
use crate::CodecId;

/// Bytes of a chunk tried with LZ4 to judge compressibility.
pub const SAMPLE: usize = 4096;
/// Bytes compressed with LZ4, the current level and the probe when
/// exploring (LZ4 once where it is one of them). At least 64 KiB
/// less one byte: `lz4_flex` compresses a shorter input with a 4-byte hash
/// and one of 65,535 bytes or more with a 5-byte hash, and on some data the two
/// differ by more than twice (text stored four bytes a character: 2.1
/// against 5.8). A sample must be compressed as the stream's chunks are,
/// which are up to 128 KiB; a shorter chunk is sampled whole.
pub const EXPLORE_SAMPLE: usize = 64 * 1024;
/// Sampled chunks in a row found incompressible and sent as-is, after
/// which the choice counts as steady and only one chunk in
/// [`SAMPLE_ONE_IN`] is sampled.
pub const STEADY_AS_IS: u32 = 8;
/// While sending as-is is steady, one chunk in this many is sampled.
///
/// A sample (LZ4 over 4 KiB, and the byte entropy where LZ4 finds
/// nothing) costs about 3 µs, 4–5 % of what sending a 64 KiB chunk of
/// random bytes costs the sender on loopback; a stream of incompressible
/// data paid it on every chunk to learn the same thing. Data that turns
/// compressible is still seen within this many chunks. Exploration keeps
/// its schedule on the chunks in between; a context probe due on one waits
/// for the next sampled chunk.
pub const SAMPLE_ONE_IN: u32 = 4;

/// Compression policy of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Chosen per chunk by the [`Selector`].
    #[default]
    Adaptive,
    /// Never compress.
    Off,
    /// Always this level (falls back to none if the peer did not accept the codec).
    Force(Level),
}

/// What the sender observed around the previous chunk of the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Feedback {
    /// What the sender waited on.
    pub wait: Wait,
    /// The stream's wire rate (bytes/s) over the previous chunk: its wire
    /// size over the time from its hand-over to the next one's.
    pub wire_rate: Option<f64>,
}

/// Share of the time between two hand-overs that compressing must take for
/// the transport to count as waiting for the compressor.
pub const COMPRESSOR_BOUND: f64 = 0.75;

impl Feedback {
    /// What the sender waited on around one chunk, from what it saw:
    ///
    /// - the chunk had to wait for room or credit, or the stream still had
    ///   data queued when it came out of the compressor: the transport binds
    ///   ([`Wait::Transport`]), unless the peer's credit had run short
    ///   while the stream sent well below the link estimate
    ///   (`credit_short`: less than a chunk of the stream's credit left).
    ///   Credit counts decoded bytes, so no level changes the raw rate it
    ///   allows, and the link is not what binds ([`Wait::Credit`]: the
    ///   level stays). At 1 Gbit/s and 20 ms a stream of the memory image
    ///   sat at 13-101 KB of credit for dozens of hand-overs, and reading
    ///   that as the link allowed it only stronger levels; reading it as
    ///   unknown let the link estimate move a filesystem image's stream to
    ///   LZ4 at 100 Mbit/s (16 % of its chunks in one run);
    /// - otherwise, compressing took most of the time since the previous
    ///   hand-over (`compress` ≥ [`COMPRESSOR_BOUND`] × `interval`): the
    ///   sender spent its time compressing while the queue ran dry
    ///   ([`Wait::Compressor`]);
    /// - otherwise the gap was not the compressor's: the application was
    ///   slow to give data, or the data sat in the transport's own buffers
    ///   below the stream's queue. Neither says which level delivers more
    ///   ([`Wait::Unknown`]: the link estimate decides).
    ///
    /// An earlier rule called every empty queue a wait for the compressor.
    /// Below the stream's queue the transport buffers about a congestion
    /// window of its own (QUIC's send buffer, the lanes' queues), so the
    /// queue was often empty while the link was busy; streams on a 100 Mbit/s
    /// link were walked down to LZ4 or none where zstd-3 delivered 1.5–2.5×
    /// more (`dwcp-bench compression-e2e`).
    pub fn judge(
        compress: Duration,
        interval: Option<Duration>,
        waited_for_room: bool,
        queued: u64,
        credit_short: bool,
    ) -> Wait {
        if waited_for_room || queued > 0 {
            if credit_short {
                return Wait::Credit;
            }
            return Wait::Transport;
        }
        match interval {
            Some(dt) if compress.as_secs_f64() >= COMPRESSOR_BOUND * dt.as_secs_f64() => {
                Wait::Compressor
            }
            _ => Wait::Unknown,
        }
    }
}

/// One encoded chunk.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Level used (`None` when sent as-is).
    pub level: Level,
    /// Encoding for the DATA frame; `None` for raw bytes.
    pub encoding: Option<Encoding>,
    /// Payload to send.
    pub payload: Bytes,
    /// Raw length.
    pub raw_len: usize,
    /// CPU time spent (compression, sampling and exploration).
    pub cpu: Duration,
    /// What the compression measured (`None` when the level was none).
    pub trial: Option<Trial>,
    /// What an exploration sample measured, if one was due.
    pub paired: Option<Paired>,
}

impl Encoded {
    /// Counts this chunk in the codec metrics of traffic class `class`:
    /// `dwcp_compression_{raw,wire}_bytes_total{class,codec}`,
    /// `dwcp_compression_seconds{codec}` and
    /// `dwcp_compression_cpu_seconds_total{class,codec}`.
    pub fn record_metrics(&self, class: String) {
        CodecMeters::new(class, self.level).record(self);
    }
}

/// The codec metrics of one traffic class and level, registered once: a
/// sender that counts every chunk keeps them rather than looking its
/// labels up in the recorder each time.
#[derive(Clone)]
pub struct CodecMeters {
    raw: metrics::Counter,
    wire: metrics::Counter,
    seconds: metrics::Histogram,
    cpu: metrics::Gauge,
}

impl CodecMeters {
    /// The metrics of `level` in traffic class `class` (see
    /// [`Encoded::record_metrics`]).
    pub fn new(class: String, level: Level) -> Self {
        let codec = level.label();
        CodecMeters {
            raw: metrics::counter!("dwcp_compression_raw_bytes_total", "class" => class.clone(), "codec" => codec.clone()),
            wire: metrics::counter!("dwcp_compression_wire_bytes_total", "class" => class.clone(), "codec" => codec.clone()),
            seconds: metrics::histogram!("dwcp_compression_seconds", "codec" => codec.clone()),
            cpu: metrics::gauge!("dwcp_compression_cpu_seconds_total", "class" => class, "codec" => codec),
        }
    }

    /// Adds CPU time spent for this level beside its chunks (an
    /// exploration measured aside).
    pub fn add_cpu(&self, cpu: Duration) {
        self.cpu.increment(cpu.as_secs_f64());
    }

    /// Counts `out` (whose level must be this one).
    pub fn record(&self, out: &Encoded) {
        let cpu = out.cpu.as_secs_f64();
        self.raw.increment(out.raw_len as u64);
        self.wire.increment(out.payload.len() as u64);
        self.seconds.record(cpu);
        self.cpu.increment(cpu);
    }
}

impl std::fmt::Debug for CodecMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecMeters").finish_non_exhaustive()
    }
}

/// Compression state of one stream. It holds no codec context: zstd
/// contexts (several MiB each at high levels) come from a process-wide pool
/// of at most [`ZSTD_POOL_CAP`] idle contexts, so memory does not grow with
/// the number of streams.
pub struct Encoder {
    policy: Policy,
    codec_bits: u16,
    selector: Selector,
    /// The stream's zstd context across chunks, from the first chunk
    /// compressed with it until the stream finishes (see
    /// [`crate::zstd_stream`]). Locked only by the one chunk at the
    /// compressor: context chunks are compressed one at a time.
    context: Option<Arc<Mutex<StreamCompressor>>>,
    /// A context failed once: the peer's copy can no longer be trusted to
    /// match a new one, so the stream never uses one again.
    context_failed: Arc<std::sync::atomic::AtomicBool>,
    /// Sampled chunks in a row found incompressible and sent as-is.
    as_is_run: u32,
    /// Chunks left unsampled since the last sample because the run was
    /// steady ([`SAMPLE_ONE_IN`]).
    unsampled: u32,
}

/// Most idle zstd contexts kept for reuse, over all streams and levels.
pub const ZSTD_POOL_CAP: usize = 8;

type ZstdPool = std::sync::Mutex<Vec<(i32, zstd::bulk::Compressor<'static>)>>;

fn zstd_pool() -> &'static ZstdPool {
    static POOL: std::sync::OnceLock<ZstdPool> = std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Compresses with a pooled zstd context of `level` (created if none is idle).
fn zstd_compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    let pooled = {
        let mut pool = zstd_pool().lock().unwrap_or_else(|p| p.into_inner());
        pool.iter()
            .position(|(l, _)| *l == level)
            .map(|i| pool.swap_remove(i).1)
    };
    let mut ctx = match pooled {
        Some(c) => c,
        None => zstd::bulk::Compressor::new(level).ok()?,
    };
    // The output is allocated at zstd's worst-case bound (a little more than
    // the input); it stays queued and in flight until acknowledged, so give
    // back what the data did not need.
    let out = ctx.compress(data).ok().map(|mut v| {
        if v.capacity() - v.len() > v.len() / 8 {
            v.shrink_to_fit();
        }
        v
    });
    let mut pool = zstd_pool().lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() >= ZSTD_POOL_CAP {
        // Keep the most recent; the oldest idle context is freed.
        pool.remove(0);
    }
    pool.push((level, ctx));
    out
}

/// What compressing one sample with LZ4, a probed level and the current
/// level measured (for [`Selector::observe_pair`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// The level probed.
    pub probe: Level,
    /// The stream's level when the exploration was planned: the sample
    /// compared the probe with it.
    pub current: Level,
    /// Sample length.
    pub raw: usize,
    /// LZ4's output length.
    pub lz4_wire: usize,
    /// The probe's output length.
    pub probe_wire: usize,
    /// CPU time the probe took (the thread's CPU clock).
    pub probe_cpu: Duration,
    /// The current level's output length.
    pub cur_wire: usize,
    /// CPU time the current level took.
    pub cur_cpu: Duration,
}

/// Compresses [`EXPLORE_SAMPLE`] bytes from the middle of `chunk` with LZ4,
/// `probe` and `current`.
fn explore_sample(probe: Level, current: Level, chunk: &[u8]) -> Paired {
    let sample = &chunk[explored_range(chunk.len())];
    let n = sample.len();
    let timed = |l: Level| cpu_timed(|| compress_at(l, sample).map_or(n, |c| c.len()));
    let (lz4_wire, lt) = timed(Level::Lz4);
    let (probe_wire, probe_cpu) = if probe == Level::Lz4 {
        (lz4_wire, lt)
    } else {
        timed(probe)
    };
    let (cur_wire, cur_cpu) = if current == Level::Lz4 {
        (lz4_wire, lt)
    } else {
        timed(current)
    };
    Paired {
        probe,
        current,
        raw: n,
        lz4_wire,
        probe_wire,
        probe_cpu,
        cur_wire,
        cur_cpu,
    }
}

/// The part of a chunk of `len` bytes an exploration compresses: at most
/// [`EXPLORE_SAMPLE`] bytes from its middle.
fn explored_range(len: usize) -> std::ops::Range<usize> {
    let n = len.min(EXPLORE_SAMPLE);
    let start = (len - n) / 2;
    start..start + n
}

/// `data` compressed at `level` (`None` for [`Level::None`] or a zstd error).
fn compress_at(level: Level, data: &[u8]) -> Option<Vec<u8>> {
    match level {
        Level::None => None,
        Level::Lz4 => Some(lz4_flex::block::compress(data)),
        Level::Zstd(l) => zstd_compress(l, data),
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("policy", &self.policy)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// The [`SAMPLE`]-byte sample of `data` the compressibility checks read:
/// four pieces spread over it, so one random page in a mixed chunk does not
/// decide for the whole chunk.
fn sample_of(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 64 {
        return None;
    }
    let piece = (SAMPLE / 4).min(data.len() / 4);
    let mut sample = Vec::with_capacity(piece * 4);
    for k in 0..4 {
        let start = (data.len() / 4) * k;
        sample.extend_from_slice(&data[start..start + piece]);
    }
    Some(sample)
}

/// LZ4 ratio (raw/compressed) of a [`SAMPLE`]-byte sample made of four
/// pieces spread over `data`, so one random page in a mixed chunk does not
/// decide for the whole chunk.
pub fn sample_ratio(data: &[u8]) -> f64 {
    sample_of(data).map_or(1.0, |s| lz4_ratio(&s))
}

fn lz4_ratio(sample: &[u8]) -> f64 {
    let c = lz4_flex::block::compress(sample);
    sample.len() as f64 / c.len().max(1) as f64
}

/// What entropy coding alone could gain on `sample`: 8 bits over its bytes'
/// order-0 entropy. LZ4 finds repeats only; zstd also codes literals by
/// their frequency, and parts of the already-compressed corpus (zstd-1
/// 1.43x, LZ4 1.00x on the same 128 KiB) gain that way alone.
fn entropy_ratio(sample: &[u8]) -> f64 {
    if sample.is_empty() {
        return 1.0;
    }
    let mut counts = [0u32; 256];
    for b in sample {
        counts[usize::from(*b)] += 1;
    }
    let n = sample.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    8.0 / bits.max(0.01)
}

/// The sample's LZ4 ratio, and whether it is worth a zstd level though LZ4
/// finds nothing ([`entropy_ratio`] reaches
/// [`crate::selector::INCOMPRESSIBLE_RATIO`]). The entropy is read only
/// where LZ4 finds nothing and the sample is a full [`SAMPLE`]: counted
/// over fewer bytes it reads low (random bytes: 1.22x over 128 bytes,
/// 1.07x over 400, about 1.006x over 4 KiB).
pub fn sample_ratios(data: &[u8]) -> (f64, bool) {
    let Some(s) = sample_of(data) else {
        return (1.0, false);
    };
    let lz4 = lz4_ratio(&s);
    let skewed = lz4 < crate::selector::INCOMPRESSIBLE_RATIO
        && s.len() >= SAMPLE
        && entropy_ratio(&s) >= crate::selector::INCOMPRESSIBLE_RATIO;
    (lz4, skewed)
}

impl Encoder {
    /// An encoder for a peer accepting the codecs in `codec_bits`.
    pub fn new(policy: Policy, codec_bits: u16) -> Self {
        Encoder {
            policy,
            codec_bits,
            selector: Selector::with_machine_costs(codec_bits),
            context: None,
            context_failed: Default::default(),
            as_is_run: 0,
            unsampled: 0,
        }
    }

    /// Whether the next chunk should go to the compressor alone, so that it
    /// may use the stream's zstd context ([`Encoder::plan_alone`]): the peer
    /// takes zstd-stream chunks, the policy may choose zstd at a level
    /// with a context, and the sender was not waiting for the compressor
    /// (then chunks compressed side by side deliver more than a better
    /// ratio does).
    pub fn wants_context(&self, wait: Wait) -> bool {
        let level_ok = match self.policy {
            Policy::Adaptive => true,
            Policy::Force(Level::Zstd(l)) => l <= zstd_stream::MAX_LEVEL,
            _ => false,
        };
        level_ok
            && wait != Wait::Compressor
            && self.codec_bits & CodecId::ZstdStream.bit() != 0
            && !self
                .context_failed
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Gives the stream's zstd context back (the stream finished sending).
    pub fn release_context(&mut self) {
        self.context = None;
    }

    /// The selector, to adjust (CPU share) or to teach in tests.
    pub fn selector_mut(&mut self) -> &mut Selector {
        &mut self.selector
    }

    /// The selector (for stats).
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The selector has sent [`STEADY_AS_IS`] sampled chunks in a row
    /// as-is, each found incompressible, and the next sample is not due
    /// yet.
    fn as_is_steady(&self) -> bool {
        self.as_is_run >= STEADY_AS_IS && self.unsampled + 1 < SAMPLE_ONE_IN
    }

    /// A chunk sent as-is without a sample: the selector counts it, so
    /// that exploration stays on schedule (otherwise speeds measured under
    /// load would never be revised and compression would never come back).
    /// Returns the exploration due, if any.
    fn as_is_unsampled(&mut self, link_rate: Option<f64>) -> Option<(Level, Level)> {
        self.selector.skip();
        self.selector
            .explore_at(link_rate)
            .map(|probe| (probe, Level::None))
    }

    fn allowed(&self, level: Level) -> bool {
        level == Level::None || self.codec_bits & level.codec().bit() != 0
    }

    /// Encodes one chunk. `link_rate` is the wire rate available to the stream
    /// in bytes/s, if known.
    pub fn encode(&mut self, chunk: Bytes, link_rate: Option<f64>) -> Encoded {
        self.encode_with(chunk, link_rate, Feedback::default())
    }

    /// Encodes one chunk, knowing what the sender waited on around the
    /// previous one and the stream's wire rate over it (see [`Feedback`]):
    /// [`Encoder::plan`], [`Planned::compress`], [`Encoder::observe`].
    pub fn encode_with(&mut self, chunk: Bytes, link_rate: Option<f64>, fb: Feedback) -> Encoded {
        let planned = self.plan(chunk, link_rate, fb);
        let out = planned.compress();
        self.observe(&out);
        out
    }

    /// Chooses the level of one chunk (sampling and exploring as due). The
    /// compression itself needs no encoder, so several chunks of one stream
    /// can be compressed at once on different threads; each result goes
    /// back through [`Encoder::observe`].
    pub fn plan(&mut self, chunk: Bytes, link_rate: Option<f64>, fb: Feedback) -> Planned {
        self.plan_inner(chunk, link_rate, fb, false)
    }

    /// As [`Encoder::plan`], for a chunk that is compressed with no other
    /// chunk of the stream at the compressor and that the stream may send as
    /// [`CodecId::ZstdStream`] (the caller reserved a context at the peer):
    /// at a zstd level up to [`zstd_stream::MAX_LEVEL`], a chunk of at least
    /// [`zstd_stream::MIN_CHUNK`] is compressed with the stream's context if
    /// it has one or one of the process's is free.
    pub fn plan_alone(&mut self, chunk: Bytes, link_rate: Option<f64>, fb: Feedback) -> Planned {
        self.plan_inner(chunk, link_rate, fb, true)
    }

    fn plan_inner(
        &mut self,
        chunk: Bytes,
        link_rate: Option<f64>,
        fb: Feedback,
        alone: bool,
    ) -> Planned {
        let started = Instant::now();
        let wait = fb.wait;
        if let Some(r) = fb.wire_rate {
            self.selector.observe_wire_rate(r, wait);
        }
        // Whether this chunk could go into the stream's zstd context: the
        // stream has one, or one of the process's is free.
        let may_context = alone
            && chunk.len() >= zstd_stream::MIN_CHUNK
            && self.wants_context(Wait::Unknown)
            && (self.context.is_some()
                || zstd_stream::senders_alive() < zstd_stream::SENDER_CONTEXTS);
        self.selector.set_context(may_context);
        let mut sample = None;
        let mut explore = None;
        let level = match self.policy {
            Policy::Off => Level::None,
            Policy::Force(l) if self.allowed(l) => l,
            Policy::Force(_) => Level::None,
            Policy::Adaptive if self.selector.none_dominates_with(link_rate, wait) => {
                explore = self.as_is_unsampled(link_rate);
                Level::None
            }
            Policy::Adaptive if self.as_is_steady() => {
                self.unsampled += 1;
                explore = self.as_is_unsampled(link_rate);
                Level::None
            }
            Policy::Adaptive => {
                let (ratio, entropy) = sample_ratios(&chunk);
                sample = Some(ratio);
                self.unsampled = 0;
                self.selector.set_entropy_coding_pays(entropy);
                let level = self.selector.choose_with(link_rate, ratio, wait);
                if let Some(probe) = self.selector.explore_at(link_rate) {
                    explore = Some((probe, level));
                }
                let level = if self.selector.context_probe_due(level) {
                    // What the context would gain is only seen by using it.
                    Level::Zstd(1)
                } else {
                    level
                };
                // Only incompressible chunks make a steady run: chunks the
                // rule sends as-is though they compress are decided anew
                // each time, with its hysteresis.
                let incompressible = ratio < crate::selector::INCOMPRESSIBLE_RATIO && !entropy;
                self.as_is_run = if level == Level::None && incompressible {
                    self.as_is_run.saturating_add(1)
                } else {
                    0
                };
                level
            }
        };
        let context = match level {
            Level::Zstd(l) if may_context && l <= zstd_stream::MAX_LEVEL => {
                if self.context.is_none() {
                    self.context = StreamCompressor::try_new(l).map(|c| Arc::new(Mutex::new(c)));
                }
                self.context.clone()
            }
            _ => None,
        };
        Planned {
            level,
            chunk,
            planning: started.elapsed(),
            sample,
            explore,
            context: context.map(|c| (c, self.context_failed.clone())),
        }
    }

    /// Feeds the selector what an exploration measured, against the level
    /// it was compared with (the stream's may have changed since, or the
    /// chunk went as-is while the level stayed).
    pub fn observe_paired(&mut self, p: Paired) {
        self.selector.observe_measured(&p);
    }

    /// Feeds the selector what compressing a planned chunk measured.
    pub fn observe(&mut self, out: &Encoded) {
        if let Some(p) = out.paired {
            self.observe_paired(p);
        }
        if let Some(t) = out.trial {
            if t.in_context {
                // A fixed level samples nothing: 1 (see `observe_context`).
                self.selector.observe_context(
                    t.level,
                    out.raw_len,
                    t.compressed_len,
                    t.took,
                    t.sample.unwrap_or(1.0),
                );
            } else {
                self.selector
                    .observe(t.level, out.raw_len, t.compressed_len, t.took);
                if let Some(sample) = t.sample {
                    self.selector
                        .observe_sample(t.level, out.raw_len, t.compressed_len, sample);
                }
            }
        }
    }
}

/// A chunk whose level is chosen ([`Encoder::plan`]), to compress.
#[derive(Debug)]
pub struct Planned {
    /// The level chosen.
    pub level: Level,
    chunk: Bytes,
    planning: Duration,
    /// The chunk's LZ4 sample ratio, if it was sampled.
    sample: Option<f64>,
    /// Exploration due with this chunk: (probe, current level).
    explore: Option<(Level, Level)>,
    /// The stream's context to compress with, and the flag to raise if it
    /// fails.
    context: Option<(
        Arc<Mutex<StreamCompressor>>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
}

impl Planned {
    /// Whether the chunk is compressed with the stream's context (then it
    /// is sent as [`CodecId::ZstdStream`], whatever its size).
    pub fn uses_context(&self) -> bool {
        self.context.is_some()
    }

    /// The flag that stops the stream from using its zstd context, if this
    /// chunk is compressed in it: raised if the chunk will not reach the
    /// peer after all (its `send` was cancelled).
    pub fn context_failed_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.context.as_ref().map(|(_, failed)| failed.clone())
    }

    /// Takes out the exploration due with a chunk that goes as-is, leaving
    /// nothing to compute ([`Planned::is_trivial`]): it measures a sample
    /// of the chunk, which can go out before the measurement is done.
    pub fn take_exploration(&mut self) -> Option<Exploration> {
        // (A chunk going as-is has no context to compress in.)
        if self.level != Level::None {
            return None;
        }
        let (probe, current) = self.explore.take()?;
        Some(Exploration {
            probe,
            current,
            sample: self.chunk.slice(explored_range(self.chunk.len())),
        })
    }

    /// Time spent choosing the level.
    pub fn planning(&self) -> Duration {
        self.planning
    }

    /// Whether [`Planned::compress`] has nothing to compute (the chunk goes
    /// as-is and no exploration is due): it can run where it is, without
    /// a trip to a compression thread.
    pub fn is_trivial(&self) -> bool {
        self.level == Level::None && self.explore.is_none()
    }
}

/// An exploration taken out of a chunk sent as-is
/// ([`Planned::take_exploration`]): a sample of the chunk to compress with
/// LZ4 and the level probed.
#[derive(Debug)]
pub struct Exploration {
    probe: Level,
    current: Level,
    sample: Bytes,
}

impl Exploration {
    /// Compresses the sample (on the calling thread), counted as
    /// compression in the CPU figures; returns what it measured and the
    /// time it took.
    pub fn measure(self) -> (Paired, Duration) {
        counted_as_compression(|| explore_sample(self.probe, self.current, &self.sample))
    }
}

/// Runs `f` (on the calling thread) counted as compression in the CPU
/// figures ([`crate::cpu_load::count_compression`]); returns its result and
/// the wall time it took.
fn counted_as_compression<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let (out, cpu, wall) = clocked(f);
    crate::cpu_load::count_compression(cpu, wall);
    (out, wall)
}

/// Runs `f` on the calling thread and returns the CPU time the thread
/// spent in it, which is what the selector's speeds mean (raw bytes per
/// second of CPU). Wall time also counts the time the thread waited for a
/// core: with the daemons, the transport and the applications on two cores,
/// a 128 KiB LZ4 chunk read anywhere from 820 down to 281 MB/s within half a
/// second, and whichever level was in use looked slower than the others,
/// which were measured at other moments. Wall time if the thread's clock
/// cannot be read.
fn cpu_timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let (out, cpu, wall) = clocked(f);
    (out, if cpu.is_zero() { wall } else { cpu })
}

/// Runs `f` on the calling thread: its result, the thread's CPU time in it
/// (zero if that clock cannot be read) and the wall time.
fn clocked<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (cpu0, wall0) = (crate::cpu_load::thread_cpu(), Instant::now());
    let out = f();
    let cpu = crate::cpu_load::thread_cpu().saturating_sub(cpu0);
    (out, cpu, wall0.elapsed())
}

/// What compressing a chunk measured, for the selector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// Level tried.
    pub level: Level,
    /// The LZ4 sample ratio of the chunk, if one was taken.
    pub sample: Option<f64>,
    /// The chunk was compressed in the stream's zstd context.
    pub in_context: bool,
    /// Compressed size.
    pub compressed_len: usize,
    /// CPU time the compression took (the thread's CPU clock, not the wall
    /// clock).
    pub took: Duration,
}

impl Planned {
    /// Compresses the chunk at its level (on the calling thread; zstd
    /// contexts come from the process-wide pool). A result no smaller than
    /// the chunk is dropped and the chunk sent as-is, without a copy.
    pub fn compress(self) -> Encoded {
        counted_as_compression(|| self.compress_here()).0
    }

    fn compress_here(self) -> Encoded {
        let t0 = Instant::now();
        let paired = self
            .explore
            .map(|(probe, current)| explore_sample(probe, current, &self.chunk));
        let planning = self.planning + t0.elapsed();
        let t = Instant::now();
        let raw_len = self.chunk.len();
        if let (Some((ctx, failed)), Level::Zstd(l)) = (&self.context, self.level) {
            let mut c = ctx.lock().unwrap_or_else(|p| p.into_inner());
            if !failed.load(std::sync::atomic::Ordering::Relaxed) {
                match cpu_timed(|| c.compress(l, &self.chunk)) {
                    (Ok(out), took) => {
                        let wall = t.elapsed();
                        return Encoded {
                            level: self.level,
                            encoding: Some(Encoding {
                                codec: CodecId::ZstdStream,
                                raw_len: raw_len as u32,
                            }),
                            trial: Some(Trial {
                                level: self.level,
                                sample: self.sample,
                                in_context: true,
                                compressed_len: out.len(),
                                took,
                            }),
                            payload: Bytes::from(out),
                            raw_len,
                            cpu: planning + wall,
                            paired,
                        };
                    }
                    (Err(e), _) => {
                        // The chunk did not reach the peer: its context
                        // still matches what was sent, but no new one
                        // could follow it. Per-chunk codecs from now on.
                        tracing::warn!(error = %e, "zstd stream context failed");
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        let (compressed, took) = cpu_timed(|| compress_at(self.level, &self.chunk));
        let cpu = planning + t.elapsed();
        let trial = compressed.as_ref().map(|c| Trial {
            level: self.level,
            sample: self.sample,
            in_context: false,
            compressed_len: c.len(),
            took,
        });
        let (level, encoding, payload) = match compressed {
            Some(c) if c.len() + 5 < raw_len => (
                self.level,
                Some(Encoding {
                    codec: self.level.codec(),
                    raw_len: raw_len as u32,
                }),
                Bytes::from(c),
            ),
            // No gain (or no compression): send as-is.
            _ => (Level::None, None, self.chunk),
        };
        Encoded {
            level,
            encoding,
            payload,
            raw_len,
            cpu,
            trial,
            paired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decompress;

    #[test]
    fn what_the_sender_waited_on() {
        let ms = Duration::from_millis;
        // (compress, interval, waited for room, queued, credit short): wait.
        let cases = [
            // Room or credit was short, or data was still queued: the transport.
            ((ms(9), Some(ms(10)), true, 0, false), Wait::Transport),
            ((ms(1), Some(ms(10)), false, 4096, false), Wait::Transport),
            // Compressing filled the interval and the queue ran dry.
            ((ms(9), Some(ms(10)), false, 0, false), Wait::Compressor),
            // An empty queue after a short compression: the gap was elsewhere
            // (a slow application, or data held in the transport's buffers).
            ((ms(1), Some(ms(10)), false, 0, false), Wait::Unknown),
            ((ms(1), None, false, 0, false), Wait::Unknown),
            // Data queued, or room short, while the peer's credit (counted in
            // decoded bytes) ran out: no level changes the raw rate the credit
            // allows, and the link is not what binds.
            ((ms(1), Some(ms(10)), false, 4096, true), Wait::Credit),
            ((ms(1), Some(ms(10)), true, 0, true), Wait::Credit),
            ((ms(9), Some(ms(10)), true, 0, true), Wait::Credit),
            // Short credit says nothing where nothing waited.
            ((ms(9), Some(ms(10)), false, 0, true), Wait::Compressor),
        ];
        for ((compress, interval, room, queued, credit), want) in cases {
            assert_eq!(
                Feedback::judge(compress, interval, room, queued, credit),
                want,
                "compress {compress:?}, interval {interval:?}, room {room}, queued {queued}, credit short {credit}"
            );
        }
    }

    /// A chunk compressed while its thread shares a core with a busy one
    /// takes about twice its CPU time in wall time. The selector's speeds
    /// are per second of CPU, so the trial reports the CPU time: timed by
    /// the wall clock, the level in use looked slower whenever the machine
    /// was busy (docs/compression.md, "Speeds timed by the thread's CPU
    /// clock").
    #[cfg(target_os = "linux")]
    #[test]
    fn a_chunk_is_timed_by_its_cpu_not_by_its_wait_for_a_core() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let Some(cpu) =
            crate::cpu_load::first_allowed_cpu().filter(|&c| crate::cpu_load::pin_to_cpu(c))
        else {
            eprintln!("skipped: this thread cannot be pinned to a CPU");
            return;
        };
        let (running, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let hog = {
            let (running, stop) = (running.clone(), stop.clone());
            std::thread::spawn(move || {
                let pinned = crate::cpu_load::pin_to_cpu(cpu);
                running.store(true, Ordering::Release);
                while pinned && !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                pinned
            })
        };
        while !running.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let data = Bytes::from(crate::corpus::text(128 * 1024, 1));
        let mut e = Encoder::new(Policy::Force(Level::Zstd(3)), crate::CodecId::all_bits());
        let (mut took, mut wall) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..120 {
            let t = Instant::now();
            let out = e.encode(data.clone(), None);
            wall += t.elapsed();
            took += out.trial.expect("a compressed chunk").took;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            hog.join().expect("the busy thread"),
            "the busy thread was not pinned"
        );
        assert!(
            took.as_secs_f64() < 0.75 * wall.as_secs_f64(),
            "sharing a core, 120 chunks took {wall:?}; the trials report {took:?}"
        );
    }

    #[test]
    fn forced_levels_round_trip() {
        let text: Vec<u8> = b"replication log entry 42: ok\n"
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        for level in crate::selector::LADDER {
            let mut e = Encoder::new(Policy::Force(level), crate::CodecId::all_bits());
            let out = e.encode(Bytes::from(text.clone()), None);
            assert_eq!(out.level, level);
            let back = match out.encoding {
                Some(enc) => decompress(enc, &out.payload, 1 << 20).expect("decode"),
                None => out.payload.clone(),
            };
            assert_eq!(&back[..], &text[..]);
        }
    }

    #[test]
    fn uncompressed_path_is_zero_copy() {
        let data = Bytes::from(vec![3u8; 10_000]);
        let mut e = Encoder::new(Policy::Off, crate::CodecId::all_bits());
        let out = e.encode(data.clone(), Some(1e6));
        assert_eq!(out.payload.as_ptr(), data.as_ptr());
    }

    #[test]
    fn codec_not_negotiated_falls_back_to_none() {
        let mut e = Encoder::new(Policy::Force(Level::Zstd(3)), crate::CodecId::None.bit());
        let out = e.encode(Bytes::from(vec![0u8; 10_000]), None);
        assert_eq!(out.level, Level::None);
        assert!(out.encoding.is_none());
    }

    /// Checks that what a selector learns of zstd-1's ratio over LZ4's from
    /// the explorations of a stream at LZ4 (one on every chunk of
    /// `chunks`, four times over) stays within 30 % of what the whole
    /// chunks show over the second half; the whole chunks must show a
    /// ratio in `whole_in`, or the data does not test what it is for.
    fn assert_zstd_over_lz4_learnt(chunks: &[Bytes], whole_in: std::ops::Range<f64>) {
        let wire = |c: &[u8], l: Level| compress_at(l, c).map_or(c.len(), |o| o.len()) as f64;
        let lz4: f64 = chunks.iter().map(|c| wire(c, Level::Lz4)).sum();
        let zstd: f64 = chunks.iter().map(|c| wire(c, Level::Zstd(1))).sum();
        let whole = lz4 / zstd;
        assert!(
            whole_in.contains(&whole),
            "zstd-1 over LZ4 on whole chunks: {whole}"
        );
        let mut s = crate::selector::Selector::new(crate::CodecId::all_bits());
        let mut learnt = Vec::new();
        for _ in 0..4 {
            for c in chunks {
                s.observe_measured(&explore_sample(Level::Zstd(1), Level::Lz4, c));
                let ratio = |l: Level| s.estimate(l).map_or(1.0, |(_, r)| r);
                learnt.push(ratio(Level::Zstd(1)) / ratio(Level::Lz4));
            }
        }
        let late = &learnt[learnt.len() / 2..];
        let (lo, hi) = late.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
        assert!(
            lo > whole / 1.3 && hi < whole * 1.3,
            "zstd-1 over LZ4 learnt {lo:.2}..{hi:.2}, whole chunks {whole:.2}"
        );
    }

    /// Text stored four bytes a character (UTF-32, as Python keeps strings
    /// with a character beyond Latin-1, and a large share of a process
    /// memory image): every 4-byte window holds one character. `lz4_flex`
    /// compresses an input under 65,535 bytes with a 4-byte hash, which sees one
    /// character here and finds poor matches: LZ4 shrinks 32 KiB of it 2.1
    /// times and 64 KiB or more 5.8-6.0 times. An exploration sample must be
    /// compressed the way the stream's chunks are, or zstd's ratio over
    /// LZ4's is learnt at 4.2-4.4 from 32 KiB samples where whole 128 KiB
    /// chunks show 1.6 (on a real memory image a stream learnt 2.45 where
    /// its chunks show 1.4-1.5), and zstd-1 takes over where it costs about
    /// twice LZ4's CPU for a third less on the wire.
    #[test]
    fn zstd_over_lz4_is_learnt_on_samples_compressed_as_whole_chunks_are() {
        let text = crate::corpus::text(2 << 20, 11);
        let wide: Vec<u8> = text.iter().flat_map(|&c| [c, 0, 0, 0]).collect();
        let chunks: Vec<Bytes> = wide
            .chunks_exact(128 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        assert_zstd_over_lz4_learnt(&chunks, 1.2..2.2);
    }

    /// A filesystem image: one chunk in three an empty extent. Zeros are
    /// nearly free to either codec, so they hardly weigh on the link, and
    /// what zstd-1 gains over LZ4 is what it gains on the files. Averaging
    /// each sample's quotient instead, one sample of zeros (LZ4 268 bytes,
    /// zstd-1 20 from 64 KiB) weighed as much as eight samples of text.
    #[test]
    fn empty_extents_do_not_decide_what_zstd_gains_over_lz4() {
        let text = crate::corpus::text(2 << 20, 5);
        let chunks: Vec<Bytes> = text
            .chunks_exact(128 * 1024)
            .enumerate()
            .map(|(k, c)| {
                if k % 3 == 0 {
                    Bytes::from(vec![0u8; c.len()])
                } else {
                    Bytes::copy_from_slice(c)
                }
            })
            .collect();
        assert_zstd_over_lz4_learnt(&chunks, 1.1..2.2);
    }

    /// A stream that went uncompressed because LZ4 was measured slower than
    /// the link (say under CPU contention) comes back to compressing once
    /// exploration sees LZ4 fast again: exploration also runs from none.
    #[test]
    fn compression_comes_back_after_none_dominated() {
        let text: Vec<u8> = (0..131_072u32)
            .map(|i| b"replication log entry ok\n"[(i % 25) as usize] ^ ((i / 4096) as u8 & 1))
            .collect();
        let chunk = Bytes::from(text);
        let mut e = Encoder::new(Policy::Adaptive, crate::CodecId::all_bits());
        // LZ4 (and every zstd level) was measured at 5 MB/s, below the
        // 12.5 MB/s link (100 Mbit/s).
        let raw = 32 * 1024;
        for level in crate::selector::LADDER.iter().skip(1) {
            for _ in 0..20 {
                e.selector_mut().observe_pair(
                    *level,
                    raw,
                    raw / 2,
                    raw / 2,
                    Duration::from_secs_f64(raw as f64 / 5e6),
                    raw,
                    Duration::ZERO,
                );
            }
        }
        let link = Some(12.5e6);
        assert!(e.selector().none_dominates(link));
        let mut last = Level::None;
        for _ in 0..(crate::selector::EXPLORE_EVERY * 12) {
            last = e.encode(chunk.clone(), link).level;
        }
        let (lz4_speed, _) = e.selector().estimate(Level::Lz4).unwrap_or((0.0, 1.0));
        assert!(lz4_speed > 12.5e6, "LZ4 still believed at {lz4_speed} B/s");
        assert_ne!(last, Level::None);
    }

    /// Data that compresses only across chunks: every 128 KiB block of
    /// random bytes comes twice in a row (the already-compressed corpus
    /// of `compression-e2e` holds identical files side by side). Alone each
    /// chunk looks incompressible; in the stream's zstd context every
    /// second one costs next to nothing. Chunks sent as-is are not in the
    /// context, so a probe of one chunk after them has nothing to refer to:
    /// the probe must take the chunk before it into the context too.
    #[test]
    fn data_that_compresses_only_across_chunks_is_found_after_sending_as_is() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = || random_bytes(&mut x, 131_072);
        let mut e = Encoder::new(Policy::Adaptive, crate::CodecId::all_bits());
        // A 100 Mbit/s link that the data waits for.
        let link = Some(12.5e6);
        let fb = waiting_for(link);
        let chunks = crate::selector::EXPLORE_EVERY as usize * 12;
        let (mut raw, mut wire) = (0usize, 0usize);
        let mut pair = Bytes::new();
        for n in 0..chunks {
            if n % 2 == 0 {
                pair = block();
            }
            let chunk = pair.clone();
            let out = e.plan_alone(chunk, link, fb).compress();
            e.observe(&out);
            if n >= chunks / 2 {
                raw += out.raw_len;
                wire += out.payload.len();
            }
        }
        let ratio = raw as f64 / wire as f64;
        assert!(
            ratio > 1.5,
            "the second half went out at {ratio:.2}x; in the context it is nearly 2x"
        );
    }

    /// Bytes drawn at random from 64 symbols: LZ4 finds no repeat, zstd's
    /// literal coding packs them into about 6 bits each. They come after
    /// 64 MiB of random bytes, long enough for the context probes, which
    /// found nothing there, to come hundreds of chunks apart: on a link the
    /// data waits for, the skewed bytes are compressed from the sample of
    /// their own chunks, not at the next probe. Bytes drawn from all 256
    /// values are not compressed.
    #[test]
    fn data_only_entropy_coding_compresses_is_compressed_on_a_slow_link() {
        let every = crate::selector::EXPLORE_EVERY as usize;
        let run = |alphabet: u64| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut chunk = |alphabet: u64| -> Bytes {
                (0..131_072)
                    .map(|_| (xorshift(&mut x) % alphabet) as u8)
                    .collect::<Vec<u8>>()
                    .into()
            };
            let (lz4, _) = sample_ratios(&chunk(alphabet));
            assert!(lz4 < crate::selector::INCOMPRESSIBLE_RATIO, "LZ4 {lz4}");
            let mut e = Encoder::new(Policy::Adaptive, crate::CodecId::all_bits());
            let link = Some(12.5e6);
            let fb = waiting_for(link);
            for _ in 0..every * 16 {
                let out = e.plan_alone(chunk(256), link, fb).compress();
                e.observe(&out);
            }
            let (mut raw, mut wire) = (0usize, 0usize);
            for n in 0..every * 6 {
                let out = e.plan_alone(chunk(alphabet), link, fb).compress();
                e.observe(&out);
                if n >= every {
                    raw += out.raw_len;
                    wire += out.payload.len();
                }
            }
            raw as f64 / wire as f64
        };
        let skewed = run(64);
        assert!(skewed > 1.2, "64 symbols went out at {skewed:.3}x");
        let random = run(256);
        assert!(random < 1.01, "256 symbols went out at {random:.3}x");
        assert!((entropy_ratio(&[7u8; 4096]) - 800.0).abs() < 1e-9);
        // Under a full sample the count reads random bytes as skewed, so
        // it is not asked.
        let mut x = 7u64;
        let small: Vec<u8> = (0..400).map(|_| xorshift(&mut x) as u8).collect();
        assert!(
            entropy_ratio(&small) > 1.05,
            "400 random bytes read {}",
            entropy_ratio(&small)
        );
        assert!(!sample_ratios(&small).1);
    }

    /// A stream of random bytes on a link compression would pay on, were
    /// the data compressible: once as-is is steady, one chunk in
    /// SAMPLE_ONE_IN is sampled; compressible data that follows is
    /// sampled, and compressed, within SAMPLE_ONE_IN chunks.
    #[test]
    fn a_steady_as_is_stream_samples_one_chunk_in_four_and_still_sees_a_change() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = || random_bytes(&mut x, 65_536);
        let mut e = Encoder::new(Policy::Adaptive, crate::CodecId::all_bits());
        let link = Some(1.25e6);
        let fb = waiting_for(link);
        let mut sampled = Vec::new();
        let mut explored = 0;
        for n in 0..STEADY_AS_IS + 32 {
            let planned = e.plan(random(), link, fb);
            sampled.push(planned.sample.is_some());
            if n >= STEADY_AS_IS {
                explored += usize::from(planned.explore.is_some());
            }
            let out = planned.compress();
            assert_eq!(out.level, Level::None);
            e.observe(&out);
        }
        let steady = &sampled[STEADY_AS_IS as usize..];
        assert!(sampled[..STEADY_AS_IS as usize].iter().all(|s| *s));
        assert_eq!(
            steady.iter().filter(|s| **s).count(),
            32 / 4,
            "sampled: {steady:?}"
        );
        assert_eq!(explored, 1, "exploration every 32 chunks, steady or not");
        let text: Bytes = b"replication log entry 42: ok\n"
            .iter()
            .cycle()
            .take(65_536)
            .copied()
            .collect::<Vec<u8>>()
            .into();
        let levels: Vec<Level> = (0..SAMPLE_ONE_IN)
            .map(|_| {
                let out = e.plan(text.clone(), link, fb).compress();
                e.observe(&out);
                out.level
            })
            .collect();
        assert!(
            levels.iter().any(|l| *l != Level::None),
            "compressible data went as-is: {levels:?}"
        );
    }

    /// What a sender whose data waits for a link of `link` bytes/s sees.
    fn waiting_for(link: Option<f64>) -> Feedback {
        Feedback {
            wait: Wait::Transport,
            wire_rate: link,
        }
    }

    /// `len` (a multiple of 8) pseudo-random bytes from the xorshift
    /// state `x`.
    fn random_bytes(x: &mut u64, len: usize) -> Bytes {
        (0..len / 8)
            .flat_map(|_| xorshift(x).to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }

    /// The next number of a xorshift64 sequence (test data, not security).
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}
