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
    let (acceptor, connector) = tls_endpoints().expect("TLS endpoints");
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (acceptor, connector, listener, addr)
}

/// The baseline's TLS endpoints and a connected TCP pair on loopback:
/// (acceptor, connector, client side, server side).
pub async fn loopback_tls_pair() -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    tokio::net::TcpStream,
    tokio::net::TcpStream,
) {
    let (acceptor, connector, listener, addr) = raw_tls_setup().await;
    let (server, client) = tokio::join!(listener.accept(), tokio::net::TcpStream::connect(addr));
    let (server, _) = server.expect("accept");
    (acceptor, connector, client.expect("connect"), server)
}

/// Raw tokio TCP with tokio-rustls (mutual TLS 1.3, ring): one connection.
pub async fn raw_tls_tcp_throughput(total: u64) -> f64 {
    let (acceptor, connector, client, server) = loopback_tls_pair().await;
    tls_bulk_over(&acceptor, &connector, client, server, total)
        .await
        .expect("raw TLS transfer")
}

/// The TLS endpoints of [`raw_tls_setup`] without a listener, for
/// connections made elsewhere (between network namespaces).
///
/// # Errors
/// The development CA cannot issue the certificates.
pub fn tls_endpoints() -> Result<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector), String> {
    let ca = DevCa::new().map_err(|e| e.to_string())?;
    let stls = ca.config_for("server").map_err(|e| e.to_string())?;
    let ctls = ca.config_for("client").map_err(|e| e.to_string())?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(stls.server_config().map_err(|e| e.to_string())?)),
        tokio_rustls::TlsConnector::from(Arc::new(
            ctls.client_config().map_err(|e| e.to_string())?,
        )),
    ))
}

/// The server's and the client's end of mutual TLS 1.3 over a connected
/// TCP pair (no Nagle on either), both handshakes run together.
///
/// # Errors
/// A handshake fails.
pub async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    connector: &tokio_rustls::TlsConnector,
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
) -> Result<
    (
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ),
    String,
> {
    let err = |e: std::io::Error| e.to_string();
    client.set_nodelay(true).map_err(err)?;
    server.set_nodelay(true).map_err(err)?;
    let name = rustls::pki_types::ServerName::try_from("server").map_err(|e| e.to_string())?;
    let (s, c) = tokio::join!(acceptor.accept(server), connector.connect(name, client));
    Ok((s.map_err(err)?, c.map_err(err)?))
}

/// `total` bytes from `client` to `server` (a connected TCP pair) over
/// mutual TLS 1.3: MB/s, from the first byte written to the last read.
///
/// # Errors
/// The handshake or a read or write fails, or bytes are missing.
pub async fn tls_bulk_over(
    acceptor: &tokio_rustls::TlsAcceptor,
    connector: &tokio_rustls::TlsConnector,
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    total: u64,
) -> Result<f64, String> {
    let err = |e: std::io::Error| e.to_string();
    let (mut s, mut c) = tls_handshake(acceptor, connector, client, server).await?;
    // The receiver runs as a task of its own, as a server would (on a
    // multi-threaded runtime, beside the sender). The sender keeps its end
    // of the connection until the receiver is done: closing it with the
    // server's session tickets unread resets the connection before the
    // server has read all.
    let sink = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).await.map_err(err)? {
                0 => return Ok::<u64, String>(n),
                r => n += r as u64,
            }
        }
    });
    let send = async {
        let chunk = vec![0x5a; CHUNK];
        let mut left = total;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            c.write_all(&chunk[..n]).await.map_err(err)?;
            left -= n as u64;
        }
        c.shutdown().await.map_err(err)
    };
    let start = Instant::now();
    send.await?;
    let n = sink.await.map_err(|e| e.to_string())??;
    if n != total {
        return Err(format!("raw TLS delivered {n} of {total} bytes"));
    }
    Ok(n as f64 / start.elapsed().as_secs_f64() / 1e6)
}
