//! TCP lanes: N TLS-over-TCP connections carry one DWCP connection.
//!
//! Each lane starts, inside TLS, with a 22-byte preamble: `"DWCL"`, a 16-byte
//! connection nonce, the lane index and the lane count. The acceptor groups
//! lanes by nonce and requires every lane to present the same peer identity.
//! Each DWCP stream uses lane `id % N`, so one stream's bytes are never
//! reordered; connection frames use lane 0.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::admission::{Admission, Over, SHED};
use crate::net::connection::Connection;
use crate::net::endpoint::{establish, Counters, EndpointConfig, Error, LiveTls, TcpTuning, Tls};
use crate::net::lanes::spawn_lanes;
use crate::net::lanes::{LaneGroups, Preamble, PREAMBLE_LEN};
use crate::net::refusals::RefusalReason;
use crate::net::tcp_info;
use crate::net::transport::{StatsFn, TransportStats};
use crate::tls::peer_name;
use crate::{Connection as Core, Side};

/// `TCP_RTO_MAX_MS` (Linux 6.15 and later): the ceiling of the
/// retransmission timeout's exponential backoff, in milliseconds.
const TCP_RTO_MAX_MS: libc::c_int = 44;

/// Caps the socket's retransmission timeout at `max` (the kernel accepts 1
/// to 120 s). Older kernels refuse the option.
#[allow(unsafe_code)]
fn set_rto_max(sock: &SockRef<'_>, max: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_int::try_from(max.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to
    // a live `c_int`; the descriptor belongs to `sock` for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&ms as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Applies the lane tuning to a socket. Options the kernel refuses (BBR not
/// loaded, `TCP_NOTSENT_LOWAT` or `TCP_RTO_MAX_MS` missing) are skipped,
/// logged at debug level.
///
/// Two options keep a lane from stalling a connection after a partition:
/// without them kernel TCP's retransmission timeout doubles through the
/// outage (to 25–50 s after a 20 s partition, measured in
/// `dwcp-daemon/tests/faults.rs`), and since streams are striped over every
/// lane, the slowest lane's next retransmission holds them all.
/// `rto_max` caps that backoff; `TCP_USER_TIMEOUT` at the idle timeout
/// aborts a lane whose data stays unacknowledged that long, so the
/// connection fails loudly instead of hanging.
fn tune(sock: SockRef<'_>, t: &TcpTuning, idle_timeout: Duration) {
    let _ = sock.set_tcp_nodelay(t.nodelay);
    if let Some(max) = t.rto_max {
        if let Err(e) = set_rto_max(&sock, max) {
            tracing::debug!(
                "dwcp: TCP_RTO_MAX_MS unavailable ({e}); lanes keep the kernel's RTO ceiling"
            );
        }
    }
    let _ = sock.set_tcp_user_timeout(Some(idle_timeout));
    if let Some(lowat) = t.notsent_lowat {
        let _ = sock.set_tcp_notsent_lowat(lowat);
    }
    if let Some(cc) = &t.congestion {
        if let Err(e) = sock.set_tcp_congestion(cc.as_bytes()) {
            tracing::debug!("dwcp: congestion control {cc} unavailable ({e}), keeping the default");
        }
    }
    if let Some(size) = t.socket_buffer {
        let _ = sock.set_send_buffer_size(size);
        let _ = sock.set_recv_buffer_size(size);
    }
    if let Some(idle) = t.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle / 3);
        let _ = sock.set_tcp_keepalive(&ka);
        let _ = sock.set_keepalive(true);
    }
}

fn nonce() -> [u8; 16] {
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Transport statistics summed over the lanes, from `TCP_INFO`.
fn lane_stats(socks: Vec<socket2::Socket>) -> StatsFn {
    Box::new(move || {
        let mut s = TransportStats {
            kind: "tcp",
            lanes: socks.len(),
            ..TransportStats::default()
        };
        let mut rtt_sum = std::time::Duration::ZERO;
        let mut n = 0u32;
        for sock in &socks {
            if let Some(i) = tcp_info::read(sock) {
                rtt_sum += i.rtt;
                n += 1;
                s.lost_packets += i.total_retrans;
                s.sent_packets += i.segs_out;
                s.cwnd += i.cwnd_bytes;
                *s.delivered_bytes.get_or_insert(0) += i.bytes_acked;
            }
        }
        if n > 0 {
            s.rtt = Some(rtt_sum / n);
        }
        if s.sent_packets > 0 {
            s.loss_rate = s.lost_packets as f64 / s.sent_packets as f64;
        }
        s
    })
}

/// Opens the lanes of a new connection to `addr`.
pub(crate) async fn connect(
    cfg: &EndpointConfig,
    tls: &Tls,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, Error> {
    let connector = TlsConnector::from(tls.client.clone());
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| Error::Config(format!("server name {server_name:?}: {e}")))?;
    let n = cfg.tcp.lanes;
    let id = nonce();
    let mut lanes = Vec::with_capacity(n);
    let mut socks = Vec::with_capacity(n);
    let mut identity = None;
    for i in 0..n {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        tune(SockRef::from(&socket), &cfg.tcp, cfg.protocol.idle_timeout);
        let stream = socket.connect(addr).await?;
        socks.push(SockRef::from(&stream).try_clone()?);
        let mut tls = connector
            .connect(name.clone(), stream)
            .await
            .map_err(|e| Error::TlsHandshake(e.to_string()))?;
        if identity.is_none() {
            identity = tls.get_ref().1.peer_certificates().and_then(peer_name);
        }
        let pre = Preamble {
            nonce: id,
            index: i,
            count: n,
        }
        .encode();
        tls.write_all(&pre).await?;
        lanes.push(tokio::io::split(tls));
    }
    let core = Core::new(cfg.protocol.clone(), Side::Client, Instant::now())
        .map_err(|e| Error::Config(e.0))?;
    let conn = spawn_lanes(
        core,
        lanes,
        lane_stats(socks),
        identity,
        Some(addr),
        cfg.link_rate_bps.map(|b| b as f64 / 8.0),
    );
    establish(conn, cfg.handshake_timeout).await
}

type ServerLane = tokio_rustls::server::TlsStream<TcpStream>;

struct Arrival {
    pre: Preamble,
    identity: Option<String>,
    addr: SocketAddr,
    sock: socket2::Socket,
    tls: ServerLane,
}

async fn handshake_lane(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
) -> Result<Arrival, (RefusalReason, String)> {
    let sock = SockRef::from(&stream)
        .try_clone()
        .map_err(|e| (RefusalReason::Io, e.to_string()))?;
    let mut tls = acceptor
        .accept(stream)
        .await
        .map_err(|e| (RefusalReason::Tls, format!("TLS handshake: {e}")))?;
    let identity = tls.get_ref().1.peer_certificates().and_then(peer_name);
    let mut pre = [0u8; PREAMBLE_LEN];
    tls.read_exact(&mut pre)
        .await
        .map_err(|e| (RefusalReason::Protocol, format!("lane preamble: {e}")))?;
    let pre = Preamble::parse(&pre).map_err(|e| (RefusalReason::Protocol, e.to_string()))?;
    Ok(Arrival {
        pre,
        identity,
        addr,
        sock,
        tls,
    })
}

/// What the acceptor keeps of a lane until its group is complete.
type PendingLane = (ServerLane, socket2::Socket, SocketAddr);

/// Pause after a failed `accept` (for example out of file descriptors),
/// so the loop does not spin.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts lanes, groups them into connections and hands established
/// connections to `out`.
///
/// Each lane's TLS handshake and preamble hold a place in `admission` (global
/// and per-source bounds); a connection beyond the bounds is closed at once.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<EndpointConfig>,
    tls: Arc<LiveTls>,
    out: mpsc::Sender<Connection>,
    counters: Arc<Counters>,
    admission: Arc<Admission>,
) {
    let (arr_tx, mut arr_rx) = mpsc::channel::<Arrival>(64);
    let mut groups: LaneGroups<PendingLane> = LaneGroups::new(cfg.handshake_timeout);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        counters.failed(RefusalReason::Io, None, format!("accept: {e}"));
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let permit = match admission.try_admit(addr.ip()) {
                    Ok(p) => p,
                    Err(over) => {
                        drop(stream);
                        let what = match over {
                            Over::Total => "too many handshakes in progress",
                            Over::Source => "too many handshakes in progress from this source",
                        };
                        counters.failed(RefusalReason::Limit, Some(addr), what);
                        continue;
                    }
                };
                tune(SockRef::from(&stream), &cfg.tcp, cfg.protocol.idle_timeout);
                let acceptor = TlsAcceptor::from(tls.get().server.clone());
                let tx = arr_tx.clone();
                let counters = counters.clone();
                let timeout = cfg.handshake_timeout;
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(timeout, handshake_lane(stream, addr, acceptor));
                    let Some(outcome) = permit.unless_shed(handshake).await else {
                        counters.failed(RefusalReason::Limit, Some(addr), SHED);
                        return;
                    };
                    match outcome {
                        Ok(Ok(a)) => { let _ = tx.send(a).await; }
                        Ok(Err((reason, e))) => counters.failed(reason, Some(addr), e),
                        Err(_) => counters.failed(RefusalReason::Timeout, Some(addr), "TLS handshake timed out"),
                    }
                });
            }
            Some(a) = arr_rx.recv() => {
                let addr = a.addr;
                let done = match groups.arrive(Instant::now(), a.pre, a.identity, (a.tls, a.sock, a.addr)) {
                    Ok(Some(done)) => done,
                    Ok(None) => continue,
                    Err(e) => {
                        let reason = match e {
                            crate::net::lanes::LaneError::TooManyGroups => RefusalReason::Limit,
                            _ => RefusalReason::Protocol,
                        };
                        counters.failed(reason, Some(addr), e.to_string());
                        continue;
                    }
                };
                {
                    let (lanes, identity) = done;
                    let g_addr = lanes.first().map_or(addr, |l| l.2);
                    let mut socks = Vec::with_capacity(lanes.len());
                    let lanes: Vec<_> = lanes
                        .into_iter()
                        .map(|(tls, sock, _)| {
                            socks.push(sock);
                            tokio::io::split(tls)
                        })
                        .collect();
                    let core = match Core::new(cfg.protocol.clone(), Side::Server, Instant::now()) {
                        Ok(c) => c,
                        Err(e) => { counters.failed(RefusalReason::Other, Some(g_addr), e.0); continue; }
                    };
                    let conn = spawn_lanes(core, lanes, lane_stats(socks), identity, Some(g_addr), cfg.link_rate_bps.map(|b| b as f64 / 8.0));
                    let out = out.clone();
                    let counters = counters.clone();
                    let timeout = cfg.handshake_timeout;
                    tokio::spawn(async move {
                        match establish(conn, timeout).await {
                            Ok(c) => {
                                counters.accepted();
                                if out.try_send(c).is_err() {
                                    counters.failed(RefusalReason::Backlog, Some(g_addr), "accept backlog full");
                                }
                            }
                            Err(e) => counters.failed(e.reason(), Some(g_addr), e.to_string()),
                        }
                    });
                }
            }
        }
    }
}
