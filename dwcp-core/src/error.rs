//! Error types: wire error codes and the typed errors of the API.

use std::fmt;

/// An error code carried on the wire in RESET and GOAWAY frames.
///
/// Codes are `u32`; values this implementation does not know are kept as
/// [`ErrorCode::Unknown`] so they can be logged and passed through.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: graceful shutdown or clean stream end; not an error.
    NoError,
    /// 1: the peer broke a rule of the protocol not covered by a more specific code.
    ProtocolError,
    /// 2: the sender hit an internal failure unrelated to the peer.
    InternalError,
    /// 3: the peer sent more on one stream than the stream's receive window (buffered, unread bytes per stream).
    StreamBufferExceeded,
    /// 4: the peer sent more in total than the connection's receive window (buffered, unread bytes per connection).
    ConnectionBufferExceeded,
    /// 5: a frame's length is above the negotiated maximum frame payload.
    FrameTooLarge,
    /// 6: a compressed DATA frame claims or produces more than the negotiated maximum decoded size.
    DecompressionLimit,
    /// 7: a compressed DATA frame failed to decode or used a codec that was not negotiated.
    CompressionError,
    /// 8: a frame arrived for a stream in a state that does not allow it (for example DATA after FIN).
    StreamStateError,
    /// 9: the stream was refused: the concurrent-stream limit was reached or the connection is draining.
    RefusedStream,
    /// 10: the stream was cancelled by the application.
    Cancel,
    /// 11: no protocol version is supported by both sides.
    VersionMismatch,
    /// 12: the peer lacks a capability this side requires.
    MissingCapability,
    /// 13: nothing was heard from the peer within the idle timeout.
    IdleTimeout,
    /// 14: the peer queued more control work (pings, refusals) than this side will buffer.
    ExcessiveLoad,
    /// 15: the first frame was not a valid HELLO (wrong magic or malformed).
    HandshakeFailed,
    /// 16: a WINDOW frame would overflow the peer's credit (above 2^31 - 1) or carried zero credit.
    FlowControlError,
    /// Any other value, passed through unchanged.
    Unknown(u32),
}

impl ErrorCode {
    /// The numeric value sent on the wire.
    pub fn to_u32(self) -> u32 {
        match self {
            ErrorCode::NoError => 0,
            ErrorCode::ProtocolError => 1,
            ErrorCode::InternalError => 2,
            ErrorCode::StreamBufferExceeded => 3,
            ErrorCode::ConnectionBufferExceeded => 4,
            ErrorCode::FrameTooLarge => 5,
            ErrorCode::DecompressionLimit => 6,
            ErrorCode::CompressionError => 7,
            ErrorCode::StreamStateError => 8,
            ErrorCode::RefusedStream => 9,
            ErrorCode::Cancel => 10,
            ErrorCode::VersionMismatch => 11,
            ErrorCode::MissingCapability => 12,
            ErrorCode::IdleTimeout => 13,
            ErrorCode::ExcessiveLoad => 14,
            ErrorCode::HandshakeFailed => 15,
            ErrorCode::FlowControlError => 16,
            ErrorCode::Unknown(v) => v,
        }
    }

    /// Maps a wire value to a code; unknown values become [`ErrorCode::Unknown`].
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => ErrorCode::NoError,
            1 => ErrorCode::ProtocolError,
            2 => ErrorCode::InternalError,
            3 => ErrorCode::StreamBufferExceeded,
            4 => ErrorCode::ConnectionBufferExceeded,
            5 => ErrorCode::FrameTooLarge,
            6 => ErrorCode::DecompressionLimit,
            7 => ErrorCode::CompressionError,
            8 => ErrorCode::StreamStateError,
            9 => ErrorCode::RefusedStream,
            10 => ErrorCode::Cancel,
            11 => ErrorCode::VersionMismatch,
            12 => ErrorCode::MissingCapability,
            13 => ErrorCode::IdleTimeout,
            14 => ErrorCode::ExcessiveLoad,
            15 => ErrorCode::HandshakeFailed,
            16 => ErrorCode::FlowControlError,
            v => ErrorCode::Unknown(v),
        }
    }

    /// A short, stable name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoError => "no_error",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::StreamBufferExceeded => "stream_buffer_exceeded",
            ErrorCode::ConnectionBufferExceeded => "connection_buffer_exceeded",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::DecompressionLimit => "decompression_limit",
            ErrorCode::CompressionError => "compression_error",
            ErrorCode::StreamStateError => "stream_state_error",
            ErrorCode::RefusedStream => "refused_stream",
            ErrorCode::Cancel => "cancel",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::MissingCapability => "missing_capability",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::ExcessiveLoad => "excessive_load",
            ErrorCode::HandshakeFailed => "handshake_failed",
            ErrorCode::FlowControlError => "flow_control_error",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.to_u32())
    }
}

/// A frame could not be decoded. Every variant maps to a wire [`ErrorCode`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces a payload longer than this side accepts.
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The payload is shorter than the frame kind requires.
    #[error("{kind} frame truncated: {len} bytes is too short")]
    Truncated {
        /// Frame kind name.
        kind: &'static str,
        /// Actual payload length.
        len: usize,
    },
    /// A frame type this implementation does not know, without the ignorable bit.
    #[error("unknown frame type {0:#04x} without the ignorable bit")]
    UnknownType(u8),
    /// A field has a value the protocol forbids.
    #[error("invalid {kind} frame: {what}")]
    Invalid {
        /// Frame kind name.
        kind: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// HELLO did not start with the DWCP magic: the peer does not speak DWCP.
    #[error("peer did not send the DWCP magic: not a DWCP endpoint")]
    BadMagic,
}

impl FrameError {
    /// The wire error code a connection closes with for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::BadMagic => ErrorCode::HandshakeFailed,
            _ => ErrorCode::ProtocolError,
        }
    }
}

/// Why a connection ended (other than a clean drain).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// This side detected a violation or failure and closed the connection with `code`.
    #[error("connection closed by this side: {code}: {reason}")]
    Local {
        /// Code sent to the peer.
        code: ErrorCode,
        /// Human-readable explanation.
        reason: String,
    },
    /// The peer closed the connection with `code`.
    #[error("connection closed by peer: {code}: {reason}")]
    Remote {
        /// Code received from the peer.
        code: ErrorCode,
        /// The peer's explanation.
        reason: String,
    },
    /// Nothing was received from the peer within the idle timeout.
    #[error("connection timed out: nothing heard from the peer for {0:?}")]
    TimedOut(std::time::Duration),
    /// The underlying transport failed (reported by the I/O driver).
    #[error("transport failed: {0}")]
    Transport(String),
    /// The application closed the connection.
    #[error("connection closed by the application")]
    LocallyClosed,
}

impl ConnectionError {
    /// The wire code associated with this error, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ConnectionError::Local { code, .. } | ConnectionError::Remote { code, .. } => {
                Some(*code)
            }
            ConnectionError::TimedOut(_) => Some(ErrorCode::IdleTimeout),
            _ => None,
        }
    }
}

/// Opening a stream failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The handshake has not completed yet.
    #[error("handshake not complete")]
    NotReady,
    /// The peer's concurrent-stream limit is reached; retry after a stream closes.
    #[error("peer's concurrent stream limit of {0} reached")]
    StreamLimit(u32),
    /// The connection is draining (GOAWAY sent or received).
    #[error("connection is draining: no new streams")]
    Draining,
    /// All stream ids of this side are used.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The route is longer than 255 bytes.
    #[error("route of {0} bytes is longer than 255")]
    RouteTooLong(usize),
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(ConnectionError),
}

/// A stream operation failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No data is available now (read) or no buffer space (write); wait for an event.
    #[error("would block")]
    Blocked,
    /// The peer reset the stream with this code.
    #[error("stream reset by peer: {0}")]
    Reset(ErrorCode),
    /// The peer stopped reading the stream with this code (its STOP): writes fail.
    #[error("stream stopped by peer: {0}")]
    Stopped(ErrorCode),
    /// The peer refused the stream (limit reached or draining).
    #[error("stream refused by peer")]
    Refused,
    /// The stream was already finished or reset by this side.
    #[error("stream already closed by this side")]
    ClosedLocally,
    /// No such stream (never opened, or already fully closed and released).
    #[error("unknown stream")]
    UnknownStream,
    /// A compressed chunk violates the peer's limits.
    #[error("encoded chunk too large for the peer's limits")]
    ChunkTooLarge,
    /// The chunk uses a codec the peer did not accept in its HELLO.
    #[error("codec not accepted by the peer")]
    CodecNotNegotiated,
    /// The connection ended; the stream did not complete.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
}

impl StreamError {
    /// The peer's wire code, for a reset ([`StreamError::Reset`]), a stop
    /// ([`StreamError::Stopped`]), a refusal (`REFUSED_STREAM`) or a
    /// connection closed with a code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            StreamError::Reset(c) | StreamError::Stopped(c) => Some(*c),
            StreamError::Refused => Some(ErrorCode::RefusedStream),
            StreamError::ConnectionLost(e) => e.code(),
            _ => None,
        }
    }
}
