//! OPEN: a new stream, with its class, weight, priority, route and options.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::FrameError;
use crate::StreamId;

/// Longest route or service name.
pub const MAX_ROUTE_LEN: usize = 255;

/// Option bits carried in OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamOptions(pub u32);

impl StreamOptions {
    /// The opener asks that data on this stream is not compressed.
    pub const NO_COMPRESSION: StreamOptions = StreamOptions(1 << 0);
    /// The stream carries latency-sensitive small messages.
    pub const INTERACTIVE: StreamOptions = StreamOptions(1 << 1);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: StreamOptions) -> bool {
        self.0 & other.0 == other.0
    }
}

/// OPEN frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The new stream's id.
    pub stream: StreamId,
    /// Traffic class (0-255).
    pub class: u8,
    /// Priority hint (0 = highest).
    pub priority: u8,
    /// Weight within the class (1-65535; 0 is invalid).
    pub weight: u16,
    /// Option bits.
    pub options: StreamOptions,
    /// Opaque route or service name, at most 255 bytes.
    pub route: Bytes,
}

impl Open {
    pub(crate) fn decode(stream: StreamId, mut p: Bytes) -> Result<Open, FrameError> {
        need("OPEN", &p, 9)?;
        let class = p.get_u8();
        let priority = p.get_u8();
        let weight = p.get_u16();
        let options = StreamOptions(p.get_u32());
        let route_len = p.get_u8() as usize;
        if weight == 0 {
            return Err(FrameError::Invalid {
                kind: "OPEN",
                what: "weight 0",
            });
        }
        if p.len() != route_len {
            return Err(FrameError::Invalid {
                kind: "OPEN",
                what: "route length does not match payload",
            });
        }
        Ok(Open {
            stream,
            class,
            priority,
            weight,
            options,
            // Copy: a small route must not pin the whole receive buffer.
            route: Bytes::copy_from_slice(&p),
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        let route = &self.route[..self.route.len().min(MAX_ROUTE_LEN)];
        Header {
            ty: FrameType::Open as u8,
            flags: 0,
            stream: self.stream,
            len: 9 + route.len() as u32,
        }
        .encode(buf);
        buf.put_u8(self.class);
        buf.put_u8(self.priority);
        buf.put_u16(self.weight);
        buf.put_u32(self.options.0);
        buf.put_u8(route.len() as u8);
        buf.put_slice(route);
    }
}
