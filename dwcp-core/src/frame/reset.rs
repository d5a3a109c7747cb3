//! RESET: the sender abandons its direction of a stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::{ErrorCode, FrameError};
use crate::StreamId;

/// RESET frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// Stream reset.
    pub stream: StreamId,
    /// Why.
    pub code: ErrorCode,
}

impl Reset {
    pub(crate) fn decode(stream: StreamId, mut p: Bytes) -> Result<Reset, FrameError> {
        need("RESET", &p, 4)?;
        Ok(Reset {
            stream,
            code: ErrorCode::from_u32(p.get_u32()),
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        Header {
            ty: FrameType::Reset as u8,
            flags: 0,
            stream: self.stream,
            len: 4,
        }
        .encode(buf);
        buf.put_u32(self.code.to_u32());
    }
}
