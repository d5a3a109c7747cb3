//! PING and PONG: 8 opaque bytes echoed back, for keepalive and RTT.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FrameType, Header};
use crate::error::FrameError;

/// Payload of PING and PONG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping(pub [u8; 8]);

impl Ping {
    pub(crate) fn decode(kind: &'static str, p: Bytes) -> Result<Ping, FrameError> {
        let arr: [u8; 8] = p[..].try_into().map_err(|_| FrameError::Invalid {
            kind,
            what: "payload must be exactly 8 bytes",
        })?;
        Ok(Ping(arr))
    }

    pub(crate) fn encode(&self, ty: FrameType, buf: &mut BytesMut) {
        Header {
            ty: ty as u8,
            flags: 0,
            stream: 0,
            len: 8,
        }
        .encode(buf);
        buf.put_slice(&self.0);
    }
}
