//! GOAWAY: the sender accepts no streams above `last_stream`, then closes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{need, FrameType, Header};
use crate::error::{ErrorCode, FrameError};
use crate::StreamId;

/// Longest reason text.
pub const MAX_REASON_LEN: usize = 1024;

/// GOAWAY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// Highest peer-initiated stream id the sender processed.
    pub last_stream: StreamId,
    /// [`ErrorCode::NoError`] for a graceful drain, otherwise why the connection closes.
    pub code: ErrorCode,
    /// Human-readable reason (UTF-8, at most 1024 bytes).
    pub reason: String,
}

impl GoAway {
    pub(crate) fn decode(mut p: Bytes) -> Result<GoAway, FrameError> {
        need("GOAWAY", &p, 8)?;
        let last_stream = p.get_u32();
        let code = ErrorCode::from_u32(p.get_u32());
        if p.len() > MAX_REASON_LEN {
            return Err(FrameError::Invalid {
                kind: "GOAWAY",
                what: "reason longer than 1024 bytes",
            });
        }
        // Invalid UTF-8 is replaced (U+FFFD takes 3 bytes), which can lengthen
        // the text: cut it back to the limit so it re-encodes unchanged.
        let mut reason = String::from_utf8_lossy(&p).into_owned();
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        Ok(GoAway {
            last_stream,
            code,
            reason,
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        let mut end = self.reason.len().min(MAX_REASON_LEN);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &self.reason.as_bytes()[..end];
        Header {
            ty: FrameType::GoAway as u8,
            flags: 0,
            stream: 0,
            len: 8 + reason.len() as u32,
        }
        .encode(buf);
        buf.put_u32(self.last_stream);
        buf.put_u32(self.code.to_u32());
        buf.put_slice(reason);
    }
}
