//! rust-yamux over one TCP + TLS connection: interactive latency under
//! bulk load, and bulk throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::raw_tls_setup;
use crate::latency::{summarise, Latency, BULK, MSG};

type Opener = mpsc::Sender<oneshot::Sender<yamux::Stream>>;

/// Drives a yamux connection; opens outbound streams on request.
async fn drive_yamux<T>(
    mut conn: yamux::Connection<T>,
    mut req: mpsc::Receiver<oneshot::Sender<yamux::Stream>>,
    inbound: Option<mpsc::Sender<yamux::Stream>>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut pending: Option<oneshot::Sender<yamux::Stream>> = None;
    std::future::poll_fn(|cx| loop {
        if pending.is_none() {
            if let std::task::Poll::Ready(Some(r)) = req.poll_recv(cx) {
                pending = Some(r);
            }
        }
        if pending.is_some() {
            match conn.poll_new_outbound(cx) {
                std::task::Poll::Ready(Ok(s)) => {
                    if let Some(p) = pending.take() {
                        let _ = p.send(s);
                    }
                    continue;
                }
                std::task::Poll::Ready(Err(_)) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => {}
            }
        }
        match conn.poll_next_inbound(cx) {
            std::task::Poll::Ready(Some(Ok(s))) => {
                if let Some(tx) = &inbound {
                    let _ = tx.try_send(s);
                }
            }
            std::task::Poll::Ready(_) => return std::task::Poll::Ready(()),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    })
    .await;
}

async fn open(o: &Opener) -> yamux::Stream {
    let (tx, rx) = oneshot::channel();
    o.send(tx).await.expect("driver");
    rx.await.expect("stream")
}

/// rust-yamux (default config) over one TCP + TLS connection.
pub async fn yamux_latency(messages: usize) -> Latency {
    let (acceptor, connector, listener, addr) = raw_tls_setup().await;
    let drained = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d2 = drained.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let tls = acceptor.accept(tcp).await.expect("tls");
        let conn =
            yamux::Connection::new(tls.compat(), yamux::Config::default(), yamux::Mode::Server);
        let (_otx, orx) = mpsc::channel(1);
        let (itx, mut irx) = mpsc::channel(64);
        tokio::spawn(drive_yamux(conn, orx, Some(itx)));
        while let Some(mut st) = irx.recv().await {
            let d = d2.clone();
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if st.read_exact(&mut kind).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                if kind[0] == b'E' {
                    let mut m = vec![0u8; MSG];
                    while st.read_exact(&mut m).await.is_ok() {
                        if st.write_all(&m).await.is_err() {
                            return;
                        }
                    }
                } else {
                    while let Ok(n) = st.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        d.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("server").expect("name");
    let tls = connector.connect(name, tcp).await.expect("tls");
    let conn = yamux::Connection::new(tls.compat(), yamux::Config::default(), yamux::Mode::Client);
    let (otx, orx) = mpsc::channel(16);
    let driver = tokio::spawn(drive_yamux(conn, orx, None));
    let mut bulk = Vec::new();
    for _ in 0..BULK {
        let mut st = open(&otx).await;
        bulk.push(tokio::spawn(async move {
            let chunk = vec![7u8; 256 * 1024];
            if st.write_all(b"B").await.is_err() {
                return;
            }
            while st.write_all(&chunk).await.is_ok() {}
        }));
    }
    let mut echo = open(&otx).await;
    echo.write_all(b"E").await.expect("kind");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let d0 = drained.load(std::sync::atomic::Ordering::Relaxed);
    let mut rtts = Vec::with_capacity(messages);
    let msg = vec![1u8; MSG];
    let mut back = vec![0u8; MSG];
    for _ in 0..messages {
        let t0 = Instant::now();
        echo.write_all(&msg).await.expect("send");
        echo.read_exact(&mut back).await.expect("recv");
        rtts.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for b in bulk {
        b.abort();
    }
    driver.abort();
    summarise(
        "rust-yamux 0.13 (default config), 1 TCP + TLS".into(),
        rtts,
        start,
        &drained,
        d0,
    )
}

/// rust-yamux (window and limits as configured by [`yamux_config`]) over
/// one TCP + TLS connection on loopback: MB/s of `total` bytes over
/// `streams` streams.
pub async fn yamux_bulk(total: u64, streams: usize) -> f64 {
    let (acceptor, connector, client, server) = super::loopback_tls_pair().await;
    yamux_bulk_over(&acceptor, &connector, client, server, total, streams)
        .await
        .expect("yamux transfer")
}

/// rust-yamux over TLS on a connected TCP pair (`client` to `server`,
/// made anywhere, e.g. between network namespaces): MB/s of `total` bytes
/// over `streams` streams, from the first stream opened to the last byte
/// read.
///
/// # Errors
/// The handshake fails, a stream fails, or bytes are missing.
pub async fn yamux_bulk_over(
    acceptor: &tokio_rustls::TlsAcceptor,
    connector: &tokio_rustls::TlsConnector,
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    total: u64,
    streams: usize,
) -> Result<f64, String> {
    let err = |e: std::io::Error| e.to_string();
    let (s, c) = super::tls_handshake(acceptor, connector, client, server).await?;
    let streams = streams.max(1);
    let (done_tx, mut done_rx) = mpsc::channel::<std::io::Result<u64>>(streams);
    let server_conn =
        yamux::Connection::new(s.compat(), yamux_config(streams), yamux::Mode::Server);
    let (_otx, orx) = mpsc::channel(1);
    let (itx, mut irx) = mpsc::channel(streams);
    // Every task of this transfer ends with it, also on an early error.
    let mut tasks = AbortOnDrop(Vec::new());
    tasks
        .0
        .push(tokio::spawn(drive_yamux(server_conn, orx, Some(itx))).abort_handle());
    tasks.0.push(
        tokio::spawn(async move {
            while let Some(mut st) = irx.recv().await {
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut n = 0u64;
                    let got = loop {
                        match st.read(&mut buf).await {
                            Ok(0) => break Ok(n),
                            Ok(k) => n += k as u64,
                            Err(e) => break Err(e),
                        }
                    };
                    let _ = done.send(got).await;
                });
            }
        })
        .abort_handle(),
    );
    let conn = yamux::Connection::new(c.compat(), yamux_config(streams), yamux::Mode::Client);
    let (otx, orx) = mpsc::channel(16);
    tasks
        .0
        .push(tokio::spawn(drive_yamux(conn, orx, None)).abort_handle());
    let per = total / streams as u64;
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..streams {
        let (tx, rx) = oneshot::channel();
        otx.send(tx).await.map_err(|_| "the yamux driver stopped")?;
        let mut st = rx.await.map_err(|_| "yamux opened no stream")?;
        let writer = tokio::spawn(async move {
            let chunk = vec![0x5au8; 1 << 20];
            let mut left = per;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                st.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
            st.close().await
        });
        tasks.0.push(writer.abort_handle());
        writers.push(writer);
    }
    for w in writers {
        w.await.map_err(|e| e.to_string())?.map_err(err)?;
    }
    let mut n = 0u64;
    for _ in 0..streams {
        n += done_rx
            .recv()
            .await
            .ok_or("a yamux reader stopped")?
            .map_err(err)?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(tasks);
    if n != per * streams as u64 {
        return Err(format!(
            "yamux delivered {n} of {} bytes",
            per * streams as u64
        ));
    }
    Ok(n as f64 / secs / 1e6)
}

/// Aborts the tasks it holds when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// yamux's defaults, with the stream limit raised to `streams` (its default,
/// 512, would refuse a 1,000-stream test).
fn yamux_config(streams: usize) -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(streams.max(512));
    c
}
