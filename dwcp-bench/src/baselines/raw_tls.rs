//! Raw tokio TCP with tokio-rustls: one connection, mutual TLS 1.3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dwcp_core::tls::DevCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::loopback;
use crate::scenarios::CHUNK;

/// The baseline's TLS endpoints (the same mutual TLS 1.3 configuration DWCP
/// uses) and a listening socket on loopback.
pub async fn raw_tls_setup() -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    tokio::net::TcpListener,
    SocketAddr,
) {
    let ca = DevCa::new().expect("ca");
    let stls = ca.config_for("server").expect("cert");
    let ctls = ca.config_for("client").expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(stls.server_config().expect("tls")));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ctls.client_config().expect("tls")));
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (acceptor, connector, listener, addr)
}

/// Raw tokio TCP with tokio-rustls (mutual TLS 1.3, ring): one connection.
pub async fn raw_tls_tcp_throughput(total: u64) -> f64 {
    let (acceptor, connector, listener, addr) = raw_tls_setup().await;
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let mut tls = acceptor.accept(tcp).await.expect("tls");
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let r = tls.read(&mut buf).await.expect("read");
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        n
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("server").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("tls");
    let chunk = vec![0x5a; CHUNK];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        tls.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    tls.shutdown().await.expect("shutdown");
    let n = sink.await.expect("sink");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, total);
    n as f64 / secs / 1e6
}
