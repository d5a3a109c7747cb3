//! The stream handle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::encoder::{Encoded, Encoder, Policy};
use crate::error::{ErrorCode, StreamError};
use crate::frame::StreamOptions as OptionBits;
use crate::net::connection::ConnRef;
use crate::selector::Level;
use crate::{CodecId, OpenParams, StreamId};

/// How a stream's data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Chosen per chunk from the data and the link (the default).
    #[default]
    Adaptive,
    /// Never compress.
    Off,
    /// Always this codec (zstd at the given level for [`CodecId::Zstd`]).
    Force(CodecId, i32),
}

/// Options of a new stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// Traffic class.
    pub class: u8,
    /// Weight within the class (0 means 1).
    pub weight: u16,
    /// Priority hint (0 = highest).
    pub priority: u8,
    /// Route or service name for the peer (at most 255 bytes).
    pub route: Bytes,
    /// Compression policy.
    pub compression: Compression,
    /// Small latency-sensitive messages.
    pub interactive: bool,
}

impl StreamOptions {
    pub(crate) fn to_params(&self) -> OpenParams {
        let mut bits = 0;
        if self.compression == Compression::Off {
            bits |= OptionBits::NO_COMPRESSION.0;
        }
        if self.interactive {
            bits |= OptionBits::INTERACTIVE.0;
        }
        OpenParams {
            class: self.class,
            priority: self.priority,
            weight: self.weight.max(1),
            options: OptionBits(bits),
            route: self.route.clone(),
        }
    }
}

/// A bidirectional DWCP stream.
///
/// `send`/`recv` move [`Bytes`] without copying; the `AsyncRead` and
/// `AsyncWrite` implementations copy, as those traits require. Dropping a
/// stream that was not finished resets it with `CANCEL`, so the peer never
/// mistakes an abandoned stream for a complete one.
///
/// [`Stream::split`] gives the two directions to two tasks, so a writer
/// blocked on flow control never stops the reader (the cause of yamux's
/// both-sides-writing deadlock).
#[derive(Debug)]
pub struct Stream {
    send: SendStream,
    recv: RecvStream,
}

/// The sending half of a [`Stream`] (see [`Stream::split`]).
///
/// Dropping it before [`SendStream::finish`] resets the stream with `CANCEL`.
#[derive(Debug)]
pub struct SendStream {
    id: StreamId,
    conn: Arc<ConnRef>,
    finished: bool,
    reset: bool,
    compression: Compression,
    class: u8,
    encoder: Option<Arc<std::sync::Mutex<Encoder>>>,
}

/// The receiving half of a [`Stream`] (see [`Stream::split`]).
///
/// Dropping it before the end of the stream stops reading: unread and later
/// data is discarded and its credit returned; the other direction goes on.
#[derive(Debug)]
pub struct RecvStream {
    id: StreamId,
    conn: Arc<ConnRef>,
    recv_done: bool,
    route: Bytes,
    class: u8,
}

/// Largest chunk compressed at once (also the largest compressed DATA frame).
const COMPRESS_CHUNK: usize = 128 * 1024;
/// Writes smaller than this are sent as-is: not worth a trip to the compressor.
const MIN_COMPRESS: usize = 2048;

fn io_error(e: StreamError) -> io::Error {
    let kind = match &e {
        StreamError::Reset(_) | StreamError::Refused => io::ErrorKind::ConnectionReset,
        StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
        StreamError::ClosedLocally => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl Stream {
    pub(crate) fn new(id: StreamId, conn: Arc<ConnRef>, compression: Compression) -> Stream {
        let (route, class) = {
            let inner = conn.shared.lock();
            inner
                .core
                .stream_params(id)
                .map(|p| (p.route.clone(), p.class))
                .unwrap_or_default()
        };
        Stream {
            send: SendStream {
                id,
                conn: conn.clone(),
                finished: false,
                reset: false,
                compression,
                class,
                encoder: None,
            },
            recv: RecvStream {
                id,
                conn,
                recv_done: false,
                route,
                class,
            },
        }
    }

    /// Splits the stream into its sending and receiving halves, to be driven
    /// by separate tasks.
    pub fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.send.id
    }

    /// The compression policy this handle was opened with.
    pub fn compression(&self) -> Compression {
        self.send.compression
    }

    /// The route or service name given by the opener.
    pub fn route(&self) -> Bytes {
        self.recv.route.clone()
    }

    /// The traffic class given by the opener.
    pub fn class(&self) -> u8 {
        self.send.class
    }

    /// Sends all of `data` (see [`SendStream::send`]).
    ///
    /// # Errors
    /// The stream was reset or finished, or the connection failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, a prefix of `data` may have been queued.
    pub async fn send(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send.send(data).await
    }

    /// Sends `data` as-is, never compressed, never copied.
    ///
    /// # Errors
    /// As [`Stream::send`].
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, a prefix of `data` may have been queued.
    pub async fn send_raw(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send.send_raw(data).await
    }

    /// Queues one pre-compressed chunk (see [`crate::Connection::send_encoded`]).
    ///
    /// # Errors
    /// As [`Stream::send`], plus limit and negotiation errors.
    ///
    /// # Cancel safety
    /// Cancel safe: the chunk is queued whole or not at all.
    pub async fn send_encoded(
        &mut self,
        enc: crate::frame::Encoding,
        payload: Bytes,
    ) -> Result<(), StreamError> {
        self.send.send_encoded(enc, payload).await
    }

    /// Receives the next chunk without copying (see [`RecvStream::recv`]).
    ///
    /// # Errors
    /// The peer reset the stream, or the connection failed before the FIN.
    ///
    /// # Cancel safety
    /// Cancel safe: data is only taken when it is returned.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, StreamError> {
        self.recv.recv().await
    }

    /// Finishes the sending direction; queued data is still delivered.
    ///
    /// # Errors
    /// The stream was already finished or reset, or the connection failed.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.send.finish()
    }

    /// Resets both directions with `code`.
    pub fn reset(&mut self, code: ErrorCode) {
        self.send.reset(code);
    }
}

impl SendStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn policy(&self) -> Policy {
        match self.compression {
            Compression::Adaptive => Policy::Adaptive,
            Compression::Off => Policy::Off,
            Compression::Force(CodecId::None, _) => Policy::Off,
            Compression::Force(CodecId::Lz4, _) => Policy::Force(Level::Lz4),
            Compression::Force(CodecId::Zstd, l) => Policy::Force(Level::Zstd(l)),
        }
    }

    fn encoder(&mut self) -> Arc<std::sync::Mutex<Encoder>> {
        if let Some(e) = &self.encoder {
            return e.clone();
        }
        let bits = {
            let inner = self.conn.shared.lock();
            inner.core.peer_hello().map_or(0, |h| {
                if h.capabilities.contains(crate::Capabilities::COMPRESSION) {
                    h.codecs
                } else {
                    0
                }
            })
        };
        let e = Arc::new(std::sync::Mutex::new(Encoder::new(self.policy(), bits)));
        self.encoder = Some(e.clone());
        e
    }

    fn record(&self, out: &Encoded) {
        let label = out.level.label();
        let class = self.class.to_string();
        metrics::counter!("dwcp_compression_raw_bytes_total", "class" => class.clone(), "codec" => label.clone())
            .increment(out.raw_len as u64);
        metrics::counter!("dwcp_compression_wire_bytes_total", "class" => class, "codec" => label.clone())
            .increment(out.payload.len() as u64);
        metrics::histogram!("dwcp_compression_seconds", "codec" => label.clone())
            .record(out.cpu.as_secs_f64());
        let mut map = self
            .conn
            .shared
            .compression
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = map.entry(self.class).or_default();
        c.raw += out.raw_len as u64;
        c.wire += out.payload.len() as u64;
        c.cpu += out.cpu;
        c.current = label;
    }

    fn poll_send_some(
        &mut self,
        cx: &mut Context<'_>,
        data: &Bytes,
    ) -> Poll<Result<usize, StreamError>> {
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        let r = inner.core.send(self.id, data.clone());
        match r {
            Ok(n) => {
                if n < data.len() {
                    inner.register_write(self.id, cx.waker());
                }
                inner.dispatch();
                drop(inner);
                shared.wake_driver.notify_one();
                if n == 0 && !data.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(n))
                }
            }
            Err(StreamError::Blocked) => {
                inner.register_write(self.id, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Sends all of `data`, waiting for flow-control room. Following the
    /// stream's [`Compression`] policy, data is compressed in chunks of up to
    /// 128 KiB on tokio's blocking pool (off the I/O path); data sent as-is is
    /// never copied.
    ///
    /// # Errors
    /// The stream was reset or finished, or the connection failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, a prefix of `data` may have been queued.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        if self.policy() == Policy::Off || data.len() < MIN_COMPRESS {
            return self.send_raw(data).await;
        }
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(COMPRESS_CHUNK));
            let enc = self.encoder();
            let rate = self.conn.shared.rate_hint();
            let out = tokio::task::spawn_blocking(move || {
                enc.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .encode(chunk, rate)
            })
            .await
            .map_err(|e| {
                StreamError::ConnectionLost(crate::ConnectionError::Transport(format!(
                    "compressor task failed: {e}"
                )))
            })?;
            self.record(&out);
            match out.encoding {
                None => self.send_raw(out.payload).await?,
                Some(e) => self.send_encoded(e, out.payload).await?,
            }
        }
        Ok(())
    }

    /// Sends `data` as-is (never compressed, never copied).
    ///
    /// # Errors
    /// As [`SendStream::send`].
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, a prefix of `data` may have been queued.
    pub async fn send_raw(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_send_some(cx, &data)).await?;
            data.advance(n);
        }
        Ok(())
    }

    /// Queues one pre-compressed chunk (see [`crate::Connection::send_encoded`]).
    ///
    /// # Errors
    /// As [`SendStream::send`], plus limit and negotiation errors.
    ///
    /// # Cancel safety
    /// Cancel safe: the chunk is queued whole or not at all.
    pub async fn send_encoded(
        &mut self,
        enc: crate::frame::Encoding,
        payload: Bytes,
    ) -> Result<(), StreamError> {
        std::future::poll_fn(|cx| {
            let shared = &self.conn.shared;
            let mut inner = shared.lock();
            match inner.core.send_encoded(self.id, enc, payload.clone()) {
                Ok(()) => {
                    inner.dispatch();
                    drop(inner);
                    shared.wake_driver.notify_one();
                    Poll::Ready(Ok(()))
                }
                Err(StreamError::Blocked) => {
                    inner.register_write(self.id, cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Finishes the sending direction; queued data is still delivered.
    ///
    /// # Errors
    /// The stream was already finished or reset, or the connection failed.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        let r = inner.core.finish(self.id);
        inner.dispatch();
        drop(inner);
        shared.wake_driver.notify_one();
        if r.is_ok() {
            self.finished = true;
        }
        r
    }

    /// Resets both directions of the stream with `code`.
    pub fn reset(&mut self, code: ErrorCode) {
        if self.reset {
            return;
        }
        self.reset = true;
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        // Unknown only if the stream is already gone; nothing left to reset.
        let _ = inner.core.reset(self.id, code);
        inner.forget_write_waker(self.id);
        inner.dispatch();
        drop(inner);
        shared.wake_driver.notify_one();
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if self.reset || self.finished {
            return;
        }
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        inner.forget_write_waker(self.id);
        if inner.core.stream_state(self.id).is_some() {
            let _ = inner.core.reset(self.id, ErrorCode::Cancel);
        }
        inner.dispatch();
        drop(inner);
        shared.wake_driver.notify_one();
    }
}

impl RecvStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The route or service name given by the opener.
    pub fn route(&self) -> Bytes {
        self.route.clone()
    }

    /// The traffic class given by the opener.
    pub fn class(&self) -> u8 {
        self.class
    }

    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.recv_done {
            return Poll::Ready(Ok(None));
        }
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        match inner.core.recv(self.id, max) {
            Ok(Some(b)) => {
                inner.dispatch();
                drop(inner);
                shared.wake_driver.notify_one();
                Poll::Ready(Ok(Some(b)))
            }
            Ok(None) => {
                self.recv_done = true;
                inner.dispatch();
                drop(inner);
                shared.wake_driver.notify_one();
                Poll::Ready(Ok(None))
            }
            Err(StreamError::Blocked) => {
                inner.register_read(self.id, cx.waker());
                Poll::Pending
            }
            Err(e) => {
                self.recv_done = true;
                inner.dispatch();
                Poll::Ready(Err(e))
            }
        }
    }

    /// Receives the next chunk without copying. `Ok(None)` is the clean end of
    /// the stream; a reset or a lost connection is an error, never `None`.
    ///
    /// # Errors
    /// The peer reset the stream, or the connection failed before the FIN.
    ///
    /// # Cancel safety
    /// Cancel safe: data is only taken when it is returned.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_recv(cx, usize::MAX)).await
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        let shared = &self.conn.shared;
        let mut inner = shared.lock();
        inner.forget_read_waker(self.id);
        if !self.recv_done && inner.core.stream_state(self.id).is_some() {
            let _ = inner.core.detach_reader(self.id);
        }
        inner.dispatch();
        drop(inner);
        shared.wake_driver.notify_one();
    }
}

fn poll_read_into(
    recv: &mut RecvStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    match recv.poll_recv(cx, buf.remaining()) {
        Poll::Ready(Ok(Some(b))) => {
            buf.put_slice(&b);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_into(self.get_mut(), cx, buf)
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let data = Bytes::copy_from_slice(buf);
        this.poll_send_some(cx, &data).map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data is queued in the connection; it is sent as flow control allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(this.finish().map_err(io_error))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_into(&mut self.get_mut().recv, cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}
