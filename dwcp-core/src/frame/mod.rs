//! The frame codec: a fixed 10-byte header followed by a payload.
//!
//! ```text
//!  0        1        2                 6                 10
//! +--------+--------+-----------------+-----------------+---------------
//! |  type  | flags  | stream id (u32) | length (u32)    | payload ...
//! +--------+--------+-----------------+-----------------+---------------
//! ```
//!
//! All integers are big-endian. Decoding works on a [`BytesMut`] the transport
//! reads into: complete frames are split off without copying, so a DATA payload
//! is a slice of the received buffer. Encoding writes the header (and any small
//! frame in full) into a scratch buffer and keeps DATA payloads as their own
//! [`Bytes`] for vectored writes.

mod data;
mod goaway;
mod hello;
mod open;
mod ping;
mod reset;
mod stop;
mod window;

pub use data::{Data, Encoding, FLAG_ENCODED, FLAG_FIN};
pub use goaway::{GoAway, MAX_REASON_LEN};
pub(crate) use hello::class_names_len as hello_class_names_len;
pub use hello::{
    Capabilities, Hello, MAGIC, MAX_CLASS_NAME_LEN, MAX_EXTENSIONS_LEN, MAX_HELLO_LEN,
};
pub use open::{Open, StreamOptions, MAX_ROUTE_LEN};
pub(crate) const MAX_ROUTE_LEN_USIZE: usize = MAX_ROUTE_LEN;
pub use ping::Ping;
pub use reset::Reset;
pub use stop::Stop;
pub use window::Window;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::StreamId;

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 10;
/// Bit set in the type byte of frame kinds a receiver may skip if it does not know them.
pub const IGNORABLE_BIT: u8 = 0x80;
/// Hard ceiling on any frame payload, whatever is negotiated (16 MiB).
pub const MAX_FRAME_PAYLOAD_CEILING: u32 = 16 * 1024 * 1024;

/// Frame type bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// HELLO: handshake parameters.
    Hello = 0x01,
    /// OPEN: a new stream.
    Open = 0x02,
    /// DATA: stream bytes.
    Data = 0x03,
    /// WINDOW: flow-control credit.
    Window = 0x04,
    /// RESET: abrupt stream termination.
    Reset = 0x05,
    /// PING: RTT probe / keepalive.
    Ping = 0x06,
    /// PONG: answer to PING.
    Pong = 0x07,
    /// GOAWAY: connection shutdown.
    GoAway = 0x08,
    /// STOP: the receiver stops reading a stream (or acknowledges its FIN).
    Stop = 0x09,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Handshake parameters (stream 0). Boxed: it is sent once per
    /// connection, and unboxed its class names made every frame 64 bytes
    /// instead of 48 (+5 % instructions encoding and decoding DATA and
    /// WINDOW in the gate's `frames` workload).
    Hello(Box<Hello>),
    /// A stream is opened.
    Open(Open),
    /// Stream data.
    Data(Data),
    /// Flow-control credit for a stream, or the connection when the stream id is 0.
    Window(Window),
    /// The sender abandons its direction of a stream.
    Reset(Reset),
    /// The receiver stops reading a stream, or acknowledges its FIN.
    Stop(Stop),
    /// A ping (stream 0).
    Ping(Ping),
    /// A ping answer (stream 0).
    Pong(Ping),
    /// The connection is shutting down.
    GoAway(GoAway),
    /// A frame of unknown type with the ignorable bit set; skipped by receivers.
    Ignored {
        /// The type byte.
        ty: u8,
    },
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Type byte.
    pub ty: u8,
    /// Flags byte (meaning depends on the type).
    pub flags: u8,
    /// Stream id, 0 for connection-level frames.
    pub stream: StreamId,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Parses a header from the first [`HEADER_LEN`] bytes of `buf`.
    /// Returns `None` if fewer bytes are available.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let mut b = &buf[..HEADER_LEN];
        Some(Header {
            ty: b.get_u8(),
            flags: b.get_u8(),
            stream: b.get_u32(),
            len: b.get_u32(),
        })
    }

    /// Writes this header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.ty);
        buf.put_u8(self.flags);
        buf.put_u32(self.stream);
        buf.put_u32(self.len);
    }
}

impl Frame {
    /// Decodes one frame from its header and complete payload.
    ///
    /// # Errors
    /// Any malformed frame gives a [`FrameError`]; this never panics.
    pub fn decode(header: Header, payload: Bytes) -> Result<Frame, FrameError> {
        let stream = header.stream;
        let frame = match header.ty {
            x if x == FrameType::Hello as u8 => {
                require_stream0("HELLO", stream)?;
                Frame::Hello(Box::new(Hello::decode(payload)?))
            }
            x if x == FrameType::Open as u8 => {
                require_stream("OPEN", stream)?;
                Frame::Open(Open::decode(stream, payload)?)
            }
            x if x == FrameType::Data as u8 => {
                require_stream("DATA", stream)?;
                Frame::Data(Data::decode(stream, header.flags, payload)?)
            }
            x if x == FrameType::Window as u8 => Frame::Window(Window::decode(stream, payload)?),
            x if x == FrameType::Reset as u8 => {
                require_stream("RESET", stream)?;
                Frame::Reset(Reset::decode(stream, payload)?)
            }
            x if x == FrameType::Stop as u8 => {
                require_stream("STOP", stream)?;
                Frame::Stop(Stop::decode(stream, payload)?)
            }
            x if x == FrameType::Ping as u8 => {
                require_stream0("PING", stream)?;
                Frame::Ping(Ping::decode("PING", payload)?)
            }
            x if x == FrameType::Pong as u8 => {
                require_stream0("PONG", stream)?;
                Frame::Pong(Ping::decode("PONG", payload)?)
            }
            x if x == FrameType::GoAway as u8 => {
                require_stream0("GOAWAY", stream)?;
                Frame::GoAway(GoAway::decode(payload)?)
            }
            ty if ty & IGNORABLE_BIT != 0 => Frame::Ignored { ty },
            ty => return Err(FrameError::UnknownType(ty)),
        };
        Ok(frame)
    }

    /// Encodes the frame. The header, and the whole frame unless it is DATA, go
    /// into `head`; a DATA payload is returned as-is (zero copy) to be written
    /// after `head`.
    pub fn encode(&self, head: &mut BytesMut) -> Bytes {
        #[cfg(feature = "gate-selftest")]
        gate_selftest_slowdown();
        match self {
            Frame::Hello(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Open(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Data(f) => f.encode_header(head),
            Frame::Window(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Reset(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Stop(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Ping(p) => {
                p.encode(FrameType::Ping, head);
                Bytes::new()
            }
            Frame::Pong(p) => {
                p.encode(FrameType::Pong, head);
                Bytes::new()
            }
            Frame::GoAway(f) => {
                f.encode(head);
                Bytes::new()
            }
            Frame::Ignored { ty } => {
                Header {
                    ty: *ty | IGNORABLE_BIT,
                    flags: 0,
                    stream: 0,
                    len: 0,
                }
                .encode(head);
                Bytes::new()
            }
        }
    }

    /// The stream the frame belongs to (0 for connection frames).
    pub fn stream(&self) -> StreamId {
        match self {
            Frame::Open(o) => o.stream,
            Frame::Data(d) => d.stream,
            Frame::Window(w) => w.stream,
            Frame::Reset(r) => r.stream,
            Frame::Stop(st) => st.stream,
            _ => 0,
        }
    }

    /// The frame kind's name, for messages (`"HELLO"`, `"DATA"`...).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "HELLO",
            Frame::Open(_) => "OPEN",
            Frame::Data(_) => "DATA",
            Frame::Window(_) => "WINDOW",
            Frame::Reset(_) => "RESET",
            Frame::Stop(_) => "STOP",
            Frame::Ping(_) => "PING",
            Frame::Pong(_) => "PONG",
            Frame::GoAway(_) => "GOAWAY",
            Frame::Ignored { .. } => "an ignorable frame",
        }
    }

    /// Encodes the frame into one contiguous buffer (copies DATA payloads; for tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        let mut head = BytesMut::new();
        let payload = self.encode(&mut head);
        head.extend_from_slice(&payload);
        head.freeze()
    }
}

fn require_stream0(kind: &'static str, stream: StreamId) -> Result<(), FrameError> {
    if stream != 0 {
        return Err(FrameError::Invalid {
            kind,
            what: "must be sent on stream 0",
        });
    }
    Ok(())
}

fn require_stream(kind: &'static str, stream: StreamId) -> Result<(), FrameError> {
    if stream == 0 {
        return Err(FrameError::Invalid {
            kind,
            what: "stream id 0 is reserved for the connection",
        });
    }
    Ok(())
}

/// Checks that `payload` holds at least `n` bytes.
pub(crate) fn need(kind: &'static str, payload: &Bytes, n: usize) -> Result<(), FrameError> {
    if payload.len() < n {
        return Err(FrameError::Truncated {
            kind,
            len: payload.len(),
        });
    }
    Ok(())
}

/// Splits complete frames off a receive buffer, enforcing the maximum payload length.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: u32,
}

impl FrameDecoder {
    /// A decoder that rejects payloads longer than `max_payload` (capped at
    /// [`MAX_FRAME_PAYLOAD_CEILING`]).
    pub fn new(max_payload: u32) -> Self {
        FrameDecoder {
            max_payload: max_payload.min(MAX_FRAME_PAYLOAD_CEILING),
        }
    }

    /// The payload limit in force.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Splits the next complete frame off `buf`. Returns `Ok(None)` when more bytes
    /// are needed. A too-long frame is rejected as soon as its header is read,
    /// before its payload is buffered.
    ///
    /// # Errors
    /// A malformed frame; the buffer is then in an unspecified position and the
    /// connection must be closed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = Header::peek(buf) else {
            return Ok(None);
        };
        if header.len > self.max_payload {
            return Err(FrameError::TooLarge {
                len: header.len,
                max: self.max_payload,
            });
        }
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            // Reserve room for the rest of this frame only: bounded by max_payload.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut whole = buf.split_to(total);
        let payload = whole.split_off(HEADER_LEN).freeze();
        Frame::decode(header, payload).map(Some)
    }
}

/// Wasted work for the regression gate's self-test (feature `gate-selftest`).
#[cfg(feature = "gate-selftest")]
#[inline(never)]
fn gate_selftest_slowdown() {
    let mut x = 0u64;
    for i in 0..400u64 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    std::hint::black_box(x);
}
