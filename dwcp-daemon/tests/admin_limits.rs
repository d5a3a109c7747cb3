//! The admin server against slow and numerous clients: unfinished requests
//! are closed within the header timeout, connections beyond the per-source
//! bound are closed at once, and `/health` keeps answering other callers.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use dwcp_daemon::admin::{serve, AdminLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LIMITS: AdminLimits = AdminLimits {
    max_connections: 64,
    max_connections_per_source: 16,
    header_timeout: Duration::from_secs(1),
    max_connection_age: Duration::from_secs(60),
};

async fn health(addr: std::net::SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    c.read_to_string(&mut out).await.expect("read");
    out
}

/// How long until the server closes `c` (reads EOF or an error).
async fn closed_after(mut c: TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => return Duration::MAX,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_requests_are_closed_and_health_still_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/health", get(|| async { "healthy" }));
    tokio::spawn(serve(listener, app, LIMITS));

    // 100 slow clients from one address: half send part of a request's
    // headers, half send nothing.
    let start = Instant::now();
    let mut slow = Vec::new();
    for i in 0..100 {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.2:0".parse().expect("addr")).expect("bind");
        let mut c = s.connect(addr).await.expect("connect");
        if i % 2 == 0 {
            let _ = c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        }
        slow.push(c);
    }
    // Meanwhile, /health answers callers from other addresses at once.
    let t = Instant::now();
    let h = health(addr).await;
    assert!(
        h.starts_with("HTTP/1.1 200") && h.ends_with("healthy"),
        "{h}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    let waits = futures_like_join(slow.into_iter().map(|c| closed_after(c, start)).collect()).await;
    let over_bound = waits
        .iter()
        .filter(|d| **d < Duration::from_millis(500))
        .count();
    assert!(
        over_bound >= 84,
        "beyond 16 per source closed at once: {over_bound}"
    );
    let slowest = waits.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < LIMITS.header_timeout + Duration::from_secs(2),
        "every unfinished request closed by the header timeout: slowest {slowest:?}"
    );
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}

async fn futures_like_join(
    fs: Vec<impl std::future::Future<Output = Duration> + Send + 'static>,
) -> Vec<Duration> {
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in fs.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task").1);
    }
    out
}
