//! The sending direction: queueing data, FIN, reset, room in the send
//! buffers, serving streams to the transport (`poll_data`), and the peer's
//! WINDOW and STOP.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{Connection, Event, State, Transmit, Violation};
use crate::codec::CodecId;
use crate::error::{ErrorCode, StreamError};
use crate::frame::Frame;
use crate::frame::{Capabilities, Data, Encoding, Reset, Stop, Window};
use crate::scheduler::Scheduler;
use crate::stream::SendState;
use crate::stream::{Chunk, Stream};
use crate::StreamId;

/// Most connection credit kept for interactive streams (see
/// `Connection::interactive_reserve`).
const INTERACTIVE_RESERVE: u64 = 64 * 1024;

/// Room in the connection's send buffer for which a blocked writer is
/// woken, at most (half a stream's share when that is less): two of the
/// largest chunks a sender compresses. With half a share, streams whose
/// peers' readers stall could leave less than that free for good, and a
/// writer with nothing queued waited for ever beside room it could use
/// (`a_writer_is_woken_for_the_room_sixteen_stalled_streams_leave`).
const WRITER_WAKE_ROOM: u64 = 256 * 1024;

/// Share (1/`SEND_HEADROOM_SHARE`) of the connection's send buffer that a
/// stream whose queue holds [`WRITER_WAKE_ROOM`] or more may not take: it
/// stays for streams with short queues. Streams whose peers' readers stall
/// keep their queues full for as long as they stall; sixteen full 4 MiB
/// queues took the whole 64 MiB buffer, and the writers of every other
/// stream waited with them (`stalled_queues_leave_room_in_the_send_buffer`).
const SEND_HEADROOM_SHARE: u64 = 4;

/// The event for the peer's STOP after this side's FIN (see
/// [`Event::StreamAcked`] and [`Event::StreamStopped`]).
fn fin_answer(id: StreamId, code: ErrorCode) -> Event {
    if code == ErrorCode::NoError {
        Event::StreamAcked(id)
    } else {
        Event::StreamStopped { id, code }
    }
}

impl Connection {
    /// Why a stream's sending direction ended abnormally (the peer's STOP,
    /// a refusal), without reporting it; `None` while it has not, or if the
    /// stream is unknown.
    pub fn send_error(&self, id: StreamId) -> Option<&StreamError> {
        self.streams.get(&id).and_then(|s| s.send_error.as_ref())
    }

    /// Bytes a stream has queued and not yet handed to the transport, or
    /// `None` if the stream is unknown.
    pub fn stream_send_queued(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|s| s.send_queued)
    }

    /// Decoded bytes stream `id` may still send under the peer's credit
    /// for the stream, or `None` if the stream is unknown. (The
    /// connection's credit is shared: one stream of sparse data can spend
    /// it for all.)
    pub fn stream_send_credit(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|s| s.send_credit.available())
    }

    /// Streams that have data and credit, waiting for the scheduler.
    pub fn backlogged_streams(&self) -> usize {
        self.sched.len()
    }

    /// Bytes queued by the application and not yet sent, over all streams.
    pub fn send_buffered(&self) -> u64 {
        self.send_buffered
    }

    /// Allocation per traffic class: allocated and used rate and utilization
    /// of `capacity` (bytes/s: the link estimate or the configured cap).
    pub fn allocation(&self, capacity: Option<f64>) -> Vec<crate::scheduler::ClassReport> {
        let cap = capacity.or(self.config.rate_limit.map(|r| r as f64));
        self.sched.report(cap, self.last_now)
    }

    /// Queues `data` on a stream without copying. Returns how many bytes were
    /// accepted (a prefix of `data`); the rest must be offered again after
    /// [`Event::StreamWritable`].
    ///
    /// # Errors
    /// [`StreamError::Blocked`] if nothing could be accepted; otherwise the stream
    /// or connection has ended.
    pub fn send(&mut self, id: StreamId, data: Bytes) -> Result<usize, StreamError> {
        if data.is_empty() {
            self.check_writable(id)?;
            return Ok(0);
        }
        self.check_writable(id)?;
        let room = self.room(id);
        let conn_full = self.conn_room_for(id) < self.stream_room(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if room == 0 {
            Self::mark_blocked(s, id, &mut self.conn_blocked, conn_full);
            return Err(StreamError::Blocked);
        }
        let n = (room as usize).min(data.len());
        if n < data.len() {
            Self::mark_blocked(s, id, &mut self.conn_blocked, conn_full);
        }
        let chunk = if n == data.len() {
            data
        } else {
            data.slice(..n)
        };
        s.send_queue.push_back(Chunk::Raw(chunk));
        crate::cpu_load::count_queued(n, n);
        s.send_queued += n as u64;
        self.send_buffered += n as u64;
        if s.interactive() {
            tracing::trace!(
                id,
                n,
                credit = s.send_credit.available(),
                paused = s.paused,
                conn_credit = self.conn_credit.available(),
                "dwcp: send on an interactive stream"
            );
        }
        if s.sendable() {
            self.sched
                .push(s.params.class, id, &mut s.sched, self.last_now);
        }
        Ok(n)
    }

    /// Queues one pre-compressed chunk (all or nothing). `raw_len` in `enc` is the
    /// decoded length; the chunk is sent as a single DATA frame.
    ///
    /// # Errors
    /// As [`Connection::send`], plus [`StreamError::CodecNotNegotiated`] and
    /// [`StreamError::ChunkTooLarge`] when the chunk breaks the peer's limits.
    pub fn send_encoded(
        &mut self,
        id: StreamId,
        enc: Encoding,
        payload: Bytes,
    ) -> Result<(), StreamError> {
        self.check_writable(id)?;
        let Some(peer) = &self.peer else {
            return Err(StreamError::Blocked);
        };
        if enc.codec != CodecId::None
            && (peer.codecs & enc.codec.bit() == 0
                || !peer.capabilities.contains(Capabilities::COMPRESSION))
        {
            return Err(StreamError::CodecNotNegotiated);
        }
        if enc.codec == CodecId::ZstdStream && !self.zstd_contexts.contains(&id) {
            // The peer keeps a bounded number of contexts: only a stream
            // that reserved one may use it.
            return Err(StreamError::CodecNotNegotiated);
        }
        let raw = enc.raw_len;
        if raw > peer.max_decoded_frame
            || raw > peer.initial_stream_window
            || raw > peer.initial_connection_window
            || payload.len() + 5 > peer.max_frame_payload as usize
        {
            return Err(StreamError::ChunkTooLarge);
        }
        let room = self.room(id);
        let conn_room = self.conn_room();
        let stream_room = self.stream_room(id);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        // A chunk is queued whole. Every stream may hold one chunk whatever
        // its share of the send buffer (which shrinks as streams are opened),
        // so no stream count and chunk size can block a stream for good.
        let fits = room >= raw as u64 || (s.send_queued == 0 && conn_room >= raw as u64);
        if !fits {
            let conn_full = s.send_queued == 0 || stream_room >= raw as u64;
            Self::mark_blocked(s, id, &mut self.conn_blocked, conn_full);
            return Err(StreamError::Blocked);
        }
        crate::cpu_load::count_queued(enc.raw_len as usize, payload.len());
        s.send_queue.push_back(Chunk::Encoded { enc, payload });
        s.send_queued += raw as u64;
        self.send_buffered += raw as u64;
        if s.sendable() {
            self.sched
                .push(s.params.class, id, &mut s.sched, self.last_now);
        }
        Ok(())
    }

    /// Finishes the sending direction (FIN after the queued data).
    ///
    /// # Errors
    /// The stream is unknown, already finished, or reset.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.check_writable(id)?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if s.send_queue.is_empty() {
            s.send_state = SendState::FinSent;
            let interactive = s.interactive();
            self.control.push_back((
                Frame::Data(Data {
                    stream: id,
                    encoding: None,
                    payload: Bytes::new(),
                    fin: true,
                }),
                interactive,
            ));
            self.maybe_forget(id);
        } else {
            s.send_state = SendState::FinPending;
        }
        Ok(())
    }

    /// Resets both directions of a stream: [`Connection::reset_send`] and
    /// [`Connection::stop`] with the same `code`.
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn reset(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        if !self.streams.contains_key(&id) {
            return Err(StreamError::UnknownStream);
        }
        self.abort_send(id, None, Some(code));
        self.stop(id, code)
    }

    /// Abandons this side's sending direction: queued data is dropped and the
    /// peer's reader gets [`StreamError::Reset`] with `code`. The receiving
    /// direction goes on. Nothing happens if the direction already ended
    /// (finished, reset, or stopped by the peer).
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn reset_send(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        if !self.streams.contains_key(&id) {
            return Err(StreamError::UnknownStream);
        }
        self.abort_send(id, None, Some(code));
        Ok(())
    }

    /// The application let go of its writer: an error the sending direction
    /// ended with no longer needs reporting. Unfinished writers should
    /// [`Connection::reset_send`] first.
    pub fn detach_writer(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_reported = true;
            s.writer_blocked = false;
            self.maybe_forget(id);
        }
    }

    /// Bytes `id`'s writer may queue now (0 if none), marking the writer
    /// blocked when there is no room so that [`Event::StreamWritable`]
    /// follows. Lets a caller copy no more than will be accepted.
    ///
    /// # Errors
    /// As [`Connection::send`], except that no room is `Ok(0)`.
    pub fn send_room(&mut self, id: StreamId) -> Result<usize, StreamError> {
        self.check_writable(id)?;
        let room = self.room(id);
        if room == 0 {
            let conn_full = self.conn_room_for(id) < self.stream_room(id);
            if let Some(s) = self.streams.get_mut(&id) {
                Self::mark_blocked(s, id, &mut self.conn_blocked, conn_full);
            }
        }
        Ok(room.min(usize::MAX as u64) as usize)
    }

    /// Largest raw chunk [`Connection::send_encoded`] accepts under the
    /// peer's limits (0 before the handshake).
    pub fn max_encoded_chunk(&self) -> usize {
        self.peer.as_ref().map_or(0, |p| {
            (p.max_decoded_frame)
                .min(p.initial_stream_window)
                .min(p.initial_connection_window)
                .min(p.max_frame_payload.saturating_sub(64)) as usize
        })
    }

    /// Tells the scheduler that the transport cannot take more of stream
    /// `id`'s frames now (its lane or QUIC stream is full), so other streams
    /// are served meanwhile; [`Connection::resume_stream`] undoes it. Unknown
    /// streams are ignored.
    pub fn pause_stream(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.paused = true;
        }
    }

    /// The transport can take stream `id`'s frames again.
    pub fn resume_stream(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.paused = false;
            if s.sendable() {
                self.sched
                    .push(s.params.class, id, &mut s.sched, self.last_now);
            }
        }
    }

    pub(super) fn handle_window(&mut self, w: Window) -> Result<(), Violation> {
        if w.stream == 0 {
            if !self.conn_credit.grant(w.credit) {
                return Err(Violation::new(
                    ErrorCode::FlowControlError,
                    "connection credit above 2^31-1",
                ));
            }
            return Ok(());
        }
        let id = w.stream;
        let closed = self.is_closed_id(id);
        match self.streams.get_mut(&id) {
            Some(s) => {
                if !s.send_credit.grant(w.credit) {
                    return Err(Violation::new(
                        ErrorCode::FlowControlError,
                        format!("credit for stream {id} above 2^31-1"),
                    ));
                }
                if s.sendable() {
                    self.sched
                        .push(s.params.class, id, &mut s.sched, self.last_now);
                }
            }
            None if closed => {}
            None => {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("WINDOW for stream {id}, which was never opened"),
                ))
            }
        }
        Ok(())
    }

    /// Reserves one of the peer's zstd-stream decoders for stream `id`, so
    /// that its chunks may be sent as [`CodecId::ZstdStream`]. True if the
    /// stream holds one (already or now); false if the peer did not offer
    /// the codec, the stream cannot send, or all
    /// [`crate::zstd_stream::RECEIVER_CONTEXTS`] are taken.
    ///
    /// The reservation ends when the peer's STOP for the stream arrives: the
    /// peer lets go of its decoder before it sends STOP (on the FIN, on a
    /// RESET, or when its reader goes), so this side never has more
    /// contexts in use at the peer than the peer keeps.
    pub fn reserve_zstd_context(&mut self, id: StreamId) -> bool {
        if self.zstd_contexts.contains(&id) {
            return true;
        }
        let offered = self.peer.as_ref().is_some_and(|p| {
            p.codecs & CodecId::ZstdStream.bit() != 0
                && p.capabilities.contains(Capabilities::COMPRESSION)
        });
        let open = self
            .streams
            .get(&id)
            .is_some_and(|s| s.send_state == SendState::Open);
        if !offered || !open || self.zstd_contexts.len() >= crate::zstd_stream::RECEIVER_CONTEXTS {
            return false;
        }
        self.zstd_contexts.insert(id);
        true
    }

    pub(super) fn handle_stop(&mut self, st: Stop) -> Result<(), Violation> {
        let id = st.stream;
        // The peer let go of its decoder for the stream, if it had one.
        self.zstd_contexts.remove(&id);
        match self.streams.get(&id).map(|s| s.send_state) {
            Some(SendState::Open | SendState::FinPending) => {
                // Answer with RESET so the peer's direction ends too.
                self.abort_send(id, Some(StreamError::Stopped(st.code)), Some(st.code));
            }
            // After the FIN the STOP is the peer's final answer: NO_ERROR
            // acknowledges everything, any other code says it went unread.
            Some(SendState::FinSent) => self.events.push_back(fin_answer(id, st.code)),
            Some(SendState::ResetSent) => {}
            None if self.is_closed_id(id) => self.events.push_back(fin_answer(id, st.code)),
            None => {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("STOP for stream {id}, which was never opened"),
                ))
            }
        }
        Ok(())
    }

    /// Whether the writer may queue data; an error the sending direction
    /// ended with (the peer's STOP, a refusal) is reported here.
    pub(super) fn check_writable(&mut self, id: StreamId) -> Result<(), StreamError> {
        if let Some(e) = &self.error {
            return Err(StreamError::ConnectionLost(e.clone()));
        }
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(e) = &s.send_error {
            let e = e.clone();
            s.send_reported = true;
            self.maybe_forget(id);
            return Err(e);
        }
        if s.send_state != SendState::Open {
            return Err(StreamError::ClosedLocally);
        }
        Ok(())
    }

    /// Bytes one stream may queue: its own limit, but no more than an equal
    /// share of the connection's send buffer (at least 64 KiB), so a few
    /// streams cannot fill the connection buffer and keep the others out of
    /// the scheduler.
    pub(super) fn stream_buffer_limit(&self) -> u64 {
        let open = self.active_streams().max(1) as u64;
        let fair = (self.config.connection_send_buffer / open).max(64 * 1024);
        (self.config.stream_send_buffer as u64).min(fair)
    }

    pub(super) fn room(&self, id: StreamId) -> u64 {
        self.stream_room(id).min(self.conn_room_for(id))
    }

    /// Room in the connection's send buffer that stream `id` may take
    /// ([`Connection::room_for_queue`]).
    fn conn_room_for(&self, id: StreamId) -> u64 {
        let queued = self.streams.get(&id).map_or(0, |s| s.send_queued);
        Self::room_for_queue(self.conn_room(), self.send_headroom(), queued)
    }

    /// Of `conn_room` free in the connection's send buffer, what a stream
    /// with `queued` bytes queued may take: up to [`WRITER_WAKE_ROOM`]
    /// queued, all of it; beyond, all but the `headroom` kept for streams
    /// with short queues ([`SEND_HEADROOM_SHARE`]).
    fn room_for_queue(conn_room: u64, headroom: u64, queued: u64) -> u64 {
        let deep = conn_room.saturating_sub(headroom);
        let shallow = WRITER_WAKE_ROOM.saturating_sub(queued).min(conn_room);
        deep.max(shallow)
    }

    /// The part of the connection's send buffer kept for streams with
    /// short queues ([`SEND_HEADROOM_SHARE`]).
    fn send_headroom(&self) -> u64 {
        self.config.connection_send_buffer / SEND_HEADROOM_SHARE
    }

    /// Room left in stream `id`'s own share of the send buffer.
    fn stream_room(&self, id: StreamId) -> u64 {
        let queued = self.streams.get(&id).map_or(0, |s| s.send_queued);
        self.stream_buffer_limit().saturating_sub(queued)
    }

    pub(super) fn conn_room(&self) -> u64 {
        self.config
            .connection_send_buffer
            .saturating_sub(self.send_buffered)
    }

    /// Marks `id`'s writer blocked. A writer whose own queue is full is
    /// woken as its queue drains (`take_frame`); one held back by the
    /// connection's send buffer (`conn_full`) also waits in `conn_blocked`
    /// for room there ([`Connection::notify_conn_writable`]).
    pub(super) fn mark_blocked(
        s: &mut Stream,
        id: StreamId,
        conn_blocked: &mut VecDeque<StreamId>,
        conn_full: bool,
    ) {
        s.writer_blocked = true;
        if conn_full && !s.conn_waiting {
            s.conn_waiting = true;
            conn_blocked.push_back(id);
        }
    }

    /// Ends the sending direction abnormally: queued data is dropped, the
    /// writer is woken to see `err` (none for a local reset), and RESET with
    /// `reset` is queued if given. Nothing happens if the direction already ended.
    pub(super) fn abort_send(
        &mut self,
        id: StreamId,
        err: Option<StreamError>,
        reset: Option<ErrorCode>,
    ) {
        if err == Some(StreamError::Refused) {
            // The peer never processed the stream (RESET(REFUSED_STREAM),
            // or beyond its GOAWAY): it holds no decoder for it, and sends
            // no STOP that would end the reservation.
            self.zstd_contexts.remove(&id);
        }
        let closing = matches!(self.state, State::Closing | State::Closed);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(s.send_state, SendState::FinSent | SendState::ResetSent) {
            return;
        }
        self.send_buffered -= s.send_queued;
        s.send_queued = 0;
        s.send_queue = VecDeque::new();
        s.send_state = SendState::ResetSent;
        s.send_reported = err.is_none();
        let wake = err.is_some() || s.writer_blocked;
        s.send_error = err;
        s.writer_blocked = false;
        let interactive = s.interactive();
        if wake {
            self.events.push_back(Event::StreamWritable(id));
        }
        if let (Some(code), false) = (reset, closing) {
            self.control
                .push_back((Frame::Reset(Reset { stream: id, code }), interactive));
            self.stats.resets_sent += 1;
        }
        self.notify_conn_writable();
        self.maybe_forget(id);
    }

    /// Room in the connection's send buffer for which a blocked writer is
    /// woken: half a stream's share, at most [`WRITER_WAKE_ROOM`].
    fn writer_wake_room(&self) -> u64 {
        (self.stream_buffer_limit() / 2).clamp(1, WRITER_WAKE_ROOM)
    }

    /// Wakes writers waiting for room in the connection's send buffer, in
    /// turn, while it has [`Connection::writer_wake_room`] for each, counting what each may
    /// queue against the room.
    ///
    /// Writers are woken for that room, not once the whole buffer is at
    /// most half full: streams whose peers' readers stall keep their
    /// queues full for as long as they stall, and with enough of them the
    /// buffer never emptied to half, so no other writer was woken again
    /// (`a_writer_is_woken_while_stalled_streams_hold_half_the_send_buffer`).
    pub(super) fn notify_conn_writable(&mut self) {
        let wake_room = self.writer_wake_room();
        let headroom = self.send_headroom();
        let limit = self.stream_buffer_limit();
        let mut room = self.conn_room();
        // Each waiting writer is looked at once: one whose queue is long
        // may not take the headroom, and waits on for room beyond it.
        let mut waiting = self.conn_blocked.len();
        while room >= wake_room && waiting > 0 {
            waiting -= 1;
            let Some(id) = self.conn_blocked.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if !s.writer_blocked {
                s.conn_waiting = false;
                continue;
            }
            let may = Self::room_for_queue(room, headroom, s.send_queued);
            if may < wake_room {
                self.conn_blocked.push_back(id);
                continue;
            }
            s.conn_waiting = false;
            s.writer_blocked = false;
            self.events.push_back(Event::StreamWritable(id));
            room = room.saturating_sub(may.min(limit.saturating_sub(s.send_queued)));
        }
    }

    /// Connection credit that only interactive streams may use: bulk streams
    /// stop short of it, so a small message never waits for credit that bulk
    /// data queued below the scheduler has taken.
    pub(super) fn interactive_reserve(&self) -> u64 {
        self.peer.as_ref().map_or(0, |p| {
            (p.initial_connection_window as u64 / 8).min(INTERACTIVE_RESERVE)
        })
    }

    pub(super) fn poll_data(&mut self, now: Instant) -> Option<Transmit> {
        let conn_avail = self.conn_credit.available();
        if conn_avail == 0 {
            return None;
        }
        let bulk_avail = conn_avail.saturating_sub(self.interactive_reserve());
        if bulk_avail == 0 {
            return self.poll_reserved(now, conn_avail, true);
        }
        let max_frame = self.data_frame_limit();
        // A turn must allow at least one full frame, or an entry whose deficit
        // went negative would need several empty rounds to send again.
        let quantum = self.config.quantum.max(max_frame as u32);
        let mut class_spins = 1024;
        let mut passed: Vec<u8> = Vec::new();
        loop {
            if class_spins == 0 {
                return None;
            }
            class_spins -= 1;
            let class = match self.sched.next_class(now, quantum, &passed)? {
                Ok(c) => c,
                // The cap holds bulk back; an interactive frame goes now and
                // is charged to the cap, so bulk pays for it.
                Err(_) => return self.poll_reserved(now, conn_avail, false),
            };
            let mut spins = self.sched.len() * 2 + 1;
            let mut served = None;
            while spins > 0 {
                spins -= 1;
                let Some(id) = self.sched.front_stream(class) else {
                    break;
                };
                let Some(s) = self.streams.get_mut(&id) else {
                    self.sched.pop_stream(class, None);
                    continue;
                };
                if !s.sendable() {
                    self.sched.pop_stream(class, Some(&mut s.sched));
                    continue;
                }
                if Scheduler::begin_turn(&mut s.sched, quantum, s.params.weight) <= 0 {
                    self.sched.rotate_stream(class, &mut s.sched);
                    continue;
                }
                let avail = if s.interactive() {
                    conn_avail
                } else {
                    bulk_avail
                };
                if let Some(Chunk::Encoded { enc, .. }) = s.send_queue.front() {
                    if (enc.raw_len as u64) > avail {
                        // Wait for connection credit; let others use what there is.
                        self.sched.rotate_stream(class, &mut s.sched);
                        continue;
                    }
                }
                served = Some((id, avail));
                break;
            }
            let Some((id, avail)) = served else {
                self.sched.skip_class(class);
                if !passed.contains(&class) {
                    passed.push(class);
                }
                continue;
            };
            let (frame, wire, fin) = self.take_frame(id, avail)?;
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.sched.deficit -= wire as i64;
            if !s.sendable() {
                self.sched.pop_stream(class, Some(&mut s.sched));
            } else if s.sched.deficit <= 0 {
                self.sched.rotate_stream(class, &mut s.sched);
            }
            self.sched.charge(class, wire, now);
            if fin {
                self.maybe_forget(id);
            }
            return Some(frame);
        }
    }

    /// Serves an interactive stream from the reserved connection credit, or
    /// ahead of the connection cap (`respect_cap` false), outside the round
    /// robin (its stream stays where it is in the rings). Interactive frames
    /// are small, so what they borrow from the cap stays small.
    pub(super) fn poll_reserved(
        &mut self,
        now: Instant,
        avail: u64,
        respect_cap: bool,
    ) -> Option<Transmit> {
        let id = self.interactive.iter().copied().find(|id| {
            self.streams.get(id).is_some_and(|s| {
                s.sendable()
                    && match s.send_queue.front() {
                        Some(Chunk::Raw(_)) => true,
                        Some(c) => c.raw_len() <= avail,
                        None => false,
                    }
            })
        })?;
        if respect_cap && self.sched.conn_limited(now).is_some() {
            return None;
        }
        let class = self.streams.get(&id)?.params.class;
        if self.sched.class_capped(class, now) {
            return None;
        }
        let (frame, wire, fin) = self.take_frame(id, avail)?;
        self.sched.charge(class, wire, now);
        if fin {
            self.maybe_forget(id);
        }
        Some(frame)
    }

    /// Takes the next DATA frame of stream `id` within `conn_avail` bytes of
    /// connection credit and accounts for it everywhere but the scheduler.
    /// Returns the frame, its size on the wire, and whether it carries the FIN.
    pub(super) fn take_frame(
        &mut self,
        id: StreamId,
        conn_avail: u64,
    ) -> Option<(Transmit, u64, bool)> {
        let max_frame = self.data_frame_limit();
        let stream_limit = self.stream_buffer_limit();
        let wake_room = self.writer_wake_room();
        let headroom = self.send_headroom();
        let s = self.streams.get_mut(&id)?;
        let stream_avail = s.send_credit.available();
        let (encoding, payload, raw) = match s.send_queue.front_mut()? {
            Chunk::Raw(b) => {
                let n = (b.len() as u64)
                    .min(max_frame)
                    .min(stream_avail)
                    .min(conn_avail) as usize;
                let payload = if n == b.len() {
                    let p = std::mem::take(b);
                    s.send_queue.pop_front();
                    p
                } else {
                    b.split_to(n)
                };
                (None, payload, n as u64)
            }
            Chunk::Encoded { .. } => match s.send_queue.pop_front() {
                Some(Chunk::Encoded { enc, payload }) => (Some(enc), payload, enc.raw_len as u64),
                _ => return None,
            },
        };
        let interactive = s.interactive();
        // Shares and rate limits count bytes on the wire: compressed data
        // costs what it occupies on the link, not what it decodes to.
        let wire = payload.len() as u64 + crate::frame::HEADER_LEN as u64;
        s.send_credit.consume(raw);
        s.send_queued -= raw;
        let fin = s.send_queue.is_empty() && s.send_state == SendState::FinPending;
        if fin {
            s.send_state = SendState::FinSent;
        }
        if s.writer_blocked && s.send_queued <= stream_limit / 2 {
            // Its queue drained to half: woken if the connection's buffer
            // has room to wake a writer for, else it waits for that room.
            let conn_room = self
                .config
                .connection_send_buffer
                .saturating_sub(self.send_buffered - raw);
            if Self::room_for_queue(conn_room, headroom, s.send_queued) >= wake_room {
                s.writer_blocked = false;
                self.events.push_back(Event::StreamWritable(id));
            } else if !s.conn_waiting {
                s.conn_waiting = true;
                self.conn_blocked.push_back(id);
            }
        }
        self.conn_credit.consume(raw);
        self.send_buffered -= raw;
        if self.send_buffered == 0 {
            self.tx_ran_dry = true;
        }
        self.stats.data_raw_sent += raw;
        self.stats.data_wire_sent += payload.len() as u64;
        if !self.conn_blocked.is_empty() {
            self.notify_conn_writable();
        }
        let frame = Frame::Data(Data {
            stream: id,
            encoding,
            payload,
            fin,
        });
        Some((self.emit(frame, id, interactive), wire, fin))
    }

    pub(super) fn data_frame_limit(&self) -> u64 {
        let peer_max = self.peer.as_ref().map_or(0, |p| p.max_frame_payload);
        self.config.data_frame_size.min(peer_max) as u64
    }
}
