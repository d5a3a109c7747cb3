//! QUIC transport (quinn) with mutual TLS.
//!
//! Connection frames (HELLO, PING, WINDOW for the connection, GOAWAY) travel on
//! the first bidirectional QUIC stream, opened by the client. Each DWCP stream
//! travels on its own bidirectional QUIC stream, opened by the side that opens
//! the DWCP stream, so a loss on one stream never delays another (no
//! cross-stream head-of-line blocking). quinn's windows are set at least as
//! large as DWCP's ceilings, so DWCP's windows, auto-tuned to the measured
//! bandwidth-delay product, are the ones that bind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{TransportConfig, VarInt};
use tokio::sync::mpsc;

use crate::net::admission::{Admission, Over};
use crate::net::connection::Connection;
use crate::net::driver::{self, LaneRole, Routing, Shared, StatsFn, TransportStats};
use crate::net::endpoint::{establish, Congestion, Counters, EndpointConfig, Error, Tls};
use crate::net::outage_probe::OutageProbeFactory;
use crate::net::refusals::RefusalReason;
use crate::tls::peer_name;
use crate::{Connection as Core, Side};

fn transport_config(cfg: &EndpointConfig) -> Arc<TransportConfig> {
    let p = &cfg.protocol;
    let mut t = TransportConfig::default();
    let stream_window = (p.max_stream_window as u64).max(1 << 20);
    let conn_window = (p.max_connection_window as u64).max(stream_window);
    t.stream_receive_window(VarInt::from_u32(stream_window.min(u32::MAX as u64) as u32));
    t.receive_window(VarInt::from_u32(conn_window.min(u32::MAX as u64) as u32));
    // Starts small and follows the congestion window (see tune_send_window).
    t.send_window(MIN_SEND_WINDOW * 4);
    t.max_concurrent_bidi_streams(VarInt::from_u32(p.max_streams.saturating_add(16)));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.keep_alive_interval(Some(p.ping_interval.max(std::time::Duration::from_secs(1))));
    let idle = p.idle_timeout + std::time::Duration::from_secs(5);
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    let inner: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match cfg.congestion {
        Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
        Congestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
        Congestion::Dwcp => Arc::new(crate::net::congestion::DwcpCongestionConfig {
            ceiling: cfg.link_rate_bps.map(|b| b as f64 / 8.0),
        }),
    };
    // Whichever controller, a probe gets through an outage once a second
    // (see outage_probe.rs).
    t.congestion_controller_factory(Arc::new(OutageProbeFactory { inner }));
    Arc::new(t)
}

/// A UDP socket with large buffers, bound to `addr`.
fn socket(addr: SocketAddr, cfg: &EndpointConfig) -> Result<std::net::UdpSocket, Error> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(cfg.udp_buffer);
    let _ = sock.set_send_buffer_size(cfg.udp_buffer);
    if let Ok(got) = sock.recv_buffer_size() {
        if got < cfg.udp_buffer {
            tracing::info!(
                requested = cfg.udp_buffer,
                got,
                "dwcp: UDP receive buffer capped by the kernel; raise net.core.rmem_max to avoid drops"
            );
        }
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Bytes quinn buffers for one connection attempt not yet accepted or refused.
const INCOMING_BUFFER: u64 = 64 * 1024;

/// The quinn server configuration: TLS from `tls`, and quinn's own bound on
/// connection attempts waiting for the accept loop sized from the handshake
/// limits (its default is 65,536 attempts of up to 10 MiB each).
pub(crate) fn server_config(cfg: &EndpointConfig, tls: &Tls) -> Result<quinn::ServerConfig, Error> {
    let server_tls = QuicServerConfig::try_from(tls.server.clone())
        .map_err(|e| Error::Config(format!("QUIC server TLS: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
    server.transport_config(transport_config(cfg));
    let waiting = cfg.handshake_limits.max_pending.saturating_mul(2).max(64);
    server.max_incoming(waiting);
    server.incoming_buffer_size(INCOMING_BUFFER);
    server.incoming_buffer_size_total(INCOMING_BUFFER.saturating_mul(waiting as u64));
    Ok(server)
}

/// The endpoint's stateless-reset key and connection-ID check key, derived
/// from its TLS private key so that both survive a restart (RFC 9000,
/// 10.3). A daemon killed and started again then recognises its old
/// connection IDs as its own and answers them with stateless resets its old
/// peers accept, and they redial at once instead of waiting out the idle
/// timeout. (With quinn's defaults both keys are random per process: the
/// new process drops the old IDs as invalid and sends nothing.) The keys
/// are as secret as the private key: nobody else can forge a reset.
fn reset_key(tls: &Tls) -> quinn::EndpointConfig {
    let seed = ring::digest::digest(
        &ring::digest::SHA256,
        &[
            b"dwcp stateless reset key v1\0".as_slice(),
            tls.config.identity.key.secret_der(),
        ]
        .concat(),
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&seed.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

fn endpoint(
    sock: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    config: quinn::EndpointConfig,
) -> Result<quinn::Endpoint, Error> {
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Config("no async runtime for QUIC".into()))?;
    Ok(quinn::Endpoint::new(config, server, sock, runtime)?)
}

/// Creates the listening quinn endpoint.
pub(crate) fn bind(
    addr: SocketAddr,
    cfg: &EndpointConfig,
    tls: &Tls,
) -> Result<quinn::Endpoint, Error> {
    let server = server_config(cfg, tls)?;
    endpoint(socket(addr, cfg)?, Some(server), reset_key(tls))
}

/// Creates a client-only quinn endpoint (no server configuration: incoming
/// connection attempts are ignored).
pub(crate) fn bind_client(
    addr: SocketAddr,
    cfg: &EndpointConfig,
) -> Result<quinn::Endpoint, Error> {
    endpoint(socket(addr, cfg)?, None, quinn::EndpointConfig::default())
}

fn stats_of(conn: quinn::Connection) -> StatsFn {
    Box::new(move || {
        let s = conn.stats();
        TransportStats {
            kind: "quic",
            rtt: Some(s.path.rtt),
            min_rtt: None,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            loss_rate: if s.path.sent_packets > 0 {
                s.path.lost_packets as f64 / s.path.sent_packets as f64
            } else {
                0.0
            },
            cwnd: s.path.cwnd,
            lanes: 0,
            delivered_bytes: Some(s.udp_tx.bytes.saturating_sub(s.path.lost_bytes)),
        }
    })
}

fn identity_of(conn: &quinn::Connection) -> Option<String> {
    let any = conn.peer_identity()?;
    let certs = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    peer_name(&certs)
}

/// Starts the driver for a QUIC connection whose control stream is open.
fn start(
    conn: quinn::Connection,
    side: Side,
    cfg: &EndpointConfig,
    control: (quinn::SendStream, quinn::RecvStream),
) -> Result<Connection, Error> {
    let core =
        Core::new(cfg.protocol.clone(), side, Instant::now()).map_err(|e| Error::Config(e.0))?;
    let (tx, rx) = mpsc::channel(driver::QUIC_QUEUE);
    let shared = Shared::new(
        core,
        Routing::Quic {
            conn: conn.clone(),
            control: tx,
            streams: Default::default(),
        },
        stats_of(conn.clone()),
        identity_of(&conn),
        Some(conn.remote_address()),
        cfg.link_rate_bps.map(|b| b as f64 / 8.0),
    );
    let (send, recv) = control;
    tokio::spawn(driver::read_lane(recv, shared.clone(), LaneRole::Control));
    {
        let shared = shared.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut send = send;
            driver::write_quic_frames(&mut send, rx, &shared, true).await;
            // Control stream finished after the last frame (GOAWAY): let the peer
            // read it, then close the QUIC connection.
            let _ = send.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), send.stopped()).await;
            // Data of finished streams may still be unacknowledged: closing
            // the QUIC connection now would discard it.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), shared.writers_idle())
                .await;
            conn.close(VarInt::from_u32(0), b"dwcp closed");
        });
    }
    {
        // Peer's QUIC streams, one per DWCP stream the peer opens.
        let shared = shared.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut phase = shared.phase.clone();
            while *phase.borrow_and_update() == driver::Phase::Handshaking {
                if phase.changed().await.is_err() {
                    return;
                }
            }
            loop {
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        tokio::spawn(driver::read_accepted_quic(send, recv, shared.clone()));
                    }
                    Err(e) => {
                        shared.transport_failed(&format!("QUIC connection: {e}"));
                        return;
                    }
                }
            }
        });
    }
    tokio::spawn(tune_send_window(
        conn.clone(),
        transport_send_window(&cfg.protocol),
    ));
    tokio::spawn(driver::drive(shared.clone()));
    Ok(Connection::new(shared))
}

/// Largest QUIC send window (bytes buffered in quinn, sent or not, unacked).
pub(crate) fn transport_send_window(protocol: &crate::Config) -> u64 {
    (protocol.max_connection_window as u64).max(1 << 20)
}

/// Smallest QUIC send window.
const MIN_SEND_WINDOW: u64 = 256 * 1024;

/// Keeps quinn's connection send window near its congestion window.
///
/// quinn buffers written data until it is acknowledged, up to the send
/// window. A window much larger than what the path carries turns into a
/// queue below DWCP's scheduler: bulk streams fill it and an interactive
/// write waits for room behind seconds of bulk data. Sizing it at 1.5 × cwnd
/// keeps the path full while the scheduler, not quinn's buffer, decides order.
async fn tune_send_window(conn: quinn::Connection, max: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tick.tick().await;
        if conn.close_reason().is_some() {
            return;
        }
        let cwnd = conn.stats().path.cwnd;
        let target = (cwnd + cwnd / 2).clamp(MIN_SEND_WINDOW, max);
        conn.set_send_window(target);
    }
}

/// Connects over QUIC.
pub(crate) async fn connect(
    ep: &quinn::Endpoint,
    cfg: &EndpointConfig,
    tls: &Tls,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, Error> {
    let client_tls = QuicClientConfig::try_from(tls.client.clone())
        .map_err(|e| Error::Config(format!("QUIC client TLS: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
    client.transport_config(transport_config(cfg));
    let conn = ep.connect_with(client, addr, server_name)?.await?;
    let control = conn.open_bi().await?;
    let c = start(conn, Side::Client, cfg, control)?;
    establish(c, cfg.handshake_timeout).await
}

/// Accepts QUIC connections until the endpoint closes.
///
/// Each connection attempt is first checked against the handshake limits:
/// under load (more than `retry_above` handshakes in progress) a client whose
/// address is not validated gets a Retry, which costs us no state; beyond
/// the global or per-source bound the attempt is refused (validated
/// address) or ignored (unvalidated: answering could reflect traffic at a
/// spoofed victim). Only admitted attempts get a task, and each holds its
/// place until its handshake ends or times out.
pub(crate) async fn accept_loop(
    ep: quinn::Endpoint,
    cfg: Arc<EndpointConfig>,
    out: mpsc::Sender<Connection>,
    counters: Arc<Counters>,
    admission: Arc<Admission>,
) {
    while let Some(mut incoming) = ep.accept().await {
        let addr = incoming.remote_address();
        let validated = incoming.remote_address_validated();
        if !validated && incoming.may_retry() && admission.under_load() {
            match incoming.retry() {
                Ok(()) => {
                    counters.retried();
                    continue;
                }
                Err(e) => incoming = e.into_incoming(),
            }
        }
        let permit = match admission.try_admit(addr.ip()) {
            Ok(p) => p,
            Err(over) => {
                if validated {
                    incoming.refuse();
                } else {
                    incoming.ignore();
                }
                let what = match over {
                    Over::Total => "too many handshakes in progress",
                    Over::Source => "too many handshakes in progress from this source",
                };
                counters.failed(RefusalReason::Limit, Some(addr), what);
                continue;
            }
        };
        let cfg = cfg.clone();
        let out = out.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let fut = async {
                let conn = incoming.accept()?.await?;
                let control = conn.accept_bi().await?;
                let c = start(conn, Side::Server, &cfg, control)?;
                establish(c, cfg.handshake_timeout).await
            };
            // Dropping the unfinished handshake on timeout closes it.
            match tokio::time::timeout(cfg.handshake_timeout, fut).await {
                Ok(Ok(c)) => {
                    counters.accepted();
                    if out.try_send(c).is_err() {
                        counters.failed(RefusalReason::Backlog, Some(addr), "accept backlog full");
                    }
                }
                Ok(Err(e)) => counters.failed(e.reason(), Some(addr), e.to_string()),
                Err(_) => {
                    counters.failed(RefusalReason::Timeout, Some(addr), "handshake timed out")
                }
            }
        });
    }
}
