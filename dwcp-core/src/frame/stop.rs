//! STOP: the receiver of a stream will read no more of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::{ErrorCode, FrameError};
use crate::StreamId;

/// STOP frame (like QUIC's STOP_SENDING).
///
/// Sent by the receiving side of a stream direction. With a code other than
/// `NO_ERROR` it asks the sender to stop: the sender's writes fail with that
/// code and it answers with RESET. With `NO_ERROR` after a FIN it
/// acknowledges that every byte and the FIN were received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The stream whose incoming direction is stopped.
    pub stream: StreamId,
    /// Why.
    pub code: ErrorCode,
}

impl Stop {
    pub(crate) fn decode(stream: StreamId, mut p: Bytes) -> Result<Stop, FrameError> {
        need("STOP", &p, 4)?;
        Ok(Stop {
            stream,
            code: ErrorCode::from_u32(p.get_u32()),
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        Header {
            ty: FrameType::Stop as u8,
            flags: 0,
            stream: self.stream,
            len: 4,
        }
        .encode(buf);
        buf.put_u32(self.code.to_u32());
    }
}
