//! The one interface between the driver and a transport.
//!
//! The driver ([`crate::net::driver`]) pulls frames from the core and asks
//! its [`Transport`] which lane queue each one goes to; it knows nothing of
//! how lanes map onto sockets. Two implementations:
//!
//! | implementation | file | lanes |
//! |---|---|---|
//! | `LaneRouter` | `lanes.rs` | N ordered byte lanes, TCP and in-memory alike: connection and interactive frames on lane 0, bulk streams spread over the others |
//! | `QuicRouter` | `quic.rs` | a control QUIC stream, then one QUIC stream per DWCP stream, opened on its first frame |
//!
//! Every method is called with the connection state locked, so each must
//! return at once (opening a QUIC stream spawns a task for it).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::net::driver::Shared;
use crate::{StreamId, Transmit};

/// A lane's writer: frames are sent here in order; dropping the sender
/// finishes the lane after the queued frames are written.
pub(crate) type LaneTx = mpsc::Sender<Transmit>;

/// How a transport maps frames onto its lanes.
pub(crate) trait Transport: Send {
    /// The lane `t` goes to, with a key identifying the lane (frames of one
    /// key stay in order), or `None` to drop the frame. May open a lane
    /// (QUIC: a QUIC stream for a new local stream, whose OPEN is `t`).
    ///
    /// The lane must follow from the frame alone ([`Transmit::interactive`]
    /// is decided when the core queued it), never from what the core still
    /// remembers of the stream: a FIN or RESET queued just before the core
    /// forgot its stream must take the lane of the stream's data, or it
    /// overtakes that data.
    fn route(&mut self, t: &Transmit, shared: &Arc<Shared>) -> Option<(u64, LaneTx)>;

    /// A lane the peer opened for `stream` (transports with a lane per
    /// stream): this side's frames of `stream` go to `lane` from now on.
    fn attach(&mut self, _stream: StreamId, _lane: LaneTx) {}

    /// The core forgot `stream` (both directions ended). Its frames may
    /// still be waiting in the driver, so its lane must stay until
    /// [`Transport::flushed`].
    fn stream_closed(&mut self, _stream: StreamId) {}

    /// Every frame the core produced so far is in a lane queue: lanes of
    /// closed streams can be let go (dropping a sender finishes its lane
    /// after the queued frames).
    fn flushed(&mut self) {}

    /// The connection is over: drops the lane senders, except those the
    /// transport needs until it is dropped itself (the QUIC control stream).
    fn close(&mut self);
}

/// A transport with no lanes: what the driver holds once it has finished.
pub(crate) struct Closed;

impl Transport for Closed {
    fn route(&mut self, _t: &Transmit, _shared: &Arc<Shared>) -> Option<(u64, LaneTx)> {
        None
    }

    fn close(&mut self) {}
}

/// Transport-level figures (RTT and loss as the transport sees them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportStats {
    /// `quic`, `tcp` or `memory`.
    pub kind: &'static str,
    /// Smoothed RTT reported by the transport.
    pub rtt: Option<std::time::Duration>,
    /// Minimum RTT reported by the transport (QUIC only).
    pub min_rtt: Option<std::time::Duration>,
    /// Packets (QUIC) or segments (TCP) sent.
    pub sent_packets: u64,
    /// Packets lost (QUIC) or segments retransmitted (TCP).
    pub lost_packets: u64,
    /// `lost_packets / sent_packets`.
    pub loss_rate: f64,
    /// Congestion window in bytes (sum over lanes for TCP).
    pub cwnd: u64,
    /// Number of lanes (TCP) or QUIC streams in use.
    pub lanes: usize,
    /// Bytes the peer acknowledged (TCP) or sent minus lost (QUIC), if known.
    pub delivered_bytes: Option<u64>,
    /// QUIC: copies of small interactive writes sent as datagrams.
    pub copies_sent: u64,
    /// QUIC: copies from the peer whose bytes arrived before the stream's own
    /// (each one a message that did not wait for loss recovery).
    pub copies_used: u64,
    /// QUIC: the largest UDP payload the path was found to carry (path MTU
    /// discovery; 1200 until it has run).
    pub mtu: Option<u16>,
}

/// Reads transport statistics. Kept apart from [`Transport`], outside the
/// connection lock: reading them asks the kernel (`TCP_INFO`) or quinn.
pub(crate) type StatsFn = Box<dyn Fn() -> TransportStats + Send + Sync>;
