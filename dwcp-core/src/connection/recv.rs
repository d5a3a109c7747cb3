//! The receiving direction: reading, stopping, DATA and RESET from the
//! peer, and returning credit (WINDOW) for every byte read or discarded.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{Connection, Event, State, Violation};
use crate::codec::{self, CodecError, CodecId};
use crate::error::{ErrorCode, StreamError};
use crate::frame::Encoding;
use crate::frame::Frame;
use crate::frame::{Data, Reset, Stop};
use crate::stream::{RecvState, Stream};
use crate::StreamId;

/// Payloads shorter than this are copied out of the receive buffer when queued,
/// so a small frame does not keep a whole read buffer alive: a zero-copy
/// payload is at least half a 64 KiB read chunk, which bounds the memory
/// unread data pins to a small multiple of the receive window.
const COPY_THRESHOLD: usize = 32 * 1024;

impl Connection {
    /// Current receive window of a stream (grows with auto-tuning).
    pub fn stream_window(&self, id: StreamId) -> Option<u64> {
        self.streams.get(&id).map(|s| s.recv_window.window())
    }

    /// Reads up to `max` bytes. `Ok(None)` is the clean end of the stream (FIN).
    ///
    /// # Errors
    /// [`StreamError::Blocked`] when no data is available yet; [`StreamError::Reset`]
    /// if the peer reset the stream; [`StreamError::ConnectionLost`] if the
    /// connection failed before the FIN arrived.
    pub fn recv(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, StreamError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(match &self.error {
                Some(e) => StreamError::ConnectionLost(e.clone()),
                None => StreamError::UnknownStream,
            });
        };
        if let Some(front) = s.recv_queue.front_mut() {
            let n = max.min(front.len()).max(1).min(front.len());
            let out = if n == front.len() {
                s.recv_queue.pop_front().unwrap_or_default()
            } else {
                front.split_to(n)
            };
            if s.interactive() {
                tracing::trace!(id, n = out.len(), "dwcp: recv on an interactive stream");
            }
            self.release_recv_credit(id, out.len() as u64);
            return Ok(Some(out));
        }
        if s.reader_gone {
            return Err(StreamError::ClosedLocally);
        }
        match s.recv_state {
            RecvState::ResetReceived => {
                let e = s.recv_error.clone().unwrap_or(StreamError::UnknownStream);
                s.recv_reported = true;
                self.maybe_forget(id);
                Err(e)
            }
            RecvState::FinReceived => {
                s.recv_state = RecvState::Done;
                self.maybe_forget(id);
                Ok(None)
            }
            RecvState::Done => Ok(None),
            RecvState::Open => {
                if let Some(e) = &self.error {
                    return Err(StreamError::ConnectionLost(e.clone()));
                }
                s.readable_pending = false;
                Err(StreamError::Blocked)
            }
        }
    }

    /// Stops reading a stream: unread data is discarded (its credit
    /// returned), later data is discarded on arrival, and unless the peer's
    /// direction already ended the peer is sent STOP with `code`, so its
    /// writes fail with [`StreamError::Stopped`]. Data this side queued still
    /// goes out. Also what a dropped reader does (with `CANCEL`).
    ///
    /// # Errors
    /// [`StreamError::UnknownStream`] if there is no such stream.
    pub fn stop(&mut self, id: StreamId, code: ErrorCode) -> Result<(), StreamError> {
        let closing = matches!(self.state, State::Closing | State::Closed);
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        s.reader_gone = true;
        // Data from now on is discarded undecoded: the context goes before
        // the STOP that tells the peer so.
        s.zstd = None;
        let unread: u64 = s.recv_queue.iter().map(|b| b.len() as u64).sum();
        s.recv_queue = VecDeque::new();
        let mut stop = false;
        match s.recv_state {
            RecvState::Open => {
                if !s.stop_sent && !closing {
                    s.stop_sent = true;
                    stop = true;
                }
            }
            RecvState::FinReceived => s.recv_state = RecvState::Done,
            RecvState::Done => {}
            RecvState::ResetReceived => s.recv_reported = true,
        }
        let interactive = s.interactive();
        self.release_recv_credit(id, unread);
        if stop {
            self.control
                .push_back((Frame::Stop(Stop { stream: id, code }), interactive));
        }
        self.maybe_forget(id);
        Ok(())
    }

    pub(super) fn handle_data(&mut self, now: Instant, d: Data) -> Result<(), Violation> {
        let id = d.stream;
        let raw = d.raw_len();
        if let Some(enc) = d.encoding {
            if enc.raw_len > self.config.max_decoded_frame {
                return Err(Violation::new(
                    ErrorCode::DecompressionLimit,
                    format!(
                        "DATA on stream {id} declares {} decoded bytes, above the limit of {}",
                        enc.raw_len, self.config.max_decoded_frame
                    ),
                ));
            }
        }
        if let Err(e) = self.conn_recv.on_receive(now, raw) {
            return Err(Violation::new(
                ErrorCode::ConnectionBufferExceeded,
                format!(
                    "peer sent {} bytes, beyond the {} allowed on the connection",
                    e.received, e.allowed
                ),
            ));
        }
        // Unread data widens the connection's window (`RecvWindow::effective`):
        // credit may be due before anything is read.
        if self.conn_recv.wants_update() {
            self.conn_window_pending = true;
        }
        self.stats.data_raw_received += raw;
        self.stats.data_wire_received += d.payload.len() as u64;
        let ci = d.encoding.map_or(0, |e| e.codec as usize).min(2);
        self.stats.raw_received_by_codec[ci] += raw;
        self.stats.wire_received_by_codec[ci] += d.payload.len() as u64;
        let discard = match self.streams.get(&id) {
            None if self.is_closed_id(id) => true,
            None => {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("DATA on stream {id}, which was never opened"),
                ));
            }
            // The peer's direction was already reset or refused.
            Some(s) => s.recv_state == RecvState::ResetReceived,
        };
        if discard {
            // Data in flight for a stream that is gone: return its credit.
            self.release_conn_credit(raw);
            return Ok(());
        }
        let codecs = self.config.codecs;
        let max_decoded = self.config.max_decoded_frame;
        // Decoders in use, counted only when this DATA would add one.
        let contexts = match d.encoding {
            Some(e)
                if e.codec == CodecId::ZstdStream
                    && self.streams.get(&id).is_some_and(|s| s.zstd.is_none()) =>
            {
                self.streams.values().filter(|s| s.zstd.is_some()).count()
            }
            _ => 0,
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.recv_state != RecvState::Open {
            return Err(Violation::new(
                ErrorCode::StreamStateError,
                format!("DATA on stream {id} after its FIN"),
            ));
        }
        if let Err(e) = s.recv_window.on_receive(now, raw) {
            return Err(Violation::new(
                ErrorCode::StreamBufferExceeded,
                format!(
                    "peer sent {} bytes on stream {id}, beyond the {} allowed",
                    e.received, e.allowed
                ),
            ));
        }
        let bytes = match d.encoding {
            None if d.payload.len() < COPY_THRESHOLD => Bytes::copy_from_slice(&d.payload),
            None => d.payload,
            // A stopped stream's data is discarded below, undecoded.
            Some(_) if s.reader_gone => Bytes::new(),
            Some(enc) => {
                if codecs & enc.codec.bit() == 0 {
                    return Err(Violation::new(
                        ErrorCode::CompressionError,
                        format!(
                            "DATA uses codec {}, which this side did not offer",
                            enc.codec.name()
                        ),
                    ));
                }
                let t0 = std::time::Instant::now();
                let r = if enc.codec == CodecId::ZstdStream {
                    decode_zstd_stream(contexts, s, enc, &d.payload, max_decoded)
                } else {
                    codec::decompress(enc, &d.payload, max_decoded)
                };
                self.stats.decompress_nanos += t0.elapsed().as_nanos() as u64;
                match r {
                    Ok(b) => b,
                    Err(e) => {
                        return Err(Violation::new(e.code(), format!("stream {id}: {e}")));
                    }
                }
            }
        };
        let interactive = s.interactive();
        if interactive {
            tracing::trace!(id, raw, fin = d.fin, "dwcp: DATA on an interactive stream");
        }
        if d.fin {
            // The direction ends: its context goes before the STOP below.
            s.zstd = None;
            s.recv_state = if s.reader_gone {
                RecvState::Done
            } else {
                RecvState::FinReceived
            };
        }
        if s.reader_gone {
            // Stopped: discard, and return the credit while the peer still sends.
            self.release_recv_credit(id, raw);
        } else {
            if !bytes.is_empty() {
                s.recv_queue.push_back(bytes);
            }
            if !s.readable_pending && (raw > 0 || d.fin) {
                s.readable_pending = true;
                self.events.push_back(Event::StreamReadable(id));
            }
        }
        if d.fin {
            let acked = !self.streams.get(&id).is_some_and(|s| s.stop_sent);
            if acked {
                // Everything arrived: tell the writer (its `stopped()` ends).
                self.control.push_back((
                    Frame::Stop(Stop {
                        stream: id,
                        code: ErrorCode::NoError,
                    }),
                    interactive,
                ));
            }
            self.maybe_forget(id);
        }
        Ok(())
    }

    pub(super) fn handle_reset(&mut self, r: Reset) -> Result<(), Violation> {
        let id = r.stream;
        self.stats.resets_received += 1;
        // The peer may hold one of this side's zstd-stream contexts for the
        // stream until a STOP says this side let go of it. Whether a context
        // was created here does not tell: the RESET may have overtaken the
        // stream's first context chunk (which is then discarded). So every
        // RESET of an open direction is answered with a STOP.
        if let Some(s) = self.streams.get_mut(&id) {
            s.zstd = None;
            // A refused stream was never processed by the peer: nothing to
            // answer.
            if s.recv_state == RecvState::Open && !s.stop_sent && r.code != ErrorCode::RefusedStream
            {
                s.stop_sent = true;
                let stop = Stop {
                    stream: id,
                    code: ErrorCode::Cancel,
                };
                let interactive = s.interactive();
                self.control.push_back((Frame::Stop(stop), interactive));
            }
        }
        match self.streams.get(&id) {
            Some(s) if s.recv_state == RecvState::Open => {
                if r.code == ErrorCode::RefusedStream {
                    // Never processed: neither direction goes on.
                    self.abort_recv(id, StreamError::Refused);
                    self.abort_send(id, Some(StreamError::Refused), None);
                } else {
                    self.abort_recv(id, StreamError::Reset(r.code));
                }
                self.events
                    .push_back(Event::StreamReset { id, code: r.code });
            }
            // The peer's direction already ended (FIN): nothing is lost.
            Some(_) => {}
            None if self.is_closed_id(id) => {}
            None => {
                return Err(Violation::new(
                    ErrorCode::ProtocolError,
                    format!("RESET for stream {id}, which was never opened"),
                ))
            }
        }
        Ok(())
    }

    /// Ends the receiving direction abnormally: unread data is discarded (its
    /// credit returned) and the reader is woken to see `err`, unless it is gone.
    pub(super) fn abort_recv(&mut self, id: StreamId, err: StreamError) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !matches!(s.recv_state, RecvState::Open) {
            return;
        }
        let unread: u64 = s.recv_queue.iter().map(|b| b.len() as u64).sum();
        s.recv_queue = VecDeque::new();
        s.recv_state = RecvState::ResetReceived;
        s.recv_error = Some(err);
        s.recv_reported = s.reader_gone;
        if !s.readable_pending && !s.reader_gone {
            s.readable_pending = true;
            self.events.push_back(Event::StreamReadable(id));
        }
        self.release_recv_credit(id, unread);
        self.maybe_forget(id);
    }

    /// Returns the credit of `n` received bytes that were read or discarded,
    /// to the stream (while the peer may still send on it) and the connection:
    /// the one place where consumed bytes turn into WINDOW frames.
    pub(super) fn release_recv_credit(&mut self, id: StreamId, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_window.on_consume(n);
            if s.recv_state == RecvState::Open && s.recv_window.wants_update() && !s.window_pending
            {
                s.window_pending = true;
                self.window_queue.push_back(id);
            }
        }
        self.release_conn_credit(n);
    }

    /// The connection's half of [`Connection::release_recv_credit`], alone
    /// for data of streams already gone.
    fn release_conn_credit(&mut self, n: u64) {
        self.conn_recv.on_consume(n);
        if self.conn_recv.wants_update() {
            self.conn_window_pending = true;
        }
    }
}

/// Decodes one zstd-stream payload with the stream's context, creating it
/// for the stream's first; `contexts` is the number of the connection's
/// streams holding one (counted when this one has none).
fn decode_zstd_stream(
    contexts: usize,
    s: &mut Stream,
    enc: Encoding,
    payload: &[u8],
    max_decoded: u32,
) -> Result<Bytes, CodecError> {
    codec::check_declared(enc, max_decoded)?;
    let decoder = match &mut s.zstd {
        Some(d) => d,
        None => {
            if contexts >= crate::zstd_stream::RECEIVER_CONTEXTS {
                return Err(CodecError::Corrupt {
                    codec: "zstd-stream",
                    what: format!(
                        "a stream context beyond the {} this side keeps per connection",
                        crate::zstd_stream::RECEIVER_CONTEXTS
                    ),
                });
            }
            s.zstd
                .insert(Box::new(crate::zstd_stream::StreamDecoder::new()?))
        }
    };
    decoder
        .decode(payload, enc.raw_len as usize)
        .map(Bytes::from)
}
