//! `dwcp-bench wan --tun`: every transport on one emulated link.
//!
//! Two network namespaces joined by the `dwcp-wanem` TUN delay line, so the
//! same seeded link model (rate, delay, loss, a one-BDP queue) applies to
//! every IP packet: kernel TCP (CUBIC and BBR), raw TLS over it, rust-yamux
//! over TLS over it, DWCP over TCP lanes, and DWCP over QUIC (each
//! controller) move the same bytes on one connection, one after the other
//! in the same run. Needs root.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use dwcp_core::net::{Congestion, Endpoint, EndpointConfig, Transport};
use dwcp_core::tls::DevCa;
use dwcp_wanem::tun::NetnsPair;
use dwcp_wanem::LinkProfile;

use crate::cpu_use::{CpuMeter, CpuUse};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One transport's result.
#[derive(Debug, Clone, Serialize)]
pub struct TunFigure {
    /// What moved the bytes.
    pub subject: String,
    /// Application goodput in Mbit/s.
    pub mbit_per_s: f64,
    /// `mbit_per_s` over the link rate.
    pub of_link: f64,
    /// What the line carried in the data direction during the subject's
    /// run (IP packets: headers, retransmissions and handshakes included)
    /// over the link's capacity for the transfer's time: how full the wire
    /// was, where `of_link` is how much of it was the application's data.
    pub wire_of_link: f64,
    /// What the transport reported along the way (DWCP subjects only).
    #[serde(flatten)]
    pub sampled: Sampled,
    /// What the CPU did meanwhile, and whether it set the pace.
    #[serde(flatten)]
    pub cpu: CpuUse,
}

/// What a transfer measured besides its rate.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Sampled {
    /// Packets (QUIC) or segments (TCP, from the sender's `TCP_INFO`)
    /// retransmitted over those sent, in %.
    pub retrans_pct: Option<f64>,
    /// Median of smoothed RTT minus the link's RTT over the transfer, sampled
    /// every 100 ms: the queue the sender keeps at the bottleneck.
    pub queue_ms_p50: Option<f64>,
}

/// Runs every transport over a `mbit` Mbit/s, `rtt_ms` ms, `loss_pct` %
/// (each way) link, `total` bytes each.
///
/// # Errors
/// Namespaces cannot be built here (not root, no TUN), or a transfer fails.
/// `only`, if given, keeps the subjects whose name contains one of its
/// comma-separated parts. With `warm` = `Some(idle)`, only the DWCP
/// subjects run, each measured on a second transfer that starts `idle`
/// after the first on the same connection.
pub fn run(
    mbit: u64,
    rtt_ms: u64,
    loss_pct: f64,
    total: u64,
    only: Option<String>,
    warm: Option<std::time::Duration>,
) -> Result<Vec<TunFigure>, String> {
    let wanted = move |name: &str| {
        crate::only_matches(only.as_deref(), name) && (warm.is_none() || name.starts_with("DWCP"))
    };
    let profile = LinkProfile::wan(mbit, rtt_ms, loss_pct);
    let back = LinkProfile {
        seed: profile.seed.wrapping_add(1),
        ..profile.clone()
    };
    let ns = NetnsPair::new("dwbw", profile, back).map_err(|e| e.to_string())?;
    // One thread moves between the namespaces to create each side's
    // sockets, then drives both (see `NetnsPair::enter`).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut port = 7100u16;
        // IP bytes the line delivered from A to B so far: the difference
        // over one subject, against the application bytes it moved, is its
        // wire overhead.
        let line_bytes = |ns: &NetnsPair| ns.stats().0.bytes;
        // (Set again where a subject's measured part starts later.)
        let before = std::cell::Cell::new(line_bytes(&ns));
        let mut fig = |subject: &str, (mb_per_s, sampled): (f64, Sampled), cpu: CpuUse| {
            let mbit_per_s = mb_per_s * 8.0;
            let after = line_bytes(&ns);
            let wire = after.saturating_sub(before.get()) as f64 / total as f64;
            before.set(after);
            out.push(TunFigure {
                subject: subject.into(),
                mbit_per_s,
                of_link: mbit_per_s / mbit as f64,
                wire_of_link: mbit_per_s * wire / mbit as f64,
                sampled,
                cpu,
            });
        };
        for cc in ["cubic", "bbr"] {
            if !wanted(&format!("kernel TCP ({cc})")) {
                continue;
            }
            port += 1;
            let (v, cpu) = rt.block_on(kernel_tcp(&ns, port, cc, total))?;
            fig(&format!("kernel TCP ({cc}), 1 connection"), v, cpu);
        }
        // What users pick instead of DWCP, on kernel TCP with each
        // congestion control: one TLS connection, and rust-yamux with its
        // defaults (one stream) over one.
        let (acceptor, connector) = crate::baselines::tls_endpoints()?;
        for cc in ["cubic", "bbr"] {
            for yamux in [false, true] {
                let name = if yamux {
                    format!("rust-yamux over TLS TCP ({cc}), 1 stream")
                } else {
                    format!("raw TLS TCP ({cc}), 1 connection")
                };
                if !wanted(&name) {
                    continue;
                }
                port += 1;
                let (c, s) = rt.block_on(tcp_pair(&ns, port, cc))?;
                // A second descriptor of the sender's socket, to read its
                // TCP_INFO after the transfer has consumed the stream.
                let probe = c.as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
                let (a, k) = (&acceptor, &connector);
                // Measured over the TLS handshake too (a round trip or two
                // of an idle thread).
                let meter = CpuMeter::start();
                let v = rt.block_on(async {
                    if yamux {
                        crate::baselines::yamux_bulk_over(a, k, c, s, total, 1).await
                    } else {
                        crate::baselines::tls_bulk_over(a, k, c, s, total).await
                    }
                })?;
                let cpu = meter.stop();
                fig(&name, (v, tcp_sampled(&probe)), cpu);
            }
        }
        let ca = DevCa::new().map_err(|e| e.to_string())?;
        for (name, transport, cc) in [
            (
                "DWCP over TCP lanes (4, bbr)",
                Transport::Tcp,
                Congestion::Bbr,
            ),
            (
                "DWCP over QUIC (quinn BBR)",
                Transport::Quic,
                Congestion::Bbr,
            ),
            (
                "DWCP over QUIC (quinn CUBIC)",
                Transport::Quic,
                Congestion::Cubic,
            ),
            (
                "DWCP over QUIC (DWCP controller)",
                Transport::Quic,
                Congestion::Dwcp,
            ),
        ] {
            if !wanted(name) {
                continue;
            }
            port += 1;
            let base = std::time::Duration::from_millis(rtt_ms);
            let (v, measured_from, cpu) =
                rt.block_on(dwcp(&ns, &ca, port, transport, cc, total, base, warm))?;
            before.set(measured_from);
            fig(name, v, cpu);
        }
        Ok(out)
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// A kernel TCP connection with congestion control `cc` from namespace A
/// to a listener on `port` in namespace B: (client side, server side).
async fn tcp_pair(
    ns: &NetnsPair,
    port: u16,
    cc: &str,
) -> Result<(tokio::net::TcpStream, tokio::net::TcpStream), String> {
    let err = |e: std::io::Error| e.to_string();
    ns.enter(true).map_err(err)?;
    let l = tokio::net::TcpListener::bind((NetnsPair::B_ADDR, port))
        .await
        .map_err(err)?;
    ns.enter(false).map_err(err)?;
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(err)?;
    sock.set_tcp_congestion(cc.as_bytes())
        .map_err(|e| format!("congestion control {cc}: {e}"))?;
    sock.set_nonblocking(true).map_err(err)?;
    let to = SocketAddr::from((NetnsPair::B_ADDR, port));
    let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
    let (accepted, connected) = tokio::join!(l.accept(), sock.connect(to));
    Ok((connected.map_err(err)?, accepted.map_err(err)?.0))
}

/// The share of segments a kernel TCP sender retransmitted over its
/// connection's life (`TCP_INFO` of `sock`).
fn tcp_sampled(sock: &impl std::os::fd::AsRawFd) -> Sampled {
    let info = dwcp_core::net::tcp_info::read(sock);
    Sampled {
        retrans_pct: info
            .filter(|i| i.segs_out > 0)
            .map(|i| i.total_retrans as f64 * 100.0 / i.segs_out as f64),
        queue_ms_p50: None,
    }
}

/// Kernel TCP with congestion control `cc`: MB/s of `total` bytes, its
/// retransmissions, and the CPU used meanwhile.
async fn kernel_tcp(
    ns: &NetnsPair,
    port: u16,
    cc: &str,
    total: u64,
) -> Result<((f64, Sampled), CpuUse), String> {
    let err = |e: std::io::Error| e.to_string();
    let (mut client, mut server) = tcp_pair(ns, port, cc).await?;
    let sink = async {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            match server.read(&mut buf).await.map_err(err)? {
                0 => return Ok::<u64, String>(n),
                k => n += k as u64,
            }
        }
    };
    let send = async {
        let buf = vec![0x5au8; 1 << 16];
        let mut left = total;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            client.write_all(&buf[..k]).await.map_err(err)?;
            left -= k as u64;
        }
        client.shutdown().await.map_err(err)
    };
    let t0 = Instant::now();
    let meter = CpuMeter::start();
    let (got, sent) = tokio::join!(sink, send);
    let cpu = meter.stop();
    sent?;
    let got = got?;
    if got != total {
        return Err(format!("kernel TCP delivered {got} of {total} bytes"));
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64() / 1e6;
    Ok(((rate, tcp_sampled(&client)), cpu))
}

/// A DWCP connection from namespace A to a server on `port` in namespace B:
/// (client side, server side).
///
/// # Errors
/// An endpoint cannot bind or the handshake fails.
pub(crate) async fn connect(
    ns: &NetnsPair,
    ca: &DevCa,
    port: u16,
    transport: Transport,
    cc: Congestion,
) -> Result<(dwcp_core::net::Connection, dwcp_core::net::Connection), String> {
    let err = |e: std::io::Error| e.to_string();
    let cfg = |name: &str| -> Result<EndpointConfig, String> {
        let mut c = EndpointConfig::new(ca.config_for(name).map_err(|e| e.to_string())?, transport);
        c.congestion = cc;
        Ok(c)
    };
    ns.enter(true).map_err(err)?;
    let server = Endpoint::bind((NetnsPair::B_ADDR, port).into(), cfg("server")?)
        .await
        .map_err(|e| e.to_string())?;
    ns.enter(false).map_err(err)?;
    let client = Endpoint::bind((NetnsPair::A_ADDR, 0).into(), cfg("client")?)
        .await
        .map_err(|e| e.to_string())?;
    let (c, s) = tokio::join!(
        client.connect((NetnsPair::B_ADDR, port).into(), "server"),
        server.accept()
    );
    let c = c.map_err(|e| e.to_string())?;
    let s = s.ok_or("the server endpoint closed before the connection came")?;
    Ok((c, s))
}

/// DWCP on one stream: MB/s of `total` bytes, with what the transport
/// reported along the way. `DWCP_WAN_TRACE=1` prints every sample. With
/// `warm` = `Some(idle)`, the same bytes go once on another stream first,
/// unmeasured, and the measured transfer starts `idle` after it ends. Also
/// returns the line's byte count where the measured transfer started, and
/// the CPU used during the measured transfer.
#[allow(clippy::too_many_arguments)]
async fn dwcp(
    ns: &NetnsPair,
    ca: &DevCa,
    port: u16,
    transport: Transport,
    cc: Congestion,
    total: u64,
    base_rtt: std::time::Duration,
    warm: Option<std::time::Duration>,
) -> Result<((f64, Sampled), u64, CpuUse), String> {
    let (c, s) = connect(ns, ca, port, transport, cc).await?;
    if let Some(idle) = warm {
        let n = crate::scenarios::transfer(&c, s.clone(), 1, total).await;
        if n != total {
            return Err(format!("the first transfer moved {n} of {total} bytes"));
        }
        tokio::time::sleep(idle).await;
    }
    let line_at_start = ns.stats().0.bytes;
    let t0 = Instant::now();
    let meter = CpuMeter::start();
    let trace = std::env::var_os("DWCP_WAN_TRACE").is_some();
    let first = c.stats().transport;
    let mut queue_ms = Vec::new();
    let n = {
        let receiver = s.clone();
        let moving = crate::scenarios::transfer(&c, s, 1, total);
        tokio::pin!(moving);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                n = &mut moving => break n,
                _ = tick.tick() => {
                    let t = c.stats().transport;
                    if let Some(srtt) = t.rtt {
                        queue_ms.push(srtt.saturating_sub(base_rtt).as_secs_f64() * 1e3);
                    }
                    if trace {
                        let (sc, rs) = (c.stats().core, receiver.stats());
                        let rc = rs.core;
                        eprintln!(
                            "{:>6.2} s  cwnd {:>8}  srtt {:?}  mtu {:?}  sent {}  lost {}  \
                             DWCP: sent {} received {} rtt {:?} receiver's window {}  \
                             receiver: sent {} lost {} copies {} (used by the sender {})",
                            t0.elapsed().as_secs_f64(), t.cwnd, t.rtt, t.mtu,
                            t.sent_packets, t.lost_packets, sc.data_raw_sent,
                            rc.data_raw_received, rc.smoothed_rtt, rc.connection_window,
                            rs.transport.sent_packets, rs.transport.lost_packets,
                            rs.transport.copies_sent, t.copies_used
                        );
                    }
                }
            }
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let last = c.stats().transport;
    let sent = last.sent_packets.saturating_sub(first.sent_packets);
    let lost = last.lost_packets.saturating_sub(first.lost_packets);
    queue_ms.sort_by(f64::total_cmp);
    let sampled = Sampled {
        retrans_pct: (sent > 0).then(|| lost as f64 * 100.0 / sent as f64),
        queue_ms_p50: queue_ms.get(queue_ms.len() / 2).copied(),
    };
    Ok(((n as f64 / secs / 1e6, sampled), line_at_start, cpu))
}
