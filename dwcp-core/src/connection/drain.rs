//! Ending a connection: graceful drain (GOAWAY), immediate close, and the
//! transport failing underneath.

use tracing::{debug, warn};

use super::{Connection, Event, State, Violation};
use crate::error::{ConnectionError, ErrorCode, StreamError};
use crate::frame::Frame;
use crate::frame::GoAway;
use crate::stream::RecvState;
use crate::StreamId;

impl Connection {
    /// True after GOAWAY was sent or received.
    pub fn is_draining(&self) -> bool {
        self.goaway_sent || self.goaway_recv.is_some()
    }

    /// Whether the peer has sent GOAWAY (it opens no more streams and ends
    /// its side once its streams are done).
    pub fn peer_sent_goaway(&self) -> bool {
        self.goaway_recv.is_some()
    }

    /// Starts a graceful drain: GOAWAY is sent, new peer streams are refused,
    /// open streams run to completion, then [`Event::Drained`].
    pub fn goaway(&mut self, reason: &str) {
        if self.goaway_sent || matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.goaway_sent = true;
        self.goaway_last = self.max_remote;
        self.control.push_back((
            Frame::GoAway(GoAway {
                last_stream: self.max_remote,
                code: ErrorCode::NoError,
                reason: reason.to_string(),
            }),
            false,
        ));
        if self.state == State::Open {
            self.state = State::Draining;
        }
    }

    /// Closes at once with `code`: a final GOAWAY is sent and every stream fails.
    pub fn close(&mut self, code: ErrorCode, reason: &str) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.final_frame = Some(Frame::GoAway(GoAway {
            last_stream: self.max_remote,
            code,
            reason: reason.to_string(),
        }));
        self.terminate(ConnectionError::LocallyClosed, State::Closing);
    }

    /// Reports that the transport underneath failed (the driver calls this).
    pub fn handle_transport_error(&mut self, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Closing {
            self.state = State::Closed;
            return;
        }
        if self.is_draining() && self.active_streams() == 0 {
            self.state = State::Closed;
            self.events.push_back(Event::Drained);
            return;
        }
        self.terminate(
            ConnectionError::Transport(reason.to_string()),
            State::Closed,
        );
    }

    pub(super) fn handle_goaway(&mut self, g: GoAway) -> Result<(), Violation> {
        if g.code != ErrorCode::NoError {
            warn!(code = %g.code, reason = %g.reason, "dwcp: peer closed the connection");
            self.terminate(
                ConnectionError::Remote {
                    code: g.code,
                    reason: g.reason,
                },
                State::Closed,
            );
            return Ok(());
        }
        if self.peer.is_none() {
            return Err(Violation::new(
                ErrorCode::ProtocolError,
                "GOAWAY before HELLO",
            ));
        }
        let first = self.goaway_recv.is_none();
        self.goaway_recv = Some(g.last_stream);
        // Streams of ours the peer will never process were refused.
        let mut refused: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| {
                s.recv_state == RecvState::Open && self.is_local_id(**id) && **id > g.last_stream
            })
            .map(|(id, _)| *id)
            .collect();
        refused.sort_unstable();
        for id in refused {
            self.abort_recv(id, StreamError::Refused);
            self.abort_send(id, Some(StreamError::Refused), None);
            self.events.push_back(Event::StreamReset {
                id,
                code: ErrorCode::RefusedStream,
            });
        }
        if self.state == State::Open {
            self.state = State::Draining;
        }
        if first {
            self.events.push_back(Event::GoAway {
                last_stream: g.last_stream,
                reason: g.reason,
            });
        }
        if !self.goaway_sent {
            self.goaway("peer is draining");
        }
        Ok(())
    }

    pub(super) fn check_drained(&mut self) {
        if self.goaway_sent
            && self.goaway_recv.is_some()
            && self.active_streams() == 0
            && self.control.is_empty()
            && self.replies.is_empty()
            && matches!(self.state, State::Draining | State::Open)
        {
            debug!("dwcp: drain complete");
            self.state = State::Closed;
            self.events.push_back(Event::Drained);
        }
    }
}
