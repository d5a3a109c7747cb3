//! The reading half of every transport: bytes from a TCP lane, an
//! in-memory lane or a QUIC stream become frames, handed to the core
//! (socket → reader task → core).

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::debug;

use crate::net::driver::{Phase, Shared, WRITE_BATCH};

/// Read-ahead of a lane and most bytes handed to the core at once.
const READ_CHUNK: usize = 64 * 1024;

/// What a lane carries, for end-of-stream handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneRole {
    /// Carries connection frames (TCP lane 0, QUIC control): gates nothing.
    Control,
    /// Another TCP/in-memory lane: waits for the handshake; EOF is a failure.
    Lane,
    /// A QUIC stream carrying one DWCP stream: waits for the handshake; EOF is normal.
    QuicStream,
}

/// Read-ahead of a TCP or in-memory lane (shared by many streams).
const LANE_READ_AHEAD: usize = READ_CHUNK;
/// Read-ahead of a QUIC stream (one DWCP stream) or of the QUIC control
/// stream: enough for runs of small frames (WINDOW, OPEN); larger payloads
/// are read straight into their own buffers.
const QUIC_READ_AHEAD: usize = 1024;
/// Most bytes of whole frames, already read ahead, handed to the core at once.
const INPUT_BATCH: usize = READ_CHUNK;

/// Reads one frame into a buffer of exactly its size (header and payload).
///
/// Payloads delivered to the application are slices of this buffer, so an
/// unread payload keeps alive its own frame and nothing else: memory held by
/// received data stays within what the receive windows allow, however many
/// streams hold unread data. (A shared read buffer would let every unread
/// payload pin a whole read chunk, and a per-stream one would hold a chunk
/// per idle stream.) A header whose length exceeds `max` is returned alone,
/// for the core to refuse. `None` at EOF; a partial frame at EOF is dropped,
/// as the core could not use it either.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    max: u32,
) -> std::io::Result<Option<BytesMut>> {
    let mut head = [0u8; crate::frame::HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..]).await?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let Some(h) = crate::frame::Header::peek(&head) else {
        return Ok(None);
    };
    if h.len > max {
        return Ok(Some(BytesMut::from(&head[..])));
    }
    let total = head.len() + h.len as usize;
    let mut frame = BytesMut::with_capacity(total);
    frame.extend_from_slice(&head);
    while frame.len() < total {
        let want = total - frame.len();
        // `limit` keeps the read inside the exact allocation.
        if r.read_buf(&mut (&mut frame).limit(want)).await? == 0 {
            return Ok(None);
        }
    }
    Ok(Some(frame))
}

/// The next frame if it is already whole in `r`'s read-ahead (no I/O), in a
/// buffer of exactly its size.
fn buffered_frame<R: AsyncRead + Unpin>(
    r: &mut tokio::io::BufReader<R>,
    max: u32,
) -> Option<BytesMut> {
    use tokio::io::AsyncBufRead;
    let ahead = r.buffer();
    let h = crate::frame::Header::peek(ahead)?;
    if h.len > max {
        return None;
    }
    let total = crate::frame::HEADER_LEN + h.len as usize;
    if ahead.len() < total {
        return None;
    }
    let frame = BytesMut::from(&ahead[..total]);
    std::pin::Pin::new(r).consume(total);
    Some(frame)
}

/// Reads a lane into the core until EOF or error, frame by frame (see
/// [`read_frame`]); frames already whole in the read-ahead go to the core in
/// the same call.
pub(crate) async fn read_lane<R: AsyncRead + Unpin>(r: R, shared: Arc<Shared>, role: LaneRole) {
    let ahead = if role == LaneRole::Lane {
        LANE_READ_AHEAD
    } else {
        QUIC_READ_AHEAD
    };
    let mut r = tokio::io::BufReader::with_capacity(ahead, r);
    let max = shared
        .lock()
        .core
        .config()
        .max_frame_payload
        .min(crate::frame::MAX_FRAME_PAYLOAD_CEILING);
    let mut frames: Vec<BytesMut> = Vec::new();
    let mut phase = shared.phase.clone();
    loop {
        match read_frame(&mut r, max).await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => {
                if role == LaneRole::Lane {
                    // The peer closes every lane when it closes; give lane 0 a
                    // moment to deliver its GOAWAY, which says why.
                    let closed = async {
                        while !matches!(*phase.borrow_and_update(), Phase::Closed(_)) {
                            if phase.changed().await.is_err() {
                                return;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closed).await;
                }
                if role == LaneRole::Control && shared.lock().core.peer_sent_goaway() {
                    // The peer drained and ended its control lane; data of its
                    // last streams may still be in flight on other lanes or
                    // QUIC streams. The connection ends when our side drains
                    // too, or when the transport closes.
                    debug!("dwcp: peer ended its control lane after GOAWAY");
                    return;
                }
                if matches!(role, LaneRole::Control | LaneRole::Lane) {
                    shared.transport_failed("lane closed by the peer");
                }
                return;
            }
            Err(e) => {
                // quinn's "connection lost" says why only in its source.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                shared.transport_failed(&format!("lane read failed: {why}"));
                return;
            }
        }
        let mut batched = frames[0].len();
        while batched < INPUT_BATCH && frames.len() < WRITE_BATCH {
            let Some(f) = buffered_frame(&mut r, max) else {
                break;
            };
            batched += f.len();
            frames.push(f);
        }
        if role != LaneRole::Control {
            // Frames of streams must not overtake the peer's HELLO on the control lane.
            while *phase.borrow_and_update() == Phase::Handshaking {
                if phase.changed().await.is_err() {
                    return;
                }
            }
        }
        let closed = shared.with_core(|inner| {
            let now = Instant::now();
            for mut f in frames.drain(..) {
                inner.core.handle_input(now, &mut f);
            }
            // `dispatch` (after this) only turns events into wake-ups: the
            // core is as closed now as after it.
            inner.core.is_closed()
        });
        if closed {
            return;
        }
        if role == LaneRole::Lane {
            // A bulk lane's socket is seldom empty, so its reads seldom
            // wait: without this the task went on batch after batch until
            // tokio's budget ran out (128 reads, megabytes of TLS records)
            // while lane 0's reader, carrying the interactive streams,
            // waited for a worker (echo median 3.2–3.8 ms beside bulk on
            // loopback, 0.32–0.36 ms with it; bulk went faster too). QUIC
            // streams are not held back: one quinn task decrypts for all of
            // them, and yielding there gained nothing.
            tokio::task::yield_now().await;
        }
    }
}
