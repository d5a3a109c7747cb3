//! The async API over real transports: [`Endpoint`], [`Connection`], [`Stream`].
//!
//! | file | concern |
//! |---|---|
//! | `endpoint.rs` | binding, connecting, accepting; endpoint configuration |
//! | `admission.rs` | bounds on incoming handshakes in progress, global and per source |
//! | `refusals.rs` | refused/failed incoming connections: reasons, events, rate-limited logs |
//! | `connection.rs` | the connection handle: open/accept streams, stats, drain |
//! | `stream.rs` | the stream handle: zero-copy `send`/`recv`, `AsyncRead`/`AsyncWrite` |
//! | `driver.rs` | the task that moves frames from the core to the lanes; shared state, wake-ups |
//! | `transport.rs` | `Transport`, the interface the driver routes frames through; transport stats |
//! | `reader.rs` | reading lanes and QUIC streams into the core |
//! | `quic.rs` | QUIC via quinn: one QUIC stream per DWCP stream, mutual TLS; `QuicRouter` |
//! | `copies.rs` | QUIC: small interactive writes sent again as datagrams, used by the stream readers |
//! | `unordered.rs` | QUIC: a stream's data read as it arrives, reassembled with bounded room for holes |
//! | `congestion.rs` | QUIC: DWCP's own congestion controller (bottleneck rate and minimum RTT) |
//! | `outage_probe.rs` | QUIC: one probe per silent gap through an outage, around any controller |
//! | `urgent_room.rs` | QUIC: urgent writes get past a full congestion window, around any controller |
//! | `wrapped.rs` | QUIC: a controller around another (what the two above share) |
//! | `tcp.rs` | N parallel TCP lanes tuned with socket2, TLS via tokio-rustls |
//! | `tcp_info.rs` | RTT and retransmissions from the kernel's `TCP_INFO` |
//! | `lanes.rs` | TCP lane preambles and grouping; `spawn_lanes` and `LaneRouter`, shared by TCP and in-memory |
//! | `mem.rs` | in-memory lanes for tests and benchmarks |

mod admission;
pub mod congestion;
mod connection;
mod copies;
pub(crate) mod driver;
mod endpoint;
pub(crate) mod lanes;
pub mod mem;
mod outage_probe;
mod quic;
mod reader;
mod refusals;
mod stream;
mod tcp;
pub mod tcp_info;
mod transport;
mod unordered;
mod urgent_room;
mod wrapped;

pub use admission::HandshakeLimits;
pub use connection::{Connection, LinkSummary, Stats};
pub use driver::ClassCompression;
pub use endpoint::{
    Congestion, Endpoint, EndpointConfig, EndpointStats, Error, TcpTuning, Transport,
};
pub use refusals::{AcceptFailure, AcceptFailures, RefusalReason, FAILURE_QUEUE};
pub(crate) use stream::COMPRESS_CHUNK;
pub use stream::{stream_error, Compression, RecvStream, SendStream, Stream, StreamOptions};
pub use transport::TransportStats;
