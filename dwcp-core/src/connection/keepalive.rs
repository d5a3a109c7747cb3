//! Timers: keepalive PINGs, RTT samples from PONGs, the idle timeout.

use std::time::Instant;

use tracing::warn;

use super::{Connection, State};
use crate::error::{ConnectionError, ErrorCode};
use crate::frame::Frame;
use crate::frame::{GoAway, Ping};

impl Connection {
    /// Runs timers due at `now`: keepalive PINGs and the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            let d = self.config.idle_timeout;
            warn!(timeout = ?d, "dwcp: idle timeout, closing connection");
            self.final_frame = Some(Frame::GoAway(GoAway {
                last_stream: self.max_remote,
                code: ErrorCode::IdleTimeout,
                reason: format!("nothing received for {d:?}"),
            }));
            self.terminate(ConnectionError::TimedOut(d), State::Closing);
            return;
        }
        if self.peer.is_some() && self.ping_outstanding.is_none() && now >= self.next_ping {
            self.ping_seq += 1;
            self.ping_outstanding = Some((self.ping_seq, now));
            self.next_ping = now + self.config.ping_interval;
            self.control
                .push_back((Frame::Ping(Ping(self.ping_seq.to_be_bytes())), false));
        }
    }

    /// A PONG: if it answers the outstanding PING, an RTT sample.
    pub(super) fn handle_pong(&mut self, now: Instant, p: Ping) {
        if let Some((seq, sent)) = self.ping_outstanding {
            if p.0 == seq.to_be_bytes() {
                self.ping_outstanding = None;
                let sample = now.saturating_duration_since(sent);
                let first = self.rtt.smoothed().is_none();
                self.rtt.update(sample);
                self.tx_link.on_rtt(now, sample);
                self.rx_link.on_rtt(now, sample);
                if first {
                    self.raise_stream_windows();
                }
            }
        }
    }
}
