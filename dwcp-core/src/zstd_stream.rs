//! Zstandard with a context that runs across a stream's chunks
//! ([`CodecId::ZstdStream`](crate::CodecId::ZstdStream)).
//!
//! Compressing each chunk alone forgets everything before it: on the
//! corpora of `dwcp-bench compression-e2e`, zstd-3 on separate 128 KiB
//! chunks reaches 4.48 (memory image), 4.01 (filesystem image), 4.44 (logs)
//! and 1.02 (already-compressed media), where one zstd stream with a 2 MiB
//! window over the same chunks reaches 5.18, 5.24, 5.21 and 1.44, at the
//! same speed. That is what a `zstd` pipe has over DWCP.
//!
//! So a stream may keep one zstd frame open for its whole life: each chunk is
//! fed to it and flushed, and the flushed bytes are one DATA payload. The
//! receiver feeds the payloads, in order, to a decompression context of its
//! own for the stream. The window is [`WINDOW_LOG`] (2 MiB) on both sides;
//! a frame asking for more fails to decode.
//!
//! Contexts cost memory (the window on both sides, plus the compressor's
//! tables: 3.5 MiB at zstd-3, 12.7 MiB at zstd-9), so they are rationed:
//! - a sender holds at most [`SENDER_CONTEXTS`] compressors in the whole
//!   process, and only for levels up to [`MAX_LEVEL`] (zstd-19's tables
//!   are 80 MiB);
//! - a receiver keeps at most [`RECEIVER_CONTEXTS`] decompressors per
//!   connection; a peer that needs more is a protocol violation. Since
//!   [`SENDER_CONTEXTS`] ≤ [`RECEIVER_CONTEXTS`], a DWCP sender never does.
//!
//! Chunks that are not compressed this way (sent as-is, LZ4, or zstd alone)
//! do not enter the context on either side, so a stream can switch between
//! codecs chunk by chunk.

use std::sync::atomic::{AtomicUsize, Ordering};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

use crate::codec::CodecError;

/// Log2 of the window, on both sides (2 MiB).
pub const WINDOW_LOG: u32 = 21;
/// Highest zstd level compressed with a stream context.
pub const MAX_LEVEL: i32 = 9;
/// Most stream compressors alive in one process.
pub const SENDER_CONTEXTS: usize = 4;
/// Most stream decompressors one connection keeps (a protocol limit).
pub const RECEIVER_CONTEXTS: usize = 4;
/// Smallest chunk worth compressing with a stream context: small writes
/// (interactive messages) stay on per-chunk codecs and take no context.
pub const MIN_CHUNK: usize = 16 * 1024;

static SENDERS: AtomicUsize = AtomicUsize::new(0);

/// Stream compressors alive in this process.
pub fn senders_alive() -> usize {
    SENDERS.load(Ordering::Relaxed)
}

fn zstd_error(code: usize) -> CodecError {
    CodecError::Corrupt {
        codec: "zstd-stream",
        what: zstd_safe::get_error_name(code).to_string(),
    }
}

/// The sending side: one zstd frame kept open across a stream's chunks.
pub struct StreamCompressor {
    cctx: CCtx<'static>,
    level: i32,
}

impl std::fmt::Debug for StreamCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCompressor")
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl StreamCompressor {
    /// A compressor at `level`, if one of the process's
    /// [`SENDER_CONTEXTS`] is free and the level is at most [`MAX_LEVEL`].
    pub fn try_new(level: i32) -> Option<StreamCompressor> {
        if !(1..=MAX_LEVEL).contains(&level) {
            return None;
        }
        SENDERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SENDER_CONTEXTS).then_some(n + 1)
            })
            .ok()?;
        // From here the slot is ours: give it back if the context cannot
        // be set up (afterwards `Drop` does).
        match new_cctx(level) {
            Ok(cctx) => Some(StreamCompressor { cctx, level }),
            Err(_) => {
                SENDERS.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// Compresses `chunk` at `level` (levels may change between chunks) and
    /// flushes: the result decodes to exactly `chunk` given every earlier
    /// result of this compressor. The bytes enter the context whatever the
    /// result's size, so it must be sent.
    ///
    /// # Errors
    /// zstd failed; the compressor must not be used again (the peer's
    /// context would no longer match).
    pub fn compress(&mut self, level: i32, chunk: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(chunk.len()) + 32);
        let level = level.clamp(1, MAX_LEVEL);
        if level != self.level {
            // Single-threaded zstd reads the level at a frame's start only
            // (a level set mid-frame is ignored): end the frame in this
            // payload and start a new one at the new level. The receiver's
            // context reads on into the next frame; the history before the
            // change is lost, so the selector's dwell keeps changes rare.
            drive(
                &mut self.cctx,
                &[],
                zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
                &mut out,
            )?;
            self.cctx
                .reset(zstd_safe::ResetDirective::SessionOnly)
                .map_err(zstd_error)?;
            self.cctx
                .set_parameter(CParameter::CompressionLevel(level))
                .map_err(zstd_error)?;
            self.level = level;
        }
        flush_into(&mut self.cctx, chunk, out)
    }

    /// The level the open frame compresses at.
    pub fn level(&self) -> i32 {
        self.level
    }
}

impl Drop for StreamCompressor {
    fn drop(&mut self) {
        SENDERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `chunk` compressed as the first chunk of a stream context at `level`,
/// without taking one of the rationed compressors (for
/// [`crate::codec::compress`]).
///
/// # Errors
/// zstd failed.
pub fn first_chunk(level: i32, chunk: &[u8]) -> Result<Vec<u8>, CodecError> {
    flush_into(
        &mut new_cctx(level)?,
        chunk,
        Vec::with_capacity(zstd_safe::compress_bound(chunk.len()) + 32),
    )
}

/// A compression context at `level` with the window of [`WINDOW_LOG`].
fn new_cctx(level: i32) -> Result<CCtx<'static>, CodecError> {
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_error)?;
    cctx.set_parameter(CParameter::WindowLog(WINDOW_LOG))
        .map_err(zstd_error)?;
    Ok(cctx)
}

/// Runs `input` through the frame with `directive` (flush, or end the
/// frame) until zstd has nothing left to write, appending to `out`.
fn drive(
    cctx: &mut CCtx<'static>,
    input: &[u8],
    directive: zstd_safe::zstd_sys::ZSTD_EndDirective,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let mut input = InBuffer::around(input);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 * 1024);
        }
        let pos = out.len();
        let mut ob = OutBuffer::around_pos(out, pos);
        let left = cctx
            .compress_stream2(&mut ob, &mut input, directive)
            .map_err(zstd_error)?;
        if left == 0 && input.pos == input.src.len() {
            return Ok(());
        }
    }
}

/// Feeds `chunk` to the frame and flushes, appending to `out`.
fn flush_into(
    cctx: &mut CCtx<'static>,
    chunk: &[u8],
    mut out: Vec<u8>,
) -> Result<Vec<u8>, CodecError> {
    drive(
        cctx,
        chunk,
        zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
        &mut out,
    )?;
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
    }
    Ok(out)
}

/// The receiving side: the stream's decompression context.
pub struct StreamDecoder {
    dctx: DCtx<'static>,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder").finish_non_exhaustive()
    }
}

impl StreamDecoder {
    /// A decoder accepting windows of at most [`WINDOW_LOG`].
    ///
    /// # Errors
    /// zstd could not set the limit.
    pub fn new() -> Result<StreamDecoder, CodecError> {
        let mut dctx = DCtx::create();
        dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))
            .map_err(zstd_error)?;
        Ok(StreamDecoder { dctx })
    }

    /// Decodes one payload, which must yield exactly `raw_len` bytes and be
    /// consumed whole. Output never grows past `raw_len` (the caller checks
    /// `raw_len` against its limit first).
    ///
    /// # Errors
    /// [`CodecError::Corrupt`] if the payload is not the continuation of
    /// this stream's frame, decodes to another length, or needs a larger
    /// window. The decoder must not be used again.
    pub fn decode(&mut self, payload: &[u8], raw_len: usize) -> Result<Vec<u8>, CodecError> {
        let corrupt = |what: String| CodecError::Corrupt {
            codec: "zstd-stream",
            what,
        };
        // One byte of room past the declared length: a payload that decodes
        // to more shows itself there instead of staying in the context.
        let mut out = vec![0u8; raw_len + 1];
        let mut input = InBuffer::around(payload);
        let mut ob = OutBuffer::around(&mut out[..]);
        loop {
            let before = (input.pos, ob.pos());
            self.dctx
                .decompress_stream(&mut ob, &mut input)
                .map_err(zstd_error)?;
            if ob.pos() > raw_len {
                return Err(corrupt(format!(
                    "decodes to more than the declared {raw_len} bytes"
                )));
            }
            if (input.pos, ob.pos()) == before {
                break;
            }
        }
        let n = ob.pos();
        if input.pos != payload.len() {
            return Err(corrupt(format!(
                "{} of {} payload bytes decoded",
                input.pos,
                payload.len()
            )));
        }
        if n != raw_len {
            return Err(corrupt(format!("decoded {n} bytes, declared {raw_len}")));
        }
        out.truncate(raw_len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        // Log-like lines, repeating across chunk borders.
        let mut s = seed;
        let mut v = Vec::with_capacity(n + 100);
        while v.len() < n {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let line = format!(
                "2026-12-04T10:{:02}:{:02} GET /usr/share/doc/pkg{}/file{} 200 {}\n",
                (s >> 10) % 60,
                (s >> 20) % 60,
                (s >> 30) % 50,
                (s >> 40) % 20,
                (s >> 50) % 100_000
            );
            v.extend_from_slice(line.as_bytes());
        }
        v.truncate(n);
        v
    }

    /// A compressor, waiting for a slot while other tests of this process
    /// hold them all.
    fn compressor(level: i32) -> StreamCompressor {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(c) = StreamCompressor::try_new(level) {
                return c;
            }
            assert!(std::time::Instant::now() < deadline, "no compressor slot");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    #[test]
    fn chunks_decode_in_order_across_level_changes_and_mixed_data() {
        let mut c = compressor(1);
        let mut d = StreamDecoder::new().expect("decoder");
        let mut wire = 0;
        let mut raw = 0;
        for i in 0..40u64 {
            let chunk = if i % 7 == 3 {
                random(100_000, i)
            } else {
                text(128 * 1024, i % 5)
            };
            let level = [1, 3, 9, 6][(i as usize / 5) % 4];
            let out = c.compress(level, &chunk).expect("compress");
            // Incompressible data costs a few bytes of block headers.
            assert!(
                out.len() <= chunk.len() + 32,
                "{} > {}",
                out.len(),
                chunk.len()
            );
            assert_eq!(d.decode(&out, chunk.len()).expect("decode"), chunk);
            wire += out.len();
            raw += chunk.len();
        }
        assert!(raw > 3 * wire, "ratio {}", raw as f64 / wire as f64);
    }

    /// A level change takes effect (single-threaded zstd ignores a level
    /// set mid-frame): the chunk after the change is the end of the old
    /// frame followed by exactly what a new context at that level makes
    /// of it, and it decodes in the same receiving context.
    #[test]
    fn a_level_change_starts_a_frame_at_the_new_level() {
        let mut c = compressor(1);
        let mut d = StreamDecoder::new().expect("decoder");
        let a = text(128 * 1024, 1);
        let b = text(128 * 1024, 2);
        let pa = c.compress(1, &a).expect("a");
        assert_eq!(d.decode(&pa, a.len()).expect("a back"), a);
        let pb = c.compress(9, &b).expect("b");
        assert_eq!(c.level(), 9);
        let fresh = first_chunk(9, &b).expect("fresh");
        assert!(pb.ends_with(&fresh), "{} vs {}", pb.len(), fresh.len());
        assert!(pb.len() <= fresh.len() + 8);
        assert!(fresh.len() < first_chunk(1, &b).expect("level 1").len());
        assert_eq!(d.decode(&pb, b.len()).expect("b back"), b);
    }

    /// The point of the context: a chunk that repeats an earlier one costs
    /// almost nothing, where compressing it alone costs its full ratio.
    #[test]
    fn a_repeated_chunk_is_nearly_free() {
        let mut c = compressor(3);
        let chunk = random(64 * 1024, 9);
        let first = c.compress(3, &chunk).expect("first");
        let again = c.compress(3, &chunk).expect("again");
        assert!(first.len() > 60_000);
        assert!(again.len() < 200, "repeat cost {} bytes", again.len());
    }

    #[test]
    fn out_of_order_truncated_or_lying_payloads_are_errors() {
        let mut c = compressor(3);
        let a = text(50_000, 1);
        let b = text(50_000, 2);
        let pa = c.compress(3, &a).expect("a");
        let pb = c.compress(3, &b).expect("b");
        // A decoder that never saw the frame's start.
        assert!(StreamDecoder::new()
            .expect("d")
            .decode(&pb, b.len())
            .is_err());
        // A lying length, short and long.
        assert!(StreamDecoder::new()
            .expect("d")
            .decode(&pa, a.len() - 1)
            .is_err());
        assert!(StreamDecoder::new()
            .expect("d")
            .decode(&pa, a.len() + 1)
            .is_err());
        // A payload cut short.
        assert!(StreamDecoder::new()
            .expect("d")
            .decode(&pa[..pa.len() - 10], a.len())
            .is_err());
        // Garbage.
        assert!(StreamDecoder::new()
            .expect("d")
            .decode(&[0x55; 100], 1000)
            .is_err());
    }

    /// A frame whose window is larger than [`WINDOW_LOG`] is refused, not
    /// decoded into a larger allocation.
    #[test]
    fn a_larger_window_is_refused() {
        let data = text(300_000, 3);
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(3))
            .expect("level");
        cctx.set_parameter(CParameter::WindowLog(WINDOW_LOG + 2))
            .expect("window");
        let mut out = vec![0u8; zstd_safe::compress_bound(data.len())];
        let mut ob = OutBuffer::around(&mut out[..]);
        let mut input = InBuffer::around(&data[..]);
        cctx.compress_stream2(
            &mut ob,
            &mut input,
            zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
        )
        .expect("compress");
        let n = ob.pos();
        let err = StreamDecoder::new()
            .expect("d")
            .decode(&out[..n], data.len())
            .unwrap_err();
        assert!(err.to_string().contains("zstd-stream"), "{err}");
    }

    #[test]
    fn compressors_are_rationed_and_given_back() {
        assert!(
            StreamCompressor::try_new(19).is_none(),
            "level above MAX_LEVEL"
        );
        // Other tests hold slots meanwhile: take what is left, then check
        // one more is refused and one comes back when dropped.
        let mut held: Vec<_> = (0..SENDER_CONTEXTS).map(|_| compressor(1)).collect();
        assert!(StreamCompressor::try_new(1).is_none());
        held.pop();
        assert!(StreamCompressor::try_new(1).is_some());
    }
}
