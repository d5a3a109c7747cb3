//! Stream ids and counts: opening streams (ours and the peer's OPEN),
//! refusing them, and forgetting them once both directions ended.

use tracing::debug;

use super::{Connection, Event, State, Violation};
use crate::error::OpenError;
use crate::error::{ConnectionError, ErrorCode};
use crate::frame::Frame;
use crate::frame::{Open, Reset, MAX_ROUTE_LEN_USIZE};
use crate::stream::{OpenParams, RecvState, Stream, StreamState};
use crate::Side;
use crate::StreamId;

/// RTT the configured initial stream window is meant for (the demo's
/// path); longer paths scale it ([`Connection::stream_window_floor`]).
const WINDOW_REFERENCE_RTT: std::time::Duration = std::time::Duration::from_millis(50);

impl Connection {
    /// State of a stream, or `None` if unknown or forgotten.
    pub fn stream_state(&self, id: StreamId) -> Option<StreamState> {
        self.streams.get(&id).map(|s| s.state())
    }

    /// Parameters a stream was opened with (route, class, weight...).
    pub fn stream_params(&self, id: StreamId) -> Option<&OpenParams> {
        self.streams.get(&id).map(|s| &s.params)
    }

    /// Opens a stream.
    ///
    /// # Errors
    /// See [`OpenError`]: before the handshake, at the peer's stream limit,
    /// while draining, or after the connection closed.
    pub fn open_stream(&mut self, params: OpenParams) -> Result<StreamId, OpenError> {
        if let Some(e) = &self.error {
            return Err(OpenError::Closed(e.clone()));
        }
        if matches!(self.state, State::Closing | State::Closed) {
            return Err(OpenError::Closed(ConnectionError::LocallyClosed));
        }
        let Some(peer) = &self.peer else {
            return Err(OpenError::NotReady);
        };
        if self.is_draining() {
            return Err(OpenError::Draining);
        }
        if params.route.len() > MAX_ROUTE_LEN_USIZE {
            return Err(OpenError::RouteTooLong(params.route.len()));
        }
        if self.local_open >= peer.max_streams {
            return Err(OpenError::StreamLimit(peer.max_streams));
        }
        if self.next_local > u32::MAX as u64 {
            return Err(OpenError::IdsExhausted);
        }
        let id = self.next_local as StreamId;
        self.next_local += 2;
        let mut params = params;
        params.weight = params.weight.max(1);
        let interactive = params
            .options
            .contains(crate::frame::StreamOptions::INTERACTIVE);
        self.control.push_back((
            Frame::Open(Open {
                stream: id,
                class: params.class,
                priority: params.priority,
                weight: params.weight,
                options: params.options,
                route: params.route.clone(),
            }),
            interactive,
        ));
        let peer_window = peer.initial_stream_window;
        self.insert_stream(id, params, peer_window);
        self.local_open += 1;
        self.stats.streams_opened_local += 1;
        Ok(id)
    }

    pub(super) fn handle_open(&mut self, o: Open) -> Result<(), Violation> {
        let id = o.stream;
        if self.is_local_id(id) {
            return Err(Violation::new(
                ErrorCode::ProtocolError,
                format!("peer opened stream {id}, an id reserved for this side"),
            ));
        }
        if id <= self.max_remote {
            if !self.skipped_remote.remove(&id) {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("peer opened stream {id} twice"),
                ));
            }
        } else {
            // Ids between the previous highest and this one are still to come
            // (on other lanes); remember them, within a bound.
            let gap = (id - self.max_remote) / 2;
            let gap = gap.saturating_sub(1) as usize;
            if self.skipped_remote.len() + gap > self.config.max_streams as usize {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!(
                        "peer skipped more than {} stream ids",
                        self.config.max_streams
                    ),
                ));
            }
            let first = if self.max_remote == 0 {
                if self.side == Side::Server {
                    1
                } else {
                    2
                }
            } else {
                self.max_remote + 2
            };
            let mut skipped = first;
            while skipped < id {
                self.skipped_remote.insert(skipped);
                skipped += 2;
            }
            self.max_remote = id;
        }
        let refused_by_goaway = self.goaway_sent && id > self.goaway_last;
        if refused_by_goaway || self.remote_open >= self.config.max_streams {
            self.stats.streams_refused += 1;
            debug!(id, "dwcp: refusing stream");
            let interactive = o.options.contains(crate::frame::StreamOptions::INTERACTIVE);
            let queued = self.push_reply(
                Frame::Reset(Reset {
                    stream: id,
                    code: ErrorCode::RefusedStream,
                }),
                interactive,
            );
            self.events.push_back(Event::StreamClosed(id));
            return queued;
        }
        let class = self.local_class(o.class);
        let Some(peer) = &self.peer else {
            return Ok(());
        };
        let params = OpenParams {
            class,
            priority: o.priority,
            weight: o.weight,
            options: o.options,
            route: o.route,
        };
        let peer_window = peer.initial_stream_window;
        self.insert_stream(id, params, peer_window);
        self.remote_open += 1;
        self.stats.streams_opened_remote += 1;
        self.events.push_back(Event::StreamOpened(id));
        Ok(())
    }

    /// Tracks a new stream (ours or the peer's) whose peer grants
    /// `peer_window` bytes of credit: its receive window starts at
    /// [`Connection::initial_window_target`] (WINDOW queued if that grew it).
    fn insert_stream(&mut self, id: StreamId, params: OpenParams, peer_window: u32) {
        let mut stream = Stream::new(
            params,
            peer_window,
            self.config.initial_stream_window,
            self.config.max_stream_window,
        );
        let floor = self
            .initial_window_target()
            .min(u64::from(self.config.initial_stream_window) + self.stream_window_room());
        if stream.recv_window.raise_floor(floor) {
            stream.window_pending = true;
            self.window_queue.push_back(id);
        }
        self.stream_window_extra += stream
            .recv_window
            .window()
            .saturating_sub(u64::from(self.config.initial_stream_window));
        if stream.interactive() {
            self.interactive.insert(id);
        }
        self.streams.insert(id, stream);
    }

    /// Receive window a new stream starts with: twice the receiving
    /// direction's bandwidth-delay product in WAN mode, within
    /// [`Connection::stream_window_floor`] and the maximum window.
    pub(super) fn initial_window_target(&self) -> u64 {
        let floor = self.stream_window_floor();
        if self.rx_link.mode() != crate::estimator::LinkMode::Wan {
            return floor;
        }
        self.rx_link.bdp().map_or(floor, |bdp| {
            (2 * bdp).clamp(floor, self.config.max_stream_window as u64)
        })
    }

    /// Smallest receive window of a stream: the configured initial window,
    /// scaled by the lowest RTT seen beyond [`WINDOW_REFERENCE_RTT`] so
    /// that it allows the same rate on a longer path, at most a quarter of
    /// the initial connection window (4 MiB by default; a stream opened
    /// once the rate is known starts at twice the BDP, 5 MB on 100 Mbit/s
    /// and 200 ms) and the maximum stream window. What floors add beyond
    /// the initial window comes from [`Connection::stream_window_room`].
    ///
    /// A stream opened as its connection starts has no rate estimate to
    /// size its window by, and on a long lossy path its window grows
    /// slowly: every lost packet holds what follows it for a round trip,
    /// so the reader consumes in bursts and the half windows whose pace
    /// doubles the window are read two or three round trips apart, while the sender's
    /// congestion window doubles every round trip (docs/benchmarks.md, "A
    /// stream's first window on long lossy paths";
    /// `a_stream_on_a_long_lossy_path_is_not_held_back_by_its_first_window`).
    /// A larger window on every path cost the demo's interactive echo
    /// about 2 ms at the median on its 50 ms path, so it scales with the
    /// RTT only.
    pub(super) fn stream_window_floor(&self) -> u64 {
        let initial = u64::from(self.config.initial_stream_window);
        // The path's RTT, not the queue's: the lowest sample.
        let Some(rtt) = self.rtt.min() else {
            return initial;
        };
        if rtt <= WINDOW_REFERENCE_RTT {
            return initial;
        }
        let scaled = initial as f64 * rtt.as_secs_f64() / WINDOW_REFERENCE_RTT.as_secs_f64();
        let cap = (u64::from(self.config.initial_connection_window) / 4)
            .min(u64::from(self.config.max_stream_window));
        (scaled as u64).min(cap).max(initial)
    }

    /// Raises the receive window of every stream still read to
    /// [`Connection::stream_window_floor`], queueing credit where that
    /// makes an update due: streams opened before the first RTT sample
    /// get a long path's window without waiting for their first update.
    pub(super) fn raise_stream_windows(&mut self) {
        let floor = self.stream_window_floor();
        if floor <= u64::from(self.config.initial_stream_window) {
            return;
        }
        // In id order, so that the WINDOW frames go out in the same order
        // in every run (and the budget goes to the oldest streams first).
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let room = self.stream_window_room();
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.recv_state != RecvState::Open || s.reader_gone {
                continue;
            }
            let before = s.recv_window.window();
            let due = s
                .recv_window
                .raise_floor(floor.min(before.saturating_add(room)));
            self.stream_window_extra += s.recv_window.window() - before;
            if due && !s.window_pending {
                s.window_pending = true;
                self.window_queue.push_back(id);
            }
        }
    }

    /// How much the streams' receive windows may still grow, together,
    /// beyond the configured initial window: half the connection's
    /// ceiling less what they grew already.
    ///
    /// Every byte of a stream's window is a byte its reader may leave
    /// unread for good, and the connection's window is what all of them
    /// share. Windows grown with their readers' pace (1.8–5.3 MiB on
    /// loopback, where a burst read looks fast) and floors raised for a
    /// long path (4 MiB at 200 ms) let six to twenty stalled readers hold
    /// it all. With the budget, stalled streams hold at most their initial
    /// windows and half the ceiling, and the rest stays for the others
    /// (`grown_windows_of_stalled_readers_leave_room_for_the_others`). One
    /// stream still grows to half the ceiling and more: 33 MiB by
    /// default, above a 1 Gbit/s, 200 ms path's 25 MB.
    pub(super) fn stream_window_room(&self) -> u64 {
        (u64::from(self.config.max_connection_window) / 2).saturating_sub(self.stream_window_extra)
    }

    pub(super) fn is_local_id(&self, id: StreamId) -> bool {
        (id % 2 == 1) == (self.side == Side::Client)
    }

    /// An id that was used once and is no longer tracked.
    pub(super) fn is_closed_id(&self, id: StreamId) -> bool {
        if self.is_local_id(id) {
            (id as u64) < self.next_local
        } else {
            id <= self.max_remote && !self.skipped_remote.contains(&id)
        }
    }

    pub(super) fn dec_count(&mut self, id: StreamId) {
        if self.is_local_id(id) {
            self.local_open = self.local_open.saturating_sub(1);
        } else {
            self.remote_open = self.remote_open.saturating_sub(1);
        }
    }

    pub(super) fn maybe_forget(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(|s| s.finished()) {
            self.forget(id);
            self.dec_count(id);
        }
    }

    pub(super) fn forget(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            let extra = s
                .recv_window
                .window()
                .saturating_sub(u64::from(self.config.initial_stream_window));
            self.stream_window_extra = self.stream_window_extra.saturating_sub(extra);
            self.interactive.remove(&id);
            self.events.push_back(Event::StreamClosed(id));
        }
    }
}
