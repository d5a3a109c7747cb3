//! HELLO: the first frame each side sends.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::FrameError;

/// The four magic bytes at the start of HELLO.
pub const MAGIC: [u8; 4] = *b"DWCP";
/// Fixed part of the HELLO payload.
const FIXED_LEN: usize = 38;
/// Longest HELLO accepted (the fixed part plus room for extensions).
pub const MAX_HELLO_LEN: usize = 1024;
/// Extension type: the sender's traffic class names, in class-id order.
const EXT_CLASS_NAMES: u16 = 1;
/// Longest class name in the class-names extension, in bytes.
pub const MAX_CLASS_NAME_LEN: usize = 64;
/// Room for extensions after the fixed part, each `type: u16, len: u16, body`.
pub const MAX_EXTENSIONS_LEN: usize = MAX_HELLO_LEN - FIXED_LEN;

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
    /// Names of the sender's traffic classes, index = class id (empty: the
    /// sender names none, and class ids are taken as they are). Carried in
    /// an extension that peers predating it skip.
    pub class_names: Vec<String>,
}

/// Encoded size of the class-names extension body (count, then length-prefixed names).
pub(crate) fn class_names_len(names: &[String]) -> usize {
    1 + names.iter().map(|n| 1 + n.len()).sum::<usize>()
}

fn bad(what: &'static str) -> FrameError {
    FrameError::Invalid {
        kind: "HELLO",
        what,
    }
}

/// Decodes the class-names extension body: `count: u8`, then `count` times
/// `len: u8` and that many bytes of UTF-8, no name empty, longer than
/// [`MAX_CLASS_NAME_LEN`] or given twice.
fn decode_class_names(mut b: Bytes) -> Result<Vec<String>, FrameError> {
    if b.is_empty() {
        return Err(bad("empty class-names extension"));
    }
    let count = usize::from(b.get_u8());
    let mut names: Vec<String> = Vec::with_capacity(count);
    for _ in 0..count {
        if b.is_empty() {
            return Err(bad("class-names extension truncated"));
        }
        let len = usize::from(b.get_u8());
        if len == 0 || len > MAX_CLASS_NAME_LEN || b.len() < len {
            return Err(bad("class name empty, too long or truncated"));
        }
        let name = std::str::from_utf8(&b[..len])
            .map_err(|_| bad("class name is not UTF-8"))?
            .to_string();
        b.advance(len);
        if names.contains(&name) {
            return Err(bad("class name given twice"));
        }
        names.push(name);
    }
    if !b.is_empty() {
        return Err(bad("bytes after the class names"));
    }
    Ok(names)
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
            class_names: Vec::new(),
        };
        let mut h = h;
        // Extensions: `type: u16, len: u16, body`; unknown types are
        // skipped. Bytes that do not frame as extensions are ignored, as
        // version 1 receivers always ignored whatever followed the fixed part.
        while p.len() >= 4 {
            let ty = p.get_u16();
            let len = usize::from(p.get_u16());
            if p.len() < len {
                break;
            }
            let body = p.split_to(len);
            if ty == EXT_CLASS_NAMES {
                h.class_names = decode_class_names(body)?;
            }
        }
        if h.min_version > h.max_version {
            return Err(FrameError::Invalid {
                kind: "HELLO",
                what: "min_version above max_version",
            });
        }
        Ok(h)
    }

    /// Encodes HELLO. Class names beyond what fits in [`MAX_EXTENSIONS_LEN`]
    /// (or longer than [`MAX_CLASS_NAME_LEN`]) are not sent:
    /// [`Config::validate`](crate::Config::validate) refuses such lists.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        let names = self.sendable_class_names();
        let ext = if names.is_empty() {
            0
        } else {
            4 + class_names_len(names)
        };
        Header {
            ty: FrameType::Hello as u8,
            flags: 0,
            stream: 0,
            len: (FIXED_LEN + ext) as u32,
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
        if !names.is_empty() {
            buf.put_u16(EXT_CLASS_NAMES);
            buf.put_u16((ext - 4) as u16);
            buf.put_u8(names.len() as u8);
            for n in names {
                buf.put_u8(n.len() as u8);
                buf.put_slice(n.as_bytes());
            }
        }
    }

    /// The class names if they can all be encoded, else none.
    fn sendable_class_names(&self) -> &[String] {
        let ok = self.class_names.len() <= usize::from(u8::MAX)
            && self
                .class_names
                .iter()
                .all(|n| !n.is_empty() && n.len() <= MAX_CLASS_NAME_LEN)
            && 4 + class_names_len(&self.class_names) <= MAX_EXTENSIONS_LEN;
        if ok {
            &self.class_names
        } else {
            &[]
        }
    }
}
