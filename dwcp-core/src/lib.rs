//! # dwcp-core
//!
//! DWCP carries many logical streams over one connection across slow, far and
//! lossy links: each stream has its own flow control, optional compression and
//! a weighted share of the link.
//!
//! ## Architecture
//!
//! The protocol is a deterministic state machine with no sockets and no clocks
//! (the approach of `quinn-proto`): bytes and time go in, frames and events come
//! out. Each concern lives in its own module:
//!
//! | module | concern |
//! |---|---|
//! | [`frame`] | wire format: one file per frame kind, zero-copy decode |
//! | [`connection`] | handshake, stream lifecycle, limits, timers, drain |
//! | [`stream`] | per-stream send/receive halves |
//! | [`flow`] | credit windows that auto-tune toward the bandwidth-delay product |
//! | [`scheduler`] | deficit round robin: who sends next |
//! | [`rtt`] | smoothed / min RTT from PING/PONG |
//! | [`estimator`] | bottleneck bandwidth, min RTT, loss, datacenter/WAN mode |
//! | [`codec`] | none / lz4 / zstd with bounded decoding |
//! | [`selector`] | adaptive codec choice per chunk from data, CPU and link rate |
//! | [`encoder`] | the sending side of the codec layer (policy, contexts, measurements) |
//! | [`net`] | async API and transports: QUIC (quinn), TCP lanes, in-memory |
//! | [`tls`] | mutual-TLS identities, development CA |
//! | [`malloc`] | opt-in glibc allocator settings and trimming for programs |
//! | [`sim`] | a virtual-time link joining two connections, for tests and demos |
//! | [`fuzzing`] | harnesses shared by fuzz targets and property tests |
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use dwcp_core::sim::{LinkConfig, Pair};
//! use dwcp_core::{Config, Event, OpenParams};
//!
//! let link = LinkConfig { bandwidth_bps: 100_000_000, one_way_delay: Duration::from_millis(25), ..LinkConfig::default() };
//! let mut pair = Pair::new(Config::default(), Config::default(), link);
//! pair.run_until(Duration::from_secs(1), |p| p.client.conn.is_established() && p.server.conn.is_established());
//! let id = pair.client.conn.open_stream(OpenParams::default()).unwrap();
//! pair.client.conn.send(id, Bytes::from_static(b"hello")).unwrap();
//! pair.client.conn.finish(id).unwrap();
//! pair.run_until(Duration::from_secs(1), |p| p.server.conn.stream_state(id).is_some());
//! pair.run_until(Duration::from_secs(1), |p| matches!(p.server.conn.recv(id, 1024), Ok(Some(_))));
//! ```

#![deny(unsafe_code)]

pub mod codec;
pub mod config;
pub mod connection;
pub mod corpus;
pub mod cpu;
pub mod cpu_load;
pub mod encoder;
pub mod error;
pub mod estimator;
pub mod flow;
pub mod frame;
pub mod fuzzing;
pub mod labels;
pub mod malloc;
pub mod net;
pub mod rtt;
pub mod scheduler;
pub mod selector;
pub mod sim;
pub mod stream;
pub mod tls;
pub mod zstd_stream;

pub use codec::CodecId;
pub use config::{Config, ConfigError, PROTOCOL_VERSION};
pub use connection::{Connection, ConnectionStats, Event, Transmit};
pub use error::{ConnectionError, ErrorCode, FrameError, OpenError, StreamError};
pub use frame::{Capabilities, StreamOptions};
pub use stream::{OpenParams, StreamState};

/// Identifies a stream within a connection. The client (the side that dialed)
/// uses odd ids, the server even ids; 0 is the connection itself.
pub type StreamId = u32;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that initiated the transport connection (odd stream ids).
    Client,
    /// The side that accepted it (even stream ids).
    Server,
}
