//! `dwcp-bench wan --tun --share`: two flows on one emulated bottleneck.
//!
//! The same TUN delay line as `wan --tun` ([`crate::wan_tun`]). The first
//! flow sends alone for a few seconds, then the second joins (the harder
//! case: the first holds the whole path); both send until the end. Each
//! receiver counts what it got, and the shares are taken over the last part
//! of the run, after the second flow had time to settle. Pairs: two DWCP
//! controller connections, two kernel CUBIC flows (the reference), and
//! kernel CUBIC beside the DWCP controller and beside quinn BBR (what each
//! does to the traffic beside it). Needs root.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dwcp_core::net::{Congestion, Connection, StreamOptions, Transport};
use dwcp_core::tls::DevCa;
use dwcp_wanem::tun::NetnsPair;
use dwcp_wanem::LinkProfile;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wan_tun::connect;

/// When the second flow joins, in seconds after the first.
const JOIN_AFTER: f64 = 3.0;
/// Seconds after the join before the shares are measured.
const SETTLE: f64 = 7.0;
/// Shortest run of a pair, in seconds.
pub const MIN_SECS: f64 = JOIN_AFTER + SETTLE + 5.0;

/// One pair's result.
#[derive(Debug, Clone, Serialize)]
pub struct ShareFigure {
    /// The first flow (alone for the first seconds).
    pub first: String,
    /// The flow that joins.
    pub second: String,
    /// The first flow's goodput over the measured part, Mbit/s.
    pub first_mbit: f64,
    /// The second flow's goodput over the measured part, Mbit/s.
    pub second_mbit: f64,
    /// The second flow's share of what both delivered.
    pub second_share: f64,
    /// Both together over the link rate.
    pub of_link: f64,
    /// Why the pair did not finish (a flow failed; the rates are then 0).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Flow {
    Dwcp(Congestion),
    KernelCubic,
}

impl Flow {
    fn name(self) -> String {
        match self {
            Flow::Dwcp(Congestion::Dwcp) => "DWCP controller".into(),
            Flow::Dwcp(Congestion::Bbr) => "quinn BBR".into(),
            Flow::Dwcp(Congestion::Cubic) => "quinn CUBIC".into(),
            Flow::Dwcp(c) => format!("{c:?}"),
            Flow::KernelCubic => "kernel TCP CUBIC".into(),
        }
    }
}

/// Runs each pair over a `mbit` Mbit/s, `rtt_ms` ms, `loss_pct` % link for
/// `secs` seconds each (at least [`MIN_SECS`]). `only`, if given, keeps the
/// pairs whose two flows' names both contain one of its comma-separated
/// parts (`controller`: the two DWCP controller connections).
///
/// # Errors
/// Namespaces cannot be built here (not root, no TUN), or a flow fails.
pub fn run(
    mbit: u64,
    rtt_ms: u64,
    loss_pct: f64,
    secs: f64,
    only: Option<&str>,
) -> Result<Vec<ShareFigure>, String> {
    let secs = secs.max(MIN_SECS);
    let profile = LinkProfile::wan(mbit, rtt_ms, loss_pct);
    let back = LinkProfile {
        seed: profile.seed.wrapping_add(1),
        ..profile.clone()
    };
    let only = only.map(str::to_owned);
    let ns = NetnsPair::new("dwsh", profile, back).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let ca = DevCa::new().map_err(|e| e.to_string())?;
        let pairs = [
            (Flow::Dwcp(Congestion::Dwcp), Flow::Dwcp(Congestion::Dwcp)),
            (Flow::KernelCubic, Flow::KernelCubic),
            (Flow::KernelCubic, Flow::Dwcp(Congestion::Dwcp)),
            (Flow::KernelCubic, Flow::Dwcp(Congestion::Bbr)),
        ];
        let mut out = Vec::new();
        let mut port = 7300u16;
        let wanted = |f: Flow| crate::only_matches(only.as_deref(), &f.name());
        for (a, b) in pairs {
            port += 2;
            if !(wanted(a) && wanted(b)) {
                continue;
            }
            // A flow that fails is reported in its row: quinn BBR's
            // connection was lost beside CUBIC on a 200 ms path.
            let (got, error) = match rt.block_on(pair(&ns, &ca, port, a, b, secs)) {
                Ok(got) => (got, None),
                Err(e) => ((0.0, 0.0), Some(e)),
            };
            let total = got.0 + got.1;
            out.push(ShareFigure {
                first: a.name(),
                second: b.name(),
                first_mbit: got.0 * 8e-6,
                second_mbit: got.1 * 8e-6,
                second_share: if total > 0.0 { got.1 / total } else { 0.0 },
                of_link: total * 8e-6 / mbit as f64,
                error,
            });
        }
        Ok(out)
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Runs flows `a` (from the start) and `b` (from [`JOIN_AFTER`]) until
/// `secs`; returns each one's bytes/s over the measured part.
async fn pair(
    ns: &NetnsPair,
    ca: &DevCa,
    port: u16,
    a: Flow,
    b: Flow,
    secs: f64,
) -> Result<(f64, f64), String> {
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let first = start(ns, ca, port, a, end, counts[0].clone()).await?;
    tokio::time::sleep_until((t0 + Duration::from_secs_f64(JOIN_AFTER)).into()).await;
    let second = start(ns, ca, port + 1, b, end, counts[1].clone()).await?;
    let from = t0 + Duration::from_secs_f64(JOIN_AFTER + SETTLE);
    tokio::time::sleep_until(from.into()).await;
    let at_from = [0, 1].map(|i| counts[i].load(Ordering::Relaxed));
    let measured_from = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let at_end = [0, 1].map(|i| counts[i].load(Ordering::Relaxed));
    let span = measured_from.elapsed().as_secs_f64();
    first.await.map_err(|e| e.to_string())??;
    second.await.map_err(|e| e.to_string())??;
    Ok((
        (at_end[0] - at_from[0]) as f64 / span,
        (at_end[1] - at_from[1]) as f64 / span,
    ))
}

type Running = tokio::task::JoinHandle<Result<(), String>>;

/// Starts flow `flow` on `port`, sending until `end` and counting what the
/// receiver gets into `count`.
async fn start(
    ns: &NetnsPair,
    ca: &DevCa,
    port: u16,
    flow: Flow,
    end: Instant,
    count: Arc<AtomicU64>,
) -> Result<Running, String> {
    match flow {
        Flow::Dwcp(cc) => {
            let (c, s) = connect(ns, ca, port, Transport::Quic, cc).await?;
            Ok(tokio::spawn(dwcp_flow(c, s, end, count)))
        }
        Flow::KernelCubic => kernel_flow(ns, port, end, count).await,
    }
}

async fn dwcp_flow(
    c: Connection,
    s: Connection,
    end: Instant,
    count: Arc<AtomicU64>,
) -> Result<(), String> {
    let sink = tokio::spawn(async move {
        let mut st = s
            .accept_stream()
            .await
            .ok_or("the connection closed before the stream came")?;
        while let Some(b) = st.recv().await.map_err(|e| e.to_string())? {
            count.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok::<_, String>(s)
    });
    let mut st = c
        .open_stream(StreamOptions {
            compression: dwcp_core::net::Compression::Off,
            ..StreamOptions::default()
        })
        .map_err(|e| e.to_string())?;
    let chunk = Bytes::from(vec![0x5a; 256 * 1024]);
    while Instant::now() < end {
        st.send_raw(chunk.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    st.finish().map_err(|e| e.to_string())?;
    let _server = sink.await.map_err(|e| e.to_string())??;
    Ok(())
}

async fn kernel_flow(
    ns: &NetnsPair,
    port: u16,
    end: Instant,
    count: Arc<AtomicU64>,
) -> Result<Running, String> {
    let err = |e: std::io::Error| e.to_string();
    ns.enter(true).map_err(err)?;
    let l = tokio::net::TcpListener::bind((NetnsPair::B_ADDR, port))
        .await
        .map_err(err)?;
    ns.enter(false).map_err(err)?;
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(err)?;
    sock.set_tcp_congestion(b"cubic")
        .map_err(|e| format!("congestion control cubic: {e}"))?;
    sock.set_nonblocking(true).map_err(err)?;
    let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
    let to = std::net::SocketAddr::from((NetnsPair::B_ADDR, port));
    let (conn, accepted) = tokio::join!(sock.connect(to), l.accept());
    let mut tx = conn.map_err(err)?;
    let (mut rx, _) = accepted.map_err(err)?;
    Ok(tokio::spawn(async move {
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match rx.read(&mut buf).await.map_err(|e| e.to_string())? {
                    0 => return Ok::<(), String>(()),
                    k => {
                        count.fetch_add(k as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        let buf = vec![0x5au8; 1 << 16];
        while Instant::now() < end {
            tx.write_all(&buf).await.map_err(|e| e.to_string())?;
        }
        tx.shutdown().await.map_err(|e| e.to_string())?;
        sink.await.map_err(|e| e.to_string())?
    }))
}
