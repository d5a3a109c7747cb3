//! Codecs for DATA payloads: none, lz4 and zstd, with bounded decoding.
//!
//! Decoding never allocates more than the declared raw length, and the declared
//! raw length is checked against the negotiated maximum before anything is
//! allocated, so a decompression bomb costs the receiver nothing.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::frame::Encoding;

/// Codec identifiers carried in DATA frames and negotiated in HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CodecId {
    /// No compression.
    None = 0,
    /// LZ4 block format (lz4_flex), without a size prefix.
    Lz4 = 1,
    /// Zstandard frame (any level; the level is the sender's choice).
    Zstd = 2,
    /// The next flushed part of a zstd frame that runs across the stream's
    /// DATA frames, decoded with the stream's own context (window at most
    /// 2 MiB): see [`crate::zstd_stream`].
    ZstdStream = 3,
}

impl CodecId {
    /// All codecs this implementation can decode.
    pub const ALL: [CodecId; 4] = [
        CodecId::None,
        CodecId::Lz4,
        CodecId::Zstd,
        CodecId::ZstdStream,
    ];

    /// Parses a wire codec id.
    pub fn from_u8(v: u8) -> Option<CodecId> {
        match v {
            0 => Some(CodecId::None),
            1 => Some(CodecId::Lz4),
            2 => Some(CodecId::Zstd),
            3 => Some(CodecId::ZstdStream),
            _ => None,
        }
    }

    /// The bit for this codec in HELLO's codec bitmap.
    pub fn bit(self) -> u16 {
        1 << (self as u8)
    }

    /// Bitmap with every codec this implementation supports.
    pub fn all_bits() -> u16 {
        Self::ALL.iter().fold(0, |acc, c| acc | c.bit())
    }

    /// Stable lower-case name, used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::None => "none",
            CodecId::Lz4 => "lz4",
            CodecId::Zstd => "zstd",
            CodecId::ZstdStream => "zstd-stream",
        }
    }
}

/// Decoding a compressed payload failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame declares a decoded size above the limit (decompression bomb).
    #[error("declared decoded size {declared} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared raw length.
        declared: u64,
        /// Limit in force.
        max: u64,
    },
    /// The payload is corrupt or decodes to a different length than declared.
    #[error("{codec} payload is corrupt: {what}")]
    Corrupt {
        /// Codec name.
        codec: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The codec was not negotiated.
    #[error("codec {0} was not negotiated")]
    NotNegotiated(&'static str),
}

impl CodecError {
    /// The wire error code a connection closes with.
    pub fn code(&self) -> ErrorCode {
        match self {
            CodecError::TooLarge { .. } => ErrorCode::DecompressionLimit,
            _ => ErrorCode::CompressionError,
        }
    }
}

/// Compresses `raw` with `codec` (zstd at `level`). Returns the encoded bytes.
/// For [`CodecId::ZstdStream`] the result is the first chunk of a new
/// stream context (a context that goes on is a
/// [`crate::zstd_stream::StreamCompressor`]).
///
/// # Errors
/// zstd reports an internal error (for example an invalid level).
pub fn compress(codec: CodecId, level: i32, raw: &[u8]) -> Result<Bytes, CodecError> {
    match codec {
        CodecId::ZstdStream => crate::zstd_stream::first_chunk(level, raw).map(Bytes::from),
        CodecId::None => Ok(Bytes::copy_from_slice(raw)),
        CodecId::Lz4 => Ok(Bytes::from(lz4_flex::block::compress(raw))),
        CodecId::Zstd => zstd::bulk::compress(raw, level)
            .map(Bytes::from)
            .map_err(|e| CodecError::Corrupt {
                codec: "zstd",
                what: e.to_string(),
            }),
    }
}

thread_local! {
    /// One zstd decompression context per thread, reused: creating one
    /// allocates and clears about 100 KiB, which for a 1 KiB message costs
    /// more than decoding it (it showed in the sidecar's per-request
    /// profile). A single-pass decode into a buffer of the declared size
    /// keeps no window, so the context stays small whatever it decoded.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes one zstd frame of at most `capacity` bytes with this thread's
/// context (a new one if the thread has none or it is in use).
fn zstd_decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::decompress(payload, capacity);
        };
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(payload, capacity)
    })
}

/// Refuses a declared decoded size above `max_decoded`, before anything is
/// allocated or decoded.
///
/// # Errors
/// [`CodecError::TooLarge`].
pub fn check_declared(enc: Encoding, max_decoded: u32) -> Result<(), CodecError> {
    if enc.raw_len > max_decoded {
        return Err(CodecError::TooLarge {
            declared: enc.raw_len as u64,
            max: max_decoded as u64,
        });
    }
    Ok(())
}

/// Decodes `payload` according to `enc`, refusing to produce more than
/// `max_decoded` bytes. A [`CodecId::ZstdStream`] payload is decoded as the
/// first of its stream (later ones need the stream's
/// [`crate::zstd_stream::StreamDecoder`]).
///
/// # Errors
/// [`CodecError::TooLarge`] before any allocation if the declared size is above the
/// limit; [`CodecError::Corrupt`] if decoding fails or yields another length.
pub fn decompress(enc: Encoding, payload: &[u8], max_decoded: u32) -> Result<Bytes, CodecError> {
    check_declared(enc, max_decoded)?;
    let raw_len = enc.raw_len as usize;
    match enc.codec {
        CodecId::None => {
            if payload.len() != raw_len {
                return Err(CodecError::Corrupt {
                    codec: "none",
                    what: "length mismatch".into(),
                });
            }
            Ok(Bytes::copy_from_slice(payload))
        }
        CodecId::Lz4 => {
            // The output buffer is exactly `raw_len` long: decoding stops with
            // an error rather than write past it.
            let out =
                lz4_flex::block::decompress(payload, raw_len).map_err(|e| CodecError::Corrupt {
                    codec: "lz4",
                    what: e.to_string(),
                })?;
            let n = out.len();
            if n != raw_len {
                return Err(CodecError::Corrupt {
                    codec: "lz4",
                    what: format!("decoded {n} bytes, declared {raw_len}"),
                });
            }
            Ok(Bytes::from(out))
        }
        CodecId::Zstd => {
            // The capacity bounds the output: zstd fails rather than grow past it.
            let out = zstd_decompress(payload, raw_len).map_err(|e| CodecError::Corrupt {
                codec: "zstd",
                what: e.to_string(),
            })?;
            if out.len() != raw_len {
                return Err(CodecError::Corrupt {
                    codec: "zstd",
                    what: format!("decoded {} bytes, declared {raw_len}", out.len()),
                });
            }
            Ok(Bytes::from(out))
        }
        CodecId::ZstdStream => crate::zstd_stream::StreamDecoder::new()?
            .decode(payload, raw_len)
            .map(Bytes::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<u8> {
        (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn round_trip_every_codec() {
        let raw = corpus();
        for codec in CodecId::ALL {
            let enc_bytes = compress(codec, 3, &raw).expect("compress");
            let enc = Encoding {
                codec,
                raw_len: raw.len() as u32,
            };
            let out = decompress(enc, &enc_bytes, 1 << 20).expect("decompress");
            assert_eq!(&out[..], &raw[..], "{codec:?}");
        }
    }

    /// The thread's reused zstd context decodes good frames after a bad
    /// one and after a lying size, as a fresh one would.
    #[test]
    fn the_reused_zstd_context_recovers_from_errors() {
        let raw = corpus();
        let good = compress(CodecId::Zstd, 3, &raw).expect("compress");
        let enc = Encoding {
            codec: CodecId::Zstd,
            raw_len: raw.len() as u32,
        };
        let mut bad = good.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        bad.truncate(bad.len() - 3);
        let short = Encoding {
            codec: CodecId::Zstd,
            raw_len: 1000,
        };
        for _ in 0..3 {
            assert_eq!(
                &decompress(enc, &good, 1 << 20).expect("good")[..],
                &raw[..]
            );
            assert!(decompress(enc, &bad, 1 << 20).is_err());
            assert!(decompress(short, &good, 1 << 20).is_err());
        }
    }

    #[test]
    fn bomb_is_rejected_before_allocation() {
        let zeros = vec![0u8; 4 << 20];
        for codec in [CodecId::Lz4, CodecId::Zstd] {
            let enc_bytes = compress(codec, 3, &zeros).expect("compress");
            // Honest declaration above the limit.
            let err = decompress(
                Encoding {
                    codec,
                    raw_len: zeros.len() as u32,
                },
                &enc_bytes,
                1 << 20,
            )
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::DecompressionLimit);
            // Lying declaration below the limit: decoding stops at the declared size.
            let err = decompress(
                Encoding {
                    codec,
                    raw_len: 1 << 20,
                },
                &enc_bytes,
                1 << 20,
            )
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::CompressionError, "{codec:?}");
        }
    }

    #[test]
    fn corrupt_payload_is_an_error() {
        for codec in [CodecId::Lz4, CodecId::Zstd] {
            let err = decompress(
                Encoding {
                    codec,
                    raw_len: 1000,
                },
                &[0xff; 64],
                1 << 20,
            )
            .unwrap_err();
            assert_eq!(err.code(), ErrorCode::CompressionError);
        }
    }
}
