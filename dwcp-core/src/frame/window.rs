//! WINDOW: flow-control credit.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::FrameError;
use crate::StreamId;

/// WINDOW frame: `credit` more bytes may be sent on `stream` (0 = the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Stream, or 0 for the connection window.
    pub stream: StreamId,
    /// Additional bytes allowed (raw, decoded bytes); never 0.
    pub credit: u32,
}

impl Window {
    pub(crate) fn decode(stream: StreamId, mut p: Bytes) -> Result<Window, FrameError> {
        need("WINDOW", &p, 4)?;
        let credit = p.get_u32();
        if credit == 0 {
            return Err(FrameError::Invalid {
                kind: "WINDOW",
                what: "zero credit",
            });
        }
        Ok(Window { stream, credit })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        Header {
            ty: FrameType::Window as u8,
            flags: 0,
            stream: self.stream,
            len: 4,
        }
        .encode(buf);
        buf.put_u32(self.credit);
    }
}
