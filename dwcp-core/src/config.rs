//! Connection configuration and limits.

use std::time::Duration;

use crate::codec::CodecId;
use crate::frame::Capabilities;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// Settings of one side of a connection. Every buffer and window has a bound here.
///
/// The receive-side limits are announced to the peer in HELLO; a peer that
/// exceeds them is closed with a specific error code.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lowest protocol version accepted.
    pub min_version: u16,
    /// Highest protocol version spoken.
    pub max_version: u16,
    /// Capabilities offered.
    pub capabilities: Capabilities,
    /// Capabilities the peer must offer or the handshake fails with `MissingCapability`.
    pub required_capabilities: Capabilities,
    /// Bitmap of codecs this side decodes (see [`CodecId::bit`]); none is always implied.
    pub codecs: u16,
    /// Largest frame payload accepted (default 256 KiB; at most 16 MiB).
    pub max_frame_payload: u32,
    /// Largest decoded size of one compressed DATA frame (default 1 MiB).
    pub max_decoded_frame: u32,
    /// Initial per-stream receive window, and so the initial buffered-but-unread
    /// bytes per stream (default 1 MiB; 2 MiB and more made the demo's
    /// interactive echo 6 ms slower at the median beside bulk streams). On
    /// paths whose minimum RTT is above 50 ms it scales with the RTT, up to
    /// a quarter of `initial_connection_window`.
    pub initial_stream_window: u32,
    /// Ceiling the per-stream window may auto-tune to; the per-stream limit on
    /// buffered-but-unread bytes (default 64 MiB, the connection's). The
    /// streams' windows together grow by at most half of
    /// `max_connection_window` beyond their initial windows, so one stream
    /// reaches 33 MiB by default (a 1 Gbit/s, 200 ms path's BDP is 25 MB).
    pub max_stream_window: u32,
    /// Initial connection receive window (default 16 MiB: a 100 Mbit/s,
    /// 200 ms path and what lost packets hold behind them, without waiting
    /// for auto-tuning).
    pub initial_connection_window: u32,
    /// Ceiling of the connection window; the per-connection limit on
    /// buffered-but-unread bytes (default 64 MiB).
    pub max_connection_window: u32,
    /// Most peer-initiated streams open at once; more are refused (default 10,000).
    pub max_streams: u32,
    /// Bytes the application may queue on one stream before `send` blocks (default 4 MiB).
    pub stream_send_buffer: u32,
    /// Bytes the application may queue on all streams together (default 64 MiB).
    pub connection_send_buffer: u64,
    /// Largest DATA payload this side emits, further capped by the peer's limit (default 128 KiB).
    pub data_frame_size: u32,
    /// Scheduler quantum per unit of stream weight, in bytes (default 16 KiB).
    pub quantum: u32,
    /// Interval between PINGs, for RTT and keepalive (default 1 s).
    pub ping_interval: Duration,
    /// The connection fails if nothing is received for this long (default 30 s).
    pub idle_timeout: Duration,
    /// Most queued control frames (pongs, refusals, resets) before the peer is
    /// closed with `ExcessiveLoad` (default 4096).
    pub max_control_queue: usize,
    /// Traffic classes (weight, minimum and maximum rate); classes not listed
    /// have weight 1 and no limits.
    pub classes: Vec<crate::scheduler::ClassConfig>,
    /// Names of the class ids `0..n`, sent in HELLO (default none). When
    /// both sides name their classes, a stream the peer opens gets the local
    /// class of the same name, whatever the two lists' order; a name this
    /// side lacks gets class 0. Without names on either side, class ids are
    /// taken as they are.
    pub class_names: Vec<String>,
    /// Connection-wide cap on DATA sent, in bytes/s (a contracted WAN rate).
    pub rate_limit: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: Capabilities::ALL,
            required_capabilities: Capabilities::NONE,
            codecs: CodecId::all_bits(),
            max_frame_payload: 256 * 1024,
            max_decoded_frame: 1024 * 1024,
            initial_stream_window: 1024 * 1024,
            max_stream_window: 64 * 1024 * 1024,
            initial_connection_window: 16 * 1024 * 1024,
            max_connection_window: 64 * 1024 * 1024,
            max_streams: 10_000,
            stream_send_buffer: 4 * 1024 * 1024,
            connection_send_buffer: 64 * 1024 * 1024,
            data_frame_size: 128 * 1024,
            quantum: 16 * 1024,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_control_queue: 4096,
            classes: Vec::new(),
            class_names: Vec::new(),
            rate_limit: None,
        }
    }
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks the values are consistent.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: &str| Err(ConfigError(s.to_string()));
        if self.min_version > self.max_version {
            return err("min_version is above max_version");
        }
        if !(1024..=crate::frame::MAX_FRAME_PAYLOAD_CEILING).contains(&self.max_frame_payload) {
            return err("max_frame_payload must be between 1 KiB and 16 MiB");
        }
        if self.initial_stream_window < 1024 || self.initial_stream_window > self.max_stream_window
        {
            return err(
                "initial_stream_window must be at least 1 KiB and at most max_stream_window",
            );
        }
        if self.initial_connection_window < self.initial_stream_window
            || self.initial_connection_window > self.max_connection_window
        {
            return err("initial_connection_window must be between initial_stream_window and max_connection_window");
        }
        if self.max_stream_window > i32::MAX as u32 || self.max_connection_window > i32::MAX as u32
        {
            return err("windows must be below 2 GiB");
        }
        if self.data_frame_size == 0 || self.quantum == 0 {
            return err("data_frame_size and quantum must be positive");
        }
        if self.max_control_queue < 16 {
            return err("max_control_queue must be at least 16");
        }
        for c in &self.classes {
            if c.weight == 0 {
                return err("class weight must be at least 1");
            }
            if let (Some(lo), Some(hi)) = (c.min_rate, c.max_rate) {
                if lo > hi {
                    return err("class min_rate is above its max_rate");
                }
            }
        }
        if self.class_names.len() > 256 {
            return err("at most 256 class names (class ids are one byte)");
        }
        for (i, n) in self.class_names.iter().enumerate() {
            if n.is_empty() || n.len() > crate::frame::MAX_CLASS_NAME_LEN {
                return err("class names must be 1 to 64 bytes long");
            }
            if self.class_names[..i].contains(n) {
                return err("class names must be distinct");
            }
        }
        if 4 + crate::frame::hello_class_names_len(&self.class_names)
            > crate::frame::MAX_EXTENSIONS_LEN
        {
            return err("class names do not fit in HELLO (986 bytes with a length byte each)");
        }
        if self.rate_limit == Some(0) {
            return err("rate_limit must be positive");
        }
        if self.idle_timeout <= self.ping_interval {
            return err("idle_timeout must be longer than ping_interval");
        }
        Ok(())
    }
}
