//! HELLO: the first frame each side sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::FrameError;

/// The four magic bytes at the start of HELLO.
pub const MAGIC: [u8; 4] = *b"DWCP";
/// Fixed part of the HELLO payload.
const FIXED_LEN: usize = 38;
/// Longest HELLO accepted (the fixed part plus room for extensions, which are ignored).
pub const MAX_HELLO_LEN: usize = 1024;

/// Capability bits announced in HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// DATA frames may be compressed (codec id other than none).
    pub const COMPRESSION: Capabilities = Capabilities(1 << 0);
    /// OPEN class, weight and priority are honoured by the sender's scheduler.
    pub const STREAM_CLASSES: Capabilities = Capabilities(1 << 1);
    /// PING frames are answered (keepalive and RTT).
    pub const KEEPALIVE: Capabilities = Capabilities(1 << 2);
    /// Graceful GOAWAY drain.
    pub const GRACEFUL_DRAIN: Capabilities = Capabilities(1 << 3);

    /// Everything this implementation supports.
    pub const ALL: Capabilities = Capabilities(0b1111);
    /// No capabilities.
    pub const NONE: Capabilities = Capabilities(0);

    /// True if every bit of `other` is set in `self`.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of `self` missing from `other`.
    pub fn missing_from(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
    }

    /// Human-readable names of the set bits.
    pub fn names(self) -> Vec<String> {
        let known = [
            (Self::COMPRESSION, "compression"),
            (Self::STREAM_CLASSES, "stream-classes"),
            (Self::KEEPALIVE, "keepalive"),
            (Self::GRACEFUL_DRAIN, "graceful-drain"),
        ];
        (0..32)
            .filter(|b| self.0 & (1 << b) != 0)
            .map(|b| {
                known
                    .iter()
                    .find(|(c, _)| c.0 == 1 << b)
                    .map(|(_, n)| (*n).to_string())
                    .unwrap_or_else(|| format!("bit{b}"))
            })
            .collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        Capabilities(self.0 | rhs.0)
    }
}

/// Handshake parameters. Each value is what the *sender* of HELLO accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version spoken.
    pub min_version: u16,
    /// Highest protocol version spoken.
    pub max_version: u16,
    /// Capabilities offered.
    pub capabilities: Capabilities,
    /// Capabilities the peer must offer, or the handshake fails.
    pub required: Capabilities,
    /// Bitmap of codec ids this side can decode (bit n = codec id n).
    pub codecs: u16,
    /// Largest frame payload this side accepts.
    pub max_frame_payload: u32,
    /// Largest decoded size of one compressed DATA frame this side accepts.
    pub max_decoded_frame: u32,
    /// Initial credit for each stream (bytes the peer may send before a WINDOW).
    pub initial_stream_window: u32,
    /// Initial credit for the connection as a whole.
    pub initial_connection_window: u32,
    /// Most streams the peer may have open towards this side at once.
    pub max_streams: u32,
}

impl Hello {
    pub(crate) fn decode(mut p: Bytes) -> Result<Hello, FrameError> {
        if p.len() < 4 || p[..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        need("HELLO", &p, FIXED_LEN)?;
        if p.len() > MAX_HELLO_LEN {
            return Err(FrameError::Invalid {
                kind: "HELLO",
                what: "longer than 1024 bytes",
            });
        }
        p.advance(4);
        let h = Hello {
            min_version: p.get_u16(),
            max_version: p.get_u16(),
            capabilities: Capabilities(p.get_u32()),
            required: Capabilities(p.get_u32()),
            codecs: p.get_u16(),
            max_frame_payload: p.get_u32(),
            max_decoded_frame: p.get_u32(),
            initial_stream_window: p.get_u32(),
            initial_connection_window: p.get_u32(),
            max_streams: p.get_u32(),
        };
        // Remaining bytes are extensions from a newer minor revision: ignored.
        if h.min_version > h.max_version {
            return Err(FrameError::Invalid {
                kind: "HELLO",
                what: "min_version above max_version",
            });
        }
        Ok(h)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        Header {
            ty: FrameType::Hello as u8,
            flags: 0,
            stream: 0,
            len: FIXED_LEN as u32,
        }
        .encode(buf);
        buf.put_slice(&MAGIC);
        buf.put_u16(self.min_version);
        buf.put_u16(self.max_version);
        buf.put_u32(self.capabilities.0);
        buf.put_u32(self.required.0);
        buf.put_u16(self.codecs);
        buf.put_u32(self.max_frame_payload);
        buf.put_u32(self.max_decoded_frame);
        buf.put_u32(self.initial_stream_window);
        buf.put_u32(self.initial_connection_window);
        buf.put_u32(self.max_streams);
    }
}
