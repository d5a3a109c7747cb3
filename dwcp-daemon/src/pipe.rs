//! Copies between a local TCP connection and a DWCP stream, both ways, with
//! half-close carried across and failures never turned into a clean end.
//!
//! - TCP EOF from the application → FIN on the stream; the other direction
//!   goes on.
//! - FIN from the peer → `shutdown(Write)` on the TCP connection.
//! - A reset stream, a lost connection or a TCP error → the other side is
//!   aborted: the stream is reset, the TCP connection closed with RST, so
//!   neither application mistakes a failure for the end of the data.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use dwcp_core::net::{RecvStream, SendStream, Stream};
use dwcp_core::{ErrorCode, StreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::registry::Entry;

/// Most bytes taken from the application at once. What is already in the
/// socket is gathered up to this (one read that waits, then reads that do
/// not), so a fast sender's data reaches the compressor in chunks of the
/// largest size it compresses alone (128 KiB: a better ratio than 64 KiB
/// pieces and half the frames), while a small message goes at once.
const READ_CHUNK: usize = 256 * 1024;
/// Reads shorter than this are copied out into a buffer of their size, and
/// the read buffer is reused: a 100-byte message must not keep a
/// [`READ_CHUNK`] allocation queued and in flight.
const COPY_BELOW: usize = 16 * 1024;

/// Why a pipe ended early.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The DWCP stream failed (reset by the peer, connection lost...).
    #[error("stream: {0}")]
    Stream(#[from] StreamError),
    /// The local TCP connection failed.
    #[error("local connection: {0}")]
    Tcp(#[from] std::io::Error),
}

impl PipeError {
    /// Whether this is an ordinary end rather than a fault: the local
    /// application closed or reset its connection (`ECONNRESET`, `EPIPE`,
    /// or `ENOTCONN` from the final `shutdown` after its reset arrived),
    /// or the other side cancelled the stream (its own end counts the
    /// reason). Logged at debug and counted as `cancelled`, not as an error.
    pub fn is_cancel(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            PipeError::Stream(StreamError::Reset(ErrorCode::Cancel))
            | PipeError::Stream(StreamError::Stopped(ErrorCode::Cancel)) => true,
            PipeError::Tcp(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
            ),
            _ => false,
        }
    }

    /// The `outcome` label of `dwcp_tunnel_connections_total`.
    pub fn outcome(&self) -> &'static str {
        if self.is_cancel() {
            "cancelled"
        } else {
            "failed"
        }
    }
}

/// Totals of a finished pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes from the application to the peer.
    pub sent: u64,
    /// Bytes from the peer to the application.
    pub received: u64,
}

async fn tcp_to_stream(
    tcp: &mut OwnedReadHalf,
    stream: &mut SendStream,
    entry: &Entry,
) -> Result<u64, PipeError> {
    let mut total = 0u64;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let n = tcp.read_buf(&mut buf).await?;
        if n == 0 {
            stream.finish()?;
            return Ok(total);
        }
        // Gather what the socket already holds, without waiting.
        while buf.len() < READ_CHUNK {
            match tcp.try_read_buf(&mut buf) {
                Ok(0) => break, // EOF: seen by the next read
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let data = if buf.len() < COPY_BELOW {
            let d = bytes::Bytes::copy_from_slice(&buf);
            buf.clear();
            d
        } else {
            buf.split().freeze()
        };
        total += data.len() as u64;
        entry.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        stream.send(data).await?;
    }
}

async fn stream_to_tcp(
    stream: &mut RecvStream,
    tcp: &mut OwnedWriteHalf,
    entry: &Entry,
) -> Result<u64, PipeError> {
    let mut total = 0u64;
    while let Some(chunk) = stream.recv().await? {
        total += chunk.len() as u64;
        entry
            .received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        tcp.write_all(&chunk).await?;
    }
    tcp.shutdown().await?;
    Ok(total)
}

/// Pipes `tcp` and `stream` until both directions end. On failure of either
/// side, the other is aborted (stream reset with `CANCEL`, TCP closed with
/// RST) and the error returned.
///
/// # Errors
/// The first failure of either side.
pub async fn run(tcp: TcpStream, stream: Stream, entry: &Entry) -> Result<Totals, PipeError> {
    let _ = tcp.set_nodelay(true);
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (mut send, mut recv) = stream.split();
    let r = tokio::try_join!(
        tcp_to_stream(&mut tcp_rx, &mut send, entry),
        stream_to_tcp(&mut recv, &mut tcp_tx, entry),
    );
    match r {
        Ok((sent, received)) => Ok(Totals { sent, received }),
        Err(e) => {
            send.reset(ErrorCode::Cancel);
            if let Ok(tcp) = tcp_rx.reunite(tcp_tx) {
                abort(tcp);
            }
            Err(e)
        }
    }
}

/// Closes a TCP connection with RST, so the application sees an error rather
/// than a clean end of data.
pub fn abort(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn application_closes_and_peer_cancels_are_cancellations_other_ends_are_failures() {
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::BrokenPipe,
            ErrorKind::ConnectionAborted,
            ErrorKind::NotConnected,
        ] {
            assert_eq!(
                PipeError::Tcp(Error::from(kind)).outcome(),
                "cancelled",
                "{kind:?}"
            );
        }
        assert!(PipeError::Stream(StreamError::Reset(ErrorCode::Cancel)).is_cancel());
        assert!(PipeError::Stream(StreamError::Stopped(ErrorCode::Cancel)).is_cancel());
        for e in [
            PipeError::Tcp(Error::from(ErrorKind::TimedOut)),
            PipeError::Stream(StreamError::Reset(ErrorCode::InternalError)),
            PipeError::Stream(StreamError::ConnectionLost(
                dwcp_core::ConnectionError::Transport("gone".into()),
            )),
        ] {
            assert_eq!(e.outcome(), "failed", "{e}");
        }
    }
}
