//! QUIC transport (quinn) with mutual TLS.
//!
//! Connection frames (HELLO, PING, WINDOW for the connection, GOAWAY) travel on
//! the first bidirectional QUIC stream, opened by the client. Each DWCP stream
//! travels on its own bidirectional QUIC stream, opened by the side that opens
//! the DWCP stream, so a loss on one stream never delays another (no
//! cross-stream head-of-line blocking). quinn's windows are set at least as
//! large as DWCP's ceilings, so DWCP's windows, auto-tuned to the measured
//! bandwidth-delay product, are the ones that bind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{TransportConfig, VarInt};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::net::admission::{Admission, Over, SHED};
use crate::net::connection::Connection;
use crate::net::copies::{self, Copies};
use crate::net::driver::{self, Shared, WRITE_BATCH};
use crate::net::endpoint::{establish, Congestion, Counters, EndpointConfig, Error, Tls};
use crate::net::outage_probe::OutageProbeFactory;
use crate::net::reader::{read_lane, LaneRole};
use crate::net::refusals::RefusalReason;
use crate::net::transport::{LaneTx, StatsFn, Transport, TransportStats};
use crate::net::unordered::{HoleBudget, UnorderedRecv};
use crate::net::urgent_room::{UrgentGrants, UrgentRoomFactory};
use crate::tls::peer_name;
use crate::{Connection as Core, Side, StreamId, Transmit};

/// quinn's stream receive window: at least DWCP's stream ceiling.
fn stream_receive_window(p: &crate::Config) -> u64 {
    (p.max_stream_window as u64).max(1 << 20)
}

/// quinn's connection receive window: at least DWCP's connection ceiling.
fn connection_receive_window(p: &crate::Config) -> u64 {
    (p.max_connection_window as u64).max(stream_receive_window(p))
}

/// Largest UDP payload path MTU discovery tries on IPv4: Ethernet's 1500
/// bytes less IPv4's and UDP's headers. quinn's default bound is IPv6's
/// (1452), which on IPv4 sent 1.4 % more packets than needed for the same
/// bytes (each one encrypted, sent and acknowledged; the goodput share of
/// the link moves by the headers' share only, under 0.1 %).
pub(crate) const MTU_UPPER_BOUND_V4: u16 = 1472;
/// The bound on IPv6 (and on sockets of both families): quinn's default.
/// 1472 there costs more than it gains: its probes are lost, and quinn's
/// search, which stops once a step is under 20 bytes, then settles at 1438.
pub(crate) const MTU_UPPER_BOUND_V6: u16 = 1452;

/// The bound for paths to or from `addr` (an IPv4-mapped address is IPv4).
fn mtu_upper_bound(addr: SocketAddr) -> u16 {
    if addr.ip().to_canonical().is_ipv4() {
        MTU_UPPER_BOUND_V4
    } else {
        MTU_UPPER_BOUND_V6
    }
}

/// Ack-eliciting packets the peer may take in before it acknowledges
/// (QUIC's acknowledgement frequency extension; without it, every second
/// packet). See [`ack_frequency`].
const ACK_EVERY: u32 = 8;
/// Longest the peer may hold an acknowledgement back (quinn's timer
/// granularity, the least it advertises). Its timer fires up to another
/// millisecond late (tokio rounds deadlines up), so one to two
/// milliseconds of the path's rate wait for their acknowledgement: about
/// the controller's 2 ms scheduling room.
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// What each end asks of its peer's acknowledgements: one per [`ACK_EVERY`]
/// packets or [`ACK_DELAY`], whichever comes first, and one at once for
/// the first packet after a gap (reordering threshold 1, as without the
/// extension). The acknowledgement that declares a loss (of the third
/// packet after it) may come up to eight packets or the timer later than
/// with one per two packets: under two milliseconds.
///
/// Each acknowledgement wakes the sender's driver and costs the receiver a
/// packet: with one every second packet, the two ends of a 100 Mbit/s
/// transfer spent about a third of a core, mostly on waking threads. On
/// the TUN line (`dwcp-bench wan --tun`, DWCP's controller, 2026-12-07) the
/// driver thread of both ends was busy 20–23 % of the time against 33–36 %
/// at 100 Mbit/s on 1 and 50 ms paths (clean and 1 %), at the same rate;
/// at 10 Mbit/s, where the timer binds and the peer acknowledges about
/// every packet, and at 1 Gbit/s, 1 ms, the rate was unchanged. Every
/// eighth packet alone (no delay bound, 25 ms) left a 10 Mbit/s, 50 ms
/// path at 78 % (the window does not cover eight packets of delivery not
/// yet acknowledged there), and every 32nd a 1 Gbit/s, 1 ms path at
/// 77.1–92.6 % (median 82.3) against 89.7–93.5 %.
///
/// quinn adds the peer's delay bound to its probe timeout, and three probe
/// timeouts of nothing but loss are persistent congestion, on which the
/// controller starts over: on a 1 ms path that is now about 10 ms of
/// outage where it was about 80 ms.
fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut a = quinn::AckFrequencyConfig::default();
    a.ack_eliciting_threshold(VarInt::from_u32(ACK_EVERY - 1))
        .max_ack_delay(Some(ACK_DELAY))
        .reordering_threshold(VarInt::from_u32(1));
    a
}

/// quinn's transport settings for paths over `addr`'s family (the peer's
/// address for a client, the socket's for a server).
fn transport_config(cfg: &EndpointConfig, addr: SocketAddr) -> Arc<TransportConfig> {
    let p = &cfg.protocol;
    let mut t = TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(mtu_upper_bound(addr));
    t.mtu_discovery_config(Some(mtu));
    let stream_window = stream_receive_window(p);
    let conn_window = connection_receive_window(p);
    t.stream_receive_window(VarInt::from_u32(stream_window.min(u32::MAX as u64) as u32));
    t.receive_window(VarInt::from_u32(conn_window.min(u32::MAX as u64) as u32));
    // Follows the congestion window (see tune_send_window).
    t.send_window(INITIAL_SEND_WINDOW);
    t.max_concurrent_bidi_streams(VarInt::from_u32(p.max_streams.saturating_add(16)));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Datagrams carry only copies of small interactive writes (copies.rs);
    // what does not fit is dropped, and the stream brings it anyway.
    t.datagram_receive_buffer_size(Some(64 * 1024));
    t.datagram_send_buffer_size(64 * 1024);
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
    t.ack_frequency_config(Some(ack_frequency()));
    // Whichever controller, a probe gets through an outage once a second
    // (see outage_probe.rs), and urgent writes get past a full window
    // (see urgent_room.rs; inside the probe, so that a probe stays one
    // packet).
    t.congestion_controller_factory(Arc::new(OutageProbeFactory {
        inner: Arc::new(UrgentRoomFactory { inner }),
    }));
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
/// limits (its default is 65,536 attempts of up to 10 MiB each). `local`
/// is the listening socket's address.
pub(crate) fn server_config(
    cfg: &EndpointConfig,
    tls: &Tls,
    local: SocketAddr,
) -> Result<quinn::ServerConfig, Error> {
    let server_tls = QuicServerConfig::try_from(tls.server.clone())
        .map_err(|e| Error::Config(format!("QUIC server TLS: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
    server.transport_config(transport_config(cfg, local));
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
    let server = server_config(cfg, tls, addr)?;
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

fn stats_of(conn: quinn::Connection, copies: Arc<Copies>) -> StatsFn {
    Box::new(move || {
        #[cfg(test)]
        let _ = super::driver::tests::STATS_READS.try_with(|n| n.set(n.get() + 1));
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
            copies_sent: copies.sent(),
            copies_used: copies.used(),
            mtu: Some(s.path.current_mtu),
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
    let (tx, rx) = mpsc::channel(QUIC_QUEUE);
    let room = UrgentGrants::new(conn.clone());
    let copies = Copies::start(conn.clone(), room.clone());
    let writers = Writers::new(copies.clone(), conn.clone(), room);
    // What this connection's QUIC streams may hold behind missing data
    // (see unordered.rs): quinn's connection window, its bound before.
    let holes = HoleBudget::new(connection_receive_window(&cfg.protocol));
    let shared = Shared::new(
        core,
        Box::new(QuicRouter {
            conn: conn.clone(),
            side,
            control: tx,
            streams: HashMap::new(),
            closing: Vec::new(),
            writers: writers.clone(),
            holes: holes.clone(),
        }),
        stats_of(conn.clone(), copies.clone()),
        identity_of(&conn),
        Some(conn.remote_address()),
        cfg.link_rate_bps.map(|b| b as f64 / 8.0),
    );
    let (send, recv) = control;
    tokio::spawn(read_lane(recv, shared.clone(), LaneRole::Control));
    {
        let shared = shared.clone();
        let conn = conn.clone();
        let writers = writers.clone();
        tokio::spawn(async move {
            let mut send = send;
            write_quic_frames(&mut send, rx, &shared, &writers, true).await;
            // Control stream finished after the last frame (GOAWAY): let the peer
            // read it, then close the QUIC connection.
            let _ = send.finish();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), send.stopped()).await;
            // Data of finished streams may still be unacknowledged: closing
            // the QUIC connection now would discard it.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writers.idle()).await;
            conn.close(VarInt::from_u32(0), b"dwcp closed");
        });
    }
    {
        // Peer's QUIC streams, one per DWCP stream the peer opens.
        let shared = shared.clone();
        let conn = conn.clone();
        let writers = writers.clone();
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
                        tokio::spawn(read_accepted_quic(
                            send,
                            recv,
                            shared.clone(),
                            writers.clone(),
                            holes.clone(),
                        ));
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
        writers.clone(),
        cfg.interactive_copies,
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
/// The send window before [`tune_send_window`] first sets it.
const INITIAL_SEND_WINDOW: u64 = MIN_SEND_WINDOW * 4;

/// Keeps quinn's connection send window near what the path holds.
///
/// quinn buffers written data until it is acknowledged, up to the send
/// window. A window much larger than what the path carries turns into a
/// queue below DWCP's scheduler: bulk streams fill it and the scheduler's
/// weights stop deciding the order. So the window follows the congestion
/// window (see [`SendWindow`]).
///
/// The same tick turns interactive copies on or off ([`Copies::tick`]).
async fn tune_send_window(conn: quinn::Connection, max: u64, writers: Arc<Writers>, copy: bool) {
    let copies = &writers.copies;
    let mut tick = tokio::time::interval(copies::TICK);
    let mut window = SendWindow::new(MIN_SEND_WINDOW, max);
    loop {
        tick.tick().await;
        if conn.close_reason().is_some() {
            return;
        }
        writers.room.follow_path();
        let path = conn.stats().path;
        let now = Instant::now();
        writers.set_window(
            window.target(
                now,
                path.cwnd,
                path.current_mtu,
                path.sent_packets,
                path.lost_packets,
            ),
            now,
        );
        copies.tick(copy, path.rtt, path.cwnd, window.since_loss(now));
    }
}

/// How long after the last loss the send window keeps room for holes.
const LOSS_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);
/// Share of the decaying packet counts a 50 ms tick forgets (they cover
/// about a second).
const LOSS_SMOOTHING: f64 = 1.0 / 16.0;
/// Most losses in a row of one packet the window makes room for.
const MAX_HOLE_DEPTH: u32 = 4;

/// The send-window rule.
///
/// On a clean path 1.5 × cwnd keeps the path full: what is in flight plus
/// half a window waiting. A lost packet changes that: quinn keeps every byte
/// of a stream after a hole until the hole is acknowledged, so data sent
/// after a loss stays in the window for about two round trips (one to detect
/// the loss, one for the retransmission) instead of one. With a window of
/// 1.5 × cwnd the writers then stall behind acknowledged data, and a path
/// with 0.5 % random loss, where a hole is open most of the time, ran at
/// about three quarters of the link. For [`LOSS_MEMORY`] after a loss the
/// window is one cwnd in flight, half a cwnd to write, and 1.5 cwnd for
/// every time in a row one packet may be lost ([`hole_depth`]): at 5 %
/// loss a window of 1,800 packets sees a retransmission lost again several
/// times per round trip, and such a hole holds what follows it for four
/// or more round trips.
#[derive(Debug, Clone)]
struct SendWindow {
    min: u64,
    max: u64,
    sent: u64,
    lost: u64,
    last_loss: Option<Instant>,
    /// Packets sent and declared lost lately, decaying by
    /// [`LOSS_SMOOTHING`] a tick: their ratio is the loss rate, weighted by
    /// packets, so a tick that sent little counts little.
    recent_sent: f64,
    recent_lost: f64,
}

/// How many times in a row one of `packets` packets is likely to be lost at
/// loss rate `p`: the smallest `j` (1 to [`MAX_HOLE_DEPTH`]) for which
/// fewer than one packet in ten windows is lost `j + 1` times.
fn hole_depth(packets: f64, p: f64) -> u32 {
    let mut j = 1;
    while j < MAX_HOLE_DEPTH && packets * p.powi(j as i32 + 1) >= 0.1 {
        j += 1;
    }
    j
}

impl SendWindow {
    fn new(min: u64, max: u64) -> Self {
        SendWindow {
            min,
            max: max.max(min),
            sent: 0,
            lost: 0,
            last_loss: None,
            recent_sent: 0.0,
            recent_lost: 0.0,
        }
    }

    /// Time since the last tick that saw a packet declared lost (`MAX` if
    /// none has).
    fn since_loss(&self, now: Instant) -> std::time::Duration {
        self.last_loss.map_or(std::time::Duration::MAX, |t| {
            now.saturating_duration_since(t)
        })
    }

    /// The window for congestion window `cwnd` (packets of `mtu` bytes),
    /// given the connection's counts of packets sent and lost so far.
    fn target(&mut self, now: Instant, cwnd: u64, mtu: u16, sent: u64, lost: u64) -> u64 {
        // quinn's counters only grow; should they ever go back, start
        // counting again from there rather than miss losses until they pass
        // the old count.
        if sent < self.sent || lost < self.lost {
            self.sent = sent;
            self.lost = lost;
        }
        let new_lost = lost - self.lost;
        if new_lost > 0 {
            self.last_loss = Some(now);
        }
        self.recent_sent = self.recent_sent * (1.0 - LOSS_SMOOTHING) + (sent - self.sent) as f64;
        self.recent_lost = self.recent_lost * (1.0 - LOSS_SMOOTHING) + new_lost as f64;
        self.sent = sent;
        self.lost = lost;
        let loss_rate = if self.recent_sent > 0.0 {
            (self.recent_lost / self.recent_sent).min(1.0)
        } else {
            0.0
        };
        let lossy = self
            .last_loss
            .is_some_and(|t| now.saturating_duration_since(t) < LOSS_MEMORY);
        // No recent loss: no hole to make room for (1.5 × cwnd).
        let depth = if lossy {
            let packets = cwnd as f64 / f64::from(mtu.max(1200));
            u64::from(hole_depth(packets, loss_rate))
        } else {
            0
        };
        let w = (cwnd.saturating_mul(1 + 3 * depth) / 2).saturating_add(cwnd);
        w.clamp(self.min, self.max)
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
    client.transport_config(transport_config(cfg, addr));
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
            let fut = async {
                let conn = incoming.accept()?.await?;
                let control = conn.accept_bi().await?;
                let c = start(conn, Side::Server, &cfg, control)?;
                establish(c, cfg.handshake_timeout).await
            };
            // Dropping the unfinished handshake on timeout, or when its place
            // is shed to another source, closes it.
            let Some(outcome) = permit
                .unless_shed(tokio::time::timeout(cfg.handshake_timeout, fut))
                .await
            else {
                counters.failed(RefusalReason::Limit, Some(addr), SHED);
                return;
            };
            match outcome {
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

/// Frames queued per QUIC stream: each carries a single DWCP stream, and a
/// stream whose queue is full is paused in the scheduler, so the depth only
/// batches writes; kept small so weights, not queue depth, share the link.
pub(crate) const QUIC_QUEUE: usize = 16;

/// Routes frames onto QUIC streams: connection frames on the control
/// stream, each DWCP stream on its own QUIC stream (no head-of-line blocking
/// between DWCP streams), opened by the side that opens the DWCP stream when
/// its first frame (the OPEN) is routed, accepted for the peer's streams.
pub(crate) struct QuicRouter {
    conn: quinn::Connection,
    side: Side,
    control: LaneTx,
    streams: HashMap<StreamId, LaneTx>,
    /// Streams closed by the core whose QUIC stream is finished once the
    /// frames already produced for them are queued.
    closing: Vec<StreamId>,
    writers: Arc<Writers>,
    /// Bytes the connection's QUIC streams may hold out of order.
    holes: Arc<HoleBudget>,
}

impl Transport for QuicRouter {
    fn route(&mut self, t: &Transmit, shared: &Arc<Shared>) -> Option<(u64, LaneTx)> {
        let stream = t.stream;
        let interactive = stream != 0 && t.interactive;
        if stream == 0 {
            return Some((0, self.control.clone()));
        }
        if let Some(tx) = self.streams.get(&stream) {
            return Some((stream as u64, tx.clone()));
        }
        let local = (stream % 2 == 1) == (self.side == Side::Client);
        if !local {
            debug!(
                stream,
                "dwcp: dropping a frame for a peer stream with no QUIC stream"
            );
            return None;
        }
        // A stream of ours with no QUIC stream yet: its OPEN is the first frame.
        let tx = open_stream(
            self.conn.clone(),
            shared,
            &self.writers,
            self.holes.clone(),
            interactive,
        );
        self.streams.insert(stream, tx.clone());
        Some((stream as u64, tx))
    }

    fn attach(&mut self, stream: StreamId, lane: LaneTx) {
        self.streams.insert(stream, lane);
    }

    fn stream_closed(&mut self, stream: StreamId) {
        self.closing.push(stream);
    }

    fn flushed(&mut self) {
        // Every frame of these streams is queued: dropping the sender
        // finishes the QUIC stream after them.
        for id in self.closing.drain(..) {
            self.streams.remove(&id);
        }
    }

    fn close(&mut self) {
        // The control sender goes when the router is dropped.
        self.streams.clear();
    }
}

/// What the QUIC stream writers of one connection share.
#[derive(Debug)]
pub(crate) struct Writers {
    /// The connection's interactive copies (see copies.rs).
    copies: Arc<Copies>,
    /// Writers still running (see [`Writers::idle`]).
    running: watch::Sender<usize>,
    /// Urgent writers waiting for send-window room; bulk writers stand
    /// aside while it is above zero (see [`write_quic_frames`]).
    urgent: watch::Sender<usize>,
    /// The connection, whose send window urgent writers widen.
    conn: quinn::Connection,
    /// Room past a full congestion window for urgent writes.
    room: Arc<UrgentGrants>,
    /// The send window [`tune_send_window`] chose; changed, with the count
    /// of urgent writers, under this lock, so that neither undoes the
    /// other's window.
    window: std::sync::Mutex<WindowChoice>,
}

/// The send window the tuner chose, and the most it chose lately: in the
/// period of [`WINDOW_MEMORY`] now running and in the one before, so the
/// most of the last [`WINDOW_MEMORY`] at least.
#[derive(Debug, Clone, Copy)]
struct WindowChoice {
    target: u64,
    high: u64,
    high_before: u64,
    period_start: Instant,
}

impl WindowChoice {
    /// The most chosen in the last [`WINDOW_MEMORY`] at least.
    fn recent_high(&self) -> u64 {
        self.target.max(self.high).max(self.high_before)
    }
}

/// How long data written under a larger window may still fill quinn's
/// buffer after the tuner lowered it: it leaves as it is acknowledged,
/// within a few round trips (seven of a 200 ms path for the initial
/// 1 MiB at the start).
const WINDOW_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);

/// Room the send window gains while an urgent writer waits for it.
///
/// Waiting for acknowledgements to free room was not enough: at a
/// connection's start, with bulk streams holding the whole window and the
/// congestion window ten packets (its start until 2026-12-07), freed room
/// came in slices of tens of bytes (traced in the demo, 2026-12-07; why so
/// little was not traced further: most of the window was not sent yet,
/// and quinn keeps bytes acknowledged after a gap until the gap is), and
/// the first echoes waited 0.2–0.7 s for 1 KiB of it. Bulk writers stand aside while the
/// room is open, so it goes to the urgent writes (a bulk writer that
/// checked the gate just before it rose may still take some).
///
/// The room is above the most the tuner chose in the last
/// [`WINDOW_MEMORY`] (at least), not only its current choice: after a cut in the
/// congestion window (or two seconds after a loss, when the room for
/// holes goes) quinn may hold more than the new window, and room above
/// that would free nothing.
const URGENT_ROOM: u64 = 64 * 1024;

impl Writers {
    fn new(copies: Arc<Copies>, conn: quinn::Connection, room: Arc<UrgentGrants>) -> Arc<Writers> {
        Arc::new(Writers {
            copies,
            running: watch::channel(0).0,
            urgent: watch::channel(0).0,
            room,
            conn,
            window: std::sync::Mutex::new(WindowChoice {
                target: INITIAL_SEND_WINDOW,
                high: INITIAL_SEND_WINDOW,
                high_before: INITIAL_SEND_WINDOW,
                period_start: Instant::now(),
            }),
        })
    }

    fn choice(&self) -> std::sync::MutexGuard<'_, WindowChoice> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets quinn's send window to `c`'s target, or while an urgent writer
    /// waits, [`URGENT_ROOM`] above the most chosen lately.
    fn apply(&self, c: &WindowChoice) {
        let w = if *self.urgent.borrow() > 0 {
            c.recent_high() + URGENT_ROOM
        } else {
            c.target
        };
        self.conn.set_send_window(w);
    }

    /// The tuner chose `target`.
    fn set_window(&self, target: u64, now: Instant) {
        let mut c = self.choice();
        c.target = target;
        if now.saturating_duration_since(c.period_start) > WINDOW_MEMORY {
            c.high_before = c.high;
            c.high = target;
            c.period_start = now;
        } else {
            c.high = c.high.max(target);
        }
        self.apply(&c);
    }

    /// An urgent writer starts or stops waiting for room.
    fn urgent_waits(&self, waits: bool) {
        let c = self.choice();
        self.urgent
            .send_modify(|n| *n = if waits { *n + 1 } else { n.saturating_sub(1) });
        self.apply(&c);
    }

    /// Registers a writer (before it is spawned).
    fn guard(self: &Arc<Self>) -> WriterGuard {
        self.running.send_modify(|n| *n += 1);
        WriterGuard(self.clone())
    }

    /// Waits until every writer has delivered its data: closing the QUIC
    /// connection earlier would discard what is still unacknowledged.
    async fn idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Counts a running QUIC stream writer; dropped when it is done.
pub(crate) struct WriterGuard(Arc<Writers>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Opens a QUIC stream for a DWCP stream of ours and returns the queue of
/// its frames (its OPEN comes first); the stream's reader and writer run
/// in their own task.
fn open_stream(
    conn: quinn::Connection,
    shared: &Arc<Shared>,
    writers: &Arc<Writers>,
    holes: Arc<HoleBudget>,
    interactive: bool,
) -> LaneTx {
    let (tx, rx) = mpsc::channel(QUIC_QUEUE);
    let guard = writers.guard();
    let shared = shared.clone();
    let writers = writers.clone();
    tokio::spawn(async move {
        match conn.open_bi().await {
            Ok((send, recv)) => {
                if interactive {
                    // quinn sends higher priorities first (the control
                    // stream has 2).
                    let _ = send.set_priority(1);
                }
                let inbox = writers.copies.inbox(recv.id().into());
                let recv = UnorderedRecv::new(recv, 0, holes, inbox);
                tokio::spawn(read_lane(recv, shared.clone(), LaneRole::QuicStream));
                write_quic_lane(send, rx, shared, guard).await;
            }
            Err(e) => shared.transport_failed(&format!("opening a QUIC stream: {e}")),
        }
    });
    tx
}

/// Reads a QUIC stream accepted from the peer: its first frame names the DWCP
/// stream, whose frames this side then sends on the stream's send half.
async fn read_accepted_quic(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    writers: Arc<Writers>,
    holes: Arc<HoleBudget>,
) {
    let mut head = [0u8; crate::frame::HEADER_LEN];
    if let Err(e) = recv.read_exact(&mut head).await {
        debug!("dwcp: accepted QUIC stream ended before its first frame: {e}");
        return;
    }
    let Some(h) = crate::frame::Header::peek(&head) else {
        return;
    };
    let (tx, rx) = mpsc::channel(QUIC_QUEUE);
    shared.lock().transport.attach(h.stream, tx);
    tokio::spawn(write_quic_lane(send, rx, shared.clone(), writers.guard()));
    // The header was read in order; the rest out of order, reassembled here.
    let inbox = writers.copies.inbox(recv.id().into());
    let recv = UnorderedRecv::new(recv, head.len() as u64, holes, inbox);
    let prefixed = tokio::io::AsyncReadExt::chain(&head[..], recv);
    read_lane(prefixed, shared, LaneRole::QuicStream).await;
}

/// Longest time urgent writers hold bulk QUIC writers back. An urgent write
/// waits for room in quinn's send window, which acknowledgements free within
/// about a packet time once bulk stops taking it; a write blocked much longer
/// waits on something else (the peer's flow control), and bulk must not stall
/// behind it.
const URGENT_HOLD_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes frames to a QUIC stream without copying until the sender is
/// dropped. Returns false if the stream failed.
///
/// quinn admits written data into one connection-wide send window, whatever
/// the stream's priority: priorities order what is sent, not who may buffer.
/// When bulk writers keep that window full, an interactive write waits for
/// room and loses the race for it to bulk writers woken by the same
/// acknowledgement (quinn wakes blocked writers together, most recent first),
/// so a 1 KiB message waited up to two round trips behind bulk. So writers
/// are of two kinds: *urgent* ones (the control stream and interactive
/// streams, sent at a higher quinn priority) and bulk ones. An urgent write
/// that finds no room raises [`Writers::urgent`] until it is done; bulk writers
/// write chunk by chunk and stand aside while it is raised, so the next room
/// freed goes to the urgent write.
async fn write_quic_frames(
    send: &mut quinn::SendStream,
    mut rx: mpsc::Receiver<Transmit>,
    shared: &Arc<Shared>,
    writers: &Writers,
    control: bool,
) -> bool {
    let mut urgent = control;
    if control {
        let _ = send.set_priority(2);
    }
    let mut gate = writers.urgent.subscribe();
    // Grows to the batches actually written: thousands of QUIC streams each
    // have a writer, most of them writing a frame or two at a time.
    let mut batch: Vec<Bytes> = Vec::new();
    // Offset of the next byte written: where a copy's bytes go.
    let mut written = 0u64;
    let quic_stream = u64::from(send.id());
    while let Some(t) = rx.recv().await {
        let stream = t.stream;
        if t.interactive && !urgent {
            // A stream the peer opened learns its class from its first frames.
            urgent = true;
            let _ = send.set_priority(1);
        }
        let t0 = Instant::now();
        batch.push(t.header);
        if !t.payload.is_empty() {
            batch.push(t.payload);
        }
        while batch.len() < WRITE_BATCH * 2 {
            match rx.try_recv() {
                Ok(t) => {
                    batch.push(t.header);
                    if !t.payload.is_empty() {
                        batch.push(t.payload);
                    }
                }
                Err(_) => break,
            }
        }
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        if urgent && !control {
            writers.copies.copy(quic_stream, written, &batch);
        }
        written += len;
        let res = if urgent {
            write_urgent(send, &mut batch, len, writers).await
        } else {
            write_bulk(send, &mut batch, &mut gate).await
        };
        if let Err(e) = res {
            shared.transport_failed(&format!("QUIC stream write failed: {e}"));
            return false;
        }
        if urgent && !control {
            tracing::trace!(stream, waited = ?t0.elapsed(), "dwcp: interactive frames written to QUIC");
        }
        batch.clear();
    }
    true
}

/// Writes `batch` whole; if quinn has no room for it now, holds bulk writers
/// back (at most [`URGENT_HOLD_MAX`]) until it is written.
async fn write_urgent(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    len: u64,
    writers: &Writers,
) -> Result<(), quinn::WriteError> {
    // `len` bytes, granted before the write: if the connection waits for
    // the congestion window, the write's wake-up finds the room open.
    writers.room.grant(len);
    let mut start = 0;
    // The common case: room now, nothing to coordinate.
    while start < batch.len() {
        match futures_util::FutureExt::now_or_never(send.write_chunks(&mut batch[start..])) {
            Some(r) => start += r?.chunks,
            None => break,
        }
    }
    if start == batch.len() {
        return Ok(());
    }
    writers.urgent_waits(true);
    struct Lower<'a>(Option<&'a Writers>);
    impl Lower<'_> {
        fn lower(&mut self) {
            if let Some(s) = self.0.take() {
                s.urgent_waits(false);
            }
        }
    }
    impl Drop for Lower<'_> {
        fn drop(&mut self) {
            self.lower();
        }
    }
    let mut hold = Lower(Some(writers));
    let deadline = tokio::time::Instant::now() + URGENT_HOLD_MAX;
    while start < batch.len() {
        let rest: u64 = batch[start..].iter().map(|b| b.len() as u64).sum();
        // Each attempt to hand the bytes over first renews their grant:
        // what was sent while this write waited may have taken it. Not
        // after they are handed over: the connection may have sent them
        // on the grant already, and a renewal then would let bulk past.
        let write = std::future::poll_fn(|cx| {
            use std::future::Future;
            writers.room.renew(rest);
            let mut w = std::pin::pin!(send.write_chunks(&mut batch[start..]));
            w.as_mut().poll(cx)
        });
        tokio::select! {
            r = write => start += r?.chunks,
            _ = tokio::time::sleep_until(deadline), if hold.0.is_some() => hold.lower(),
        }
    }
    Ok(())
}

/// Writes `batch` whole, standing aside (without writing) whenever an urgent
/// writer waits for room.
async fn write_bulk(
    send: &mut quinn::SendStream,
    batch: &mut [Bytes],
    gate: &mut watch::Receiver<usize>,
) -> Result<(), quinn::WriteError> {
    let mut start = 0;
    while start < batch.len() {
        if gate.wait_for(|n| *n == 0).await.is_err() {
            // The sender lives in `Writers`, which outlives every writer.
            return Ok(());
        }
        tokio::select! {
            // Checked first: a bulk writer woken by the same acknowledgement
            // as an urgent one must not take the room.
            biased;
            _ = gate.wait_for(|n| *n > 0) => {}
            r = send.write_chunks(&mut batch[start..]) => start += r?.chunks,
        }
    }
    Ok(())
}

/// Writes a DWCP stream's QUIC stream, then finishes it.
async fn write_quic_lane(
    mut send: quinn::SendStream,
    rx: mpsc::Receiver<Transmit>,
    shared: Arc<Shared>,
    guard: WriterGuard,
) {
    if write_quic_frames(&mut send, rx, &shared, &guard.0, false).await {
        let _ = send.finish();
        // Until the peer has everything (or gives up on the stream), so a
        // close after a drain never discards data in flight.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), send.stopped()).await;
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mtu_discovery_goes_to_full_ethernet_frames_on_ipv4_only() {
        let bound = |a: &str| mtu_upper_bound(a.parse().expect("address"));
        assert_eq!(bound("10.0.0.1:7000"), 1472);
        assert_eq!(bound("0.0.0.0:0"), 1472);
        assert_eq!(bound("[::ffff:10.0.0.1]:7000"), 1472, "IPv4-mapped");
        assert_eq!(bound("[2001:db8::1]:7000"), 1452);
        assert_eq!(bound("[::]:0"), 1452, "a socket of both families");
    }

    /// `ticks` ticks of 50 ms from `t0`, each sending 1,000 packets and
    /// losing `lost_per_tick`; the window after each.
    fn steady_loss(
        w: &mut SendWindow,
        t0: Instant,
        cwnd: u64,
        ticks: u64,
        lost_per_tick: u64,
    ) -> Vec<u64> {
        (1..=ticks)
            .map(|i| {
                let at = t0 + Duration::from_millis(50 * i);
                w.target(at, cwnd, 1400, 1000 * i, lost_per_tick * i)
            })
            .collect()
    }

    #[test]
    fn the_send_window_makes_room_for_holes_while_losses_last() {
        let t0 = Instant::now();
        let mut w = SendWindow::new(256 << 10, 64 << 20);
        let cwnd = 1 << 20;
        let mtu = 1200;
        assert_eq!(w.target(t0, cwnd, mtu, 1000, 0), cwnd * 3 / 2, "clean path");
        let t1 = t0 + Duration::from_millis(50);
        // One loss in 1,000 packets: room for one hole at a time.
        assert_eq!(w.target(t1, cwnd, mtu, 2000, 1), cwnd * 3, "a loss");
        let t2 = t1 + LOSS_MEMORY / 2;
        assert_eq!(w.target(t2, cwnd, mtu, 3000, 1), cwnd * 3, "still recent");
        let t3 = t1 + LOSS_MEMORY + Duration::from_millis(1);
        assert_eq!(
            w.target(t3, cwnd, mtu, 4000, 1),
            cwnd * 3 / 2,
            "losses over"
        );
        assert_eq!(w.target(t3, 1000, mtu, 4000, 1), 256 << 10, "floor");
        assert_eq!(w.target(t3, 1 << 30, mtu, 4000, 2), 64 << 20, "ceiling");
    }

    #[test]
    fn heavy_loss_makes_room_for_retransmissions_lost_again() {
        // 1,800 packets a window (100 Mbit/s, 200 ms): at 5 % loss some
        // retransmission is lost again several times a round trip, and one
        // is lost three times every few round trips.
        assert_eq!(hole_depth(1800.0, 0.0), 1);
        assert_eq!(hole_depth(1800.0, 0.001), 1);
        // 100 Mbit/s: 50 ms and 1 %, 100 ms and 2 %, 200 ms and 5 %.
        assert_eq!(hole_depth(450.0, 0.01), 1);
        assert_eq!(hole_depth(900.0, 0.02), 2);
        assert_eq!(hole_depth(1800.0, 0.05), 3);
        assert_eq!(hole_depth(1e9, 0.5), MAX_HOLE_DEPTH);
        let t0 = Instant::now();
        let mut w = SendWindow::new(256 << 10, 1 << 30);
        let cwnd = 1800 * 1400;
        // 5 % of the packets of each 50 ms tick lost, for two seconds.
        let targets = steady_loss(&mut w, t0, cwnd, 40, 50);
        assert_eq!(targets.last(), Some(&(cwnd * 6)), "six windows");
        // A quiet tick that declares a late loss weighs what it sent, not
        // a twentieth of the rate.
        let at = t0 + Duration::from_millis(50 * 41);
        assert_eq!(w.target(at, cwnd, 1400, 40_001, 2_001), cwnd * 6);
    }

    #[test]
    fn a_quiet_tick_with_a_late_loss_does_not_widen_the_window() {
        let t0 = Instant::now();
        let mut w = SendWindow::new(256 << 10, 1 << 30);
        let cwnd = 450 * 1400;
        // 0.5 % loss (the demo's link): room for one hole at a time.
        for target in steady_loss(&mut w, t0, cwnd, 40, 5) {
            assert_eq!(target, cwnd * 3);
        }
        // A tick that sent one packet and saw one loss declared.
        let at = t0 + Duration::from_millis(50 * 41);
        assert_eq!(w.target(at, cwnd, 1400, 40_001, 201), cwnd * 3);
    }

    #[test]
    fn counters_that_go_back_start_the_count_again() {
        let t0 = Instant::now();
        let mut w = SendWindow::new(256 << 10, 1 << 30);
        let cwnd = 1 << 20;
        assert_eq!(w.target(t0, cwnd, 1200, 10_000, 50), cwnd * 3, "losses");
        // Counts lower than before, long after those losses.
        let t1 = t0 + LOSS_MEMORY * 2;
        assert_eq!(w.target(t1, cwnd, 1200, 100, 0), cwnd * 3 / 2);
        // One loss on the new count is a loss, though 1 < 50.
        let t2 = t1 + Duration::from_millis(50);
        assert_eq!(
            w.target(t2, cwnd, 1200, 1100, 1),
            cwnd * 3,
            "the loss counts"
        );
    }
}
