//! Counters and gauges of a connection, and the link estimates.

use std::ops::AddAssign;
use std::time::{Duration, Instant};

use super::Connection;

/// A gap with no DATA bytes longer than this is a pause of the sender, not
/// the link's rate: longer than loss recovery holds a stream's bytes back
/// on paths of a few hundred milliseconds (a round trip or two).
pub(crate) const RX_PAUSE: Duration = Duration::from_secs(1);

/// Counters and gauges of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Bytes written, headers included.
    pub bytes_sent: u64,
    /// Bytes read, headers included.
    pub bytes_received: u64,
    /// Application bytes sent, before compression.
    pub data_raw_sent: u64,
    /// DATA payload bytes sent, after compression.
    pub data_wire_sent: u64,
    /// Application bytes received, after decompression.
    pub data_raw_received: u64,
    /// DATA payload bytes received, before decompression.
    pub data_wire_received: u64,
    /// Streams opened by this side.
    pub streams_opened_local: u64,
    /// Streams opened by the peer and accepted.
    pub streams_opened_remote: u64,
    /// Peer streams refused (limit or draining).
    pub streams_refused: u64,
    /// RESETs sent.
    pub resets_sent: u64,
    /// RESETs received.
    pub resets_received: u64,
    /// Streams currently open.
    pub active_streams: u64,
    /// Smoothed RTT.
    pub smoothed_rtt: Option<Duration>,
    /// RTT variance.
    pub rtt_var: Duration,
    /// Minimum RTT.
    pub min_rtt: Option<Duration>,
    /// Current connection receive window.
    pub connection_window: u64,
    /// DATA payload bytes received per codec id (`[none, lz4, zstd]`), before decoding.
    pub wire_received_by_codec: [u64; 3],
    /// Bytes received per codec id after decoding.
    pub raw_received_by_codec: [u64; 3],
    /// Time spent decompressing, in nanoseconds (a measurement only; it
    /// does not influence the protocol).
    pub decompress_nanos: u64,
}

/// Adds the counters of `rhs` (another connection's, or a later snapshot's
/// share) to these, for totals over several connections. The gauges
/// (`active_streams`, RTTs, `connection_window`) describe one connection at
/// one moment and are left as they are.
impl AddAssign<&ConnectionStats> for ConnectionStats {
    fn add_assign(&mut self, rhs: &ConnectionStats) {
        self.frames_sent += rhs.frames_sent;
        self.frames_received += rhs.frames_received;
        self.bytes_sent += rhs.bytes_sent;
        self.bytes_received += rhs.bytes_received;
        self.data_raw_sent += rhs.data_raw_sent;
        self.data_wire_sent += rhs.data_wire_sent;
        self.data_raw_received += rhs.data_raw_received;
        self.data_wire_received += rhs.data_wire_received;
        self.streams_opened_local += rhs.streams_opened_local;
        self.streams_opened_remote += rhs.streams_opened_remote;
        self.streams_refused += rhs.streams_refused;
        self.resets_sent += rhs.resets_sent;
        self.resets_received += rhs.resets_received;
        let ours = self.wire_received_by_codec.iter_mut();
        let theirs = rhs.wire_received_by_codec.iter();
        let ours = ours.chain(self.raw_received_by_codec.iter_mut());
        for (t, r) in ours.zip(theirs.chain(&rhs.raw_received_by_codec)) {
            *t += r;
        }
        self.decompress_nanos += rhs.decompress_nanos;
    }
}

impl Connection {
    /// Snapshot of the counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
        s.active_streams = self.active_streams() as u64;
        s.smoothed_rtt = self.rtt.smoothed();
        s.rtt_var = self.rtt.var();
        s.min_rtt = self.rtt.min();
        s.connection_window = self.conn_recv.window();
        s
    }

    /// Reports transport figures for the sending direction: `delivered` bytes
    /// in total by `now` (acknowledged, or delivered by a simulated link) and,
    /// if known, the loss rate. Drivers call this every 100 ms or so.
    pub fn on_transport_delivered(&mut self, now: Instant, delivered: u64, loss_rate: Option<f64>) {
        // App-limited if the sender ran out of data at any moment of the
        // interval, not only now: a compressor feeding chunks slower than the
        // link leaves one queued at some reports, and its rate is not the
        // link's.
        let dry_now = self.sched.is_empty() && self.send_buffered == 0;
        let app_limited = std::mem::replace(&mut self.tx_ran_dry, dry_now) || dry_now;
        self.tx_link.on_delivered(now, delivered, app_limited);
        if let Some(l) = loss_rate {
            self.tx_link.on_loss_rate(l);
        }
    }

    /// Feeds the receiving direction's estimate with the DATA bytes
    /// received by `now`. After a gap of more than [`RX_PAUSE`] with no
    /// DATA bytes, the sender paused (between transfers, or the
    /// application's own pause): what arrives then (keepalives, the first
    /// bytes after the pause) is application-limited, and neither lowers
    /// nor ages the estimate. Taken for the link, a pause made it the
    /// keepalives' trickle, and the streams opened next started at the
    /// window floor instead of twice the BDP.
    pub(super) fn note_received(&mut self, now: Instant) {
        let total = self.stats.data_raw_received;
        let (at, seen) = self.rx_seen;
        let paused = now.saturating_duration_since(at) > RX_PAUSE;
        if total != seen {
            self.rx_seen = (now, total);
        }
        self.rx_link.on_delivered(now, total, paused);
    }

    /// The estimate of the sending direction (bandwidth, RTT, loss, mode).
    pub fn link_estimate(&self) -> &crate::estimator::LinkEstimator {
        &self.tx_link
    }

    /// The estimate of the receiving direction, from DATA arrivals.
    pub fn receive_estimate(&self) -> &crate::estimator::LinkEstimator {
        &self.rx_link
    }
}
