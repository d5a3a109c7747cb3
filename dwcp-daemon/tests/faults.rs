//! Faults, with nothing lost: a 20 s partition during transfers, the peer
//! daemon killed and restarted, the local service restarting, the peer's
//! address changing. Two `dwcp-daemon` processes run in two network
//! namespaces joined by dwcp-wanem's TUN delay line (20 ms RTT, 50 Mbit/s);
//! applications and services are threads inside those namespaces.
//!
//! The rule every test checks: each tunnelled connection either completes
//! with the right bytes (count and CRC-32, answered by the service) or fails
//! with an error at the application, and none hangs. A clean end of stream
//! before the service's answer is a loss and fails the test. Recovery times
//! are printed (`cargo nextest run -p dwcp-daemon --test faults
//! --no-capture`). Needs root; skipped with a message elsewhere.
#![allow(unreachable_pub)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwcp_wanem::tun::NetnsPair;
use dwcp_wanem::LinkProfile;

/// Ports inside the namespaces (fresh ones: nothing else binds there).
const QUIC: u16 = 4500;
const TCP: u16 = 4501;
const ADMIN: u16 = 9090;
const TUNNEL: u16 = 7000;
const SERVICE: u16 = 8000;
/// node-b's second address (`address_change`).
const B_NEW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// The reconnection backoff ceiling the tests configure.
const BACKOFF_MAX: Duration = Duration::from_millis(2000);

fn net(tag: &str) -> Option<Arc<NetnsPair>> {
    if let Some(why) = NetnsPair::unavailable() {
        eprintln!("SKIPPED: the fault suite {why}");
        return None;
    }
    let p = LinkProfile::wan(50, 20, 0.0);
    let back = LinkProfile {
        seed: 2,
        ..p.clone()
    };
    Some(Arc::new(
        NetnsPair::new(tag, p, back).expect("namespaces and delay line"),
    ))
}

/// Runs `f` in namespace `a` (`in_b` false) or `b` and waits for it.
fn within<T: Send + 'static>(
    net: &NetnsPair,
    in_b: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    net.spawn_in(in_b, f)
        .expect("enter namespace")
        .join()
        .expect("namespace thread")
}

/// The service: reads to EOF and answers the byte count and CRC-32 (8
/// bytes each, big-endian).
fn serve_one(mut s: TcpStream) {
    let (mut n, mut h) = (0u64, crc32fast::Hasher::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k as u64;
                h.update(&buf[..k]);
            }
            Err(_) => return,
        }
    }
    let mut answer = [0u8; 16];
    answer[..8].copy_from_slice(&n.to_be_bytes());
    answer[8..].copy_from_slice(&u64::from(h.finalize()).to_be_bytes());
    let _ = s.write_all(&answer);
}

/// Starts the service on 127.0.0.1:SERVICE in namespace b.
fn service(net: &NetnsPair) {
    let (tx, rx) = std::sync::mpsc::channel();
    net.spawn_in(true, move || {
        let l = TcpListener::bind(("127.0.0.1", SERVICE)).expect("bind service");
        let _ = tx.send(());
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve_one(s));
        }
    })
    .expect("service thread");
    rx.recv_timeout(Duration::from_secs(5)).expect("service up");
}

/// What an application saw of one tunnelled connection.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The service answered the right count and hash.
    Complete,
    /// An error at the application (reset, broken pipe, refused).
    Failed(ErrorKind),
    /// A clean end of stream before the service's answer: data lost
    /// silently.
    CleanEndTooEarly { answer_bytes: usize },
    /// The service answered something else: data lost or altered.
    Wrong { count: u64, expected: u64 },
    /// Nothing for 60 s.
    Hung,
}

/// Sends `size` bytes (pattern `seed`) through the tunnel on 127.0.0.1:port
/// in namespace a and checks the service's answer.
fn transfer(port: u16, size: usize, seed: u8) -> Outcome {
    let fail = |e: std::io::Error| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            Outcome::Hung
        } else {
            Outcome::Failed(e.kind())
        }
    };
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
    // Incompressible: a xorshift stream, so compression cannot shorten the
    // transfer.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    let mut chunk = vec![0u8; 65_536];
    let mut h = crc32fast::Hasher::new();
    let mut sent = 0usize;
    while sent < size {
        let k = chunk.len().min(size - sent);
        for w in chunk[..k].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        if let Err(e) = s.write_all(&chunk[..k]) {
            return fail(e);
        }
        h.update(&chunk[..k]);
        sent += k;
    }
    if let Err(e) = s.shutdown(std::net::Shutdown::Write) {
        return fail(e);
    }
    let mut answer = [0u8; 16];
    let mut got = 0;
    while got < answer.len() {
        match s.read(&mut answer[got..]) {
            Ok(0) => return Outcome::CleanEndTooEarly { answer_bytes: got },
            Ok(k) => got += k,
            Err(e) => return fail(e),
        }
    }
    let count = u64::from_be_bytes(answer[..8].try_into().unwrap_or_default());
    let hash = u64::from_be_bytes(answer[8..].try_into().unwrap_or_default());
    if count == size as u64 && hash == u64::from(h.finalize()) {
        Outcome::Complete
    } else {
        Outcome::Wrong {
            count,
            expected: size as u64,
        }
    }
}

/// Starts `n` transfers of `size` bytes in namespace a; returns their
/// handles.
fn start_transfers(net: &NetnsPair, n: u8, size: usize) -> Vec<std::thread::JoinHandle<Outcome>> {
    (0..n)
        .map(|i| {
            net.spawn_in(false, move || transfer(TUNNEL, size, i))
                .expect("client thread")
        })
        .collect()
}

fn outcomes(handles: Vec<std::thread::JoinHandle<Outcome>>) -> Vec<Outcome> {
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

/// No connection lost data silently or hung.
fn assert_nothing_lost(what: &str, out: &[Outcome]) {
    for o in out {
        assert!(
            matches!(o, Outcome::Complete | Outcome::Failed(_)),
            "{what}: a connection lost data or hung: {out:?}"
        );
    }
}

/// A daemon process inside a namespace.
struct Node {
    child: Child,
    net: Arc<NetnsPair>,
    in_b: bool,
    admin: String,
    log: PathBuf,
}

impl Node {
    fn start(net: &Arc<NetnsPair>, in_b: bool, config: &Path) -> Node {
        let ns = if in_b { net.names().1 } else { net.names().0 };
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dwcp-daemon")])
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn dwcp-daemon");
        let node = Node {
            child,
            net: net.clone(),
            in_b,
            admin: format!("127.0.0.1:{ADMIN}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = node.get("/ready") {
                return node;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon never became ready; log:\n{}", node.log_text());
    }

    fn get(&self, path: &str) -> Result<(u16, String), String> {
        let (admin, path) = (self.admin.clone(), path.to_string());
        within(&self.net, self.in_b, move || {
            dwcp_daemon::probe::get(&admin, &path, Duration::from_secs(5))
        })
    }

    fn peer_state(&self, peer: &str) -> String {
        let Ok((200, body)) = self.get("/api/v1/dwcp/status") else {
            return "unanswered".into();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["peers"][peer]["state"]
            .as_str()
            .unwrap_or("absent")
            .to_string()
    }

    /// Waits until `peer` is connected; returns how long that took.
    fn wait_connected(&self, peer: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.peer_state(peer) == "connected" {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{peer} not connected after {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until `peer` is no longer connected; returns how long that took.
    fn wait_lost(&self, peer: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.peer_state(peer) != "connected" {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("loss of {peer} not noticed in {timeout:?}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Both daemons' logs, for a failure message.
fn logs(a: &Node, b: &Node) -> String {
    format!(
        "node-a log:\n{}\nnode-b log:\n{}",
        a.log_text(),
        b.log_text()
    )
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Certificates and configurations of node-a (namespace a, tunnels to
/// node-b) and node-b (namespace b, the service).
struct Setup {
    dir: tempfile::TempDir,
    /// `/etc/netns/<a>/`: `ip netns exec` mounts its `hosts` over
    /// `/etc/hosts` for node-a, which finds node-b by name.
    etc: PathBuf,
}

impl Setup {
    fn new(net: &NetnsPair) -> Setup {
        let dir = common::certs(&["node-a", "node-b"]);
        let etc = Path::new("/etc/netns").join(net.names().0);
        std::fs::create_dir_all(&etc).expect("/etc/netns/<ns>");
        let s = Setup { dir, etc };
        s.point_b_at(NetnsPair::B_ADDR);
        s
    }

    /// Rewrites node-a's hosts file in place (the bind mount follows the
    /// inode) so that `node-b.fault` resolves to `addr`.
    fn point_b_at(&self, addr: Ipv4Addr) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.etc.join("hosts"))
            .expect("hosts");
        writeln!(f, "127.0.0.1 localhost\n{addr} node-b.fault").expect("write hosts");
    }

    fn tls(&self, name: &str) -> String {
        let d = self.dir.path().display();
        format!("[tls]\ncert = \"{d}/{name}.pem\"\nkey = \"{d}/{name}.key\"\nca = \"{d}/ca.pem\"\n")
    }

    /// node-b listening on `addr` (QUIC and TCP lanes).
    fn config_b(&self, addr: Ipv4Addr, idle_secs: u64) -> PathBuf {
        let text = format!(
            "[node]\nname = \"node-b\"\n\n{tls}\n[listen]\nquic = \"{addr}:{QUIC}\"\ntcp = \"{addr}:{TCP}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{ADMIN}\"\n\n[limits]\nidle_timeout_secs = {idle_secs}\n\n\
             [[peers]]\nname = \"node-a\"\n\n\
             [[services]]\nname = \"sink\"\ntarget = \"127.0.0.1:{SERVICE}\"\nallowed_peers = [\"node-a\"]\n",
            tls = self.tls("node-b"),
        );
        let p = self.dir.path().join(format!("b-{addr}.toml"));
        std::fs::write(&p, text).expect("write");
        p
    }

    /// node-a dialling `node-b.fault` over `transport`.
    fn config_a(&self, transport: &str, idle_secs: u64) -> PathBuf {
        let port = if transport == "tcp" { TCP } else { QUIC };
        let text = format!(
            "[node]\nname = \"node-a\"\n\n{tls}\n[listen]\nquic = \"\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{ADMIN}\"\n\n[limits]\nidle_timeout_secs = {idle_secs}\n\n\
             [reconnect]\ninitial_ms = 100\nmax_ms = {max}\n\n\
             [[peers]]\nname = \"node-b\"\naddress = \"node-b.fault:{port}\"\ntransport = \"{transport}\"\n\n\
             [[tunnels]]\nname = \"sink\"\nlisten = \"127.0.0.1:{TUNNEL}\"\npeer = \"node-b\"\nservice = \"sink\"\nclass = \"bulk\"\n",
            tls = self.tls("node-a"),
            max = BACKOFF_MAX.as_millis(),
        );
        let p = self.dir.path().join(format!("a-{transport}.toml"));
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// Namespaces, the service, and both daemons connected.
fn start(
    tag: &str,
    transport: &str,
    idle_secs: u64,
) -> Option<(Arc<NetnsPair>, Setup, Node, Node)> {
    let net = net(tag)?;
    let setup = Setup::new(&net);
    service(&net);
    let b = Node::start(&net, true, &setup.config_b(NetnsPair::B_ADDR, idle_secs));
    let a = Node::start(&net, false, &setup.config_a(transport, idle_secs));
    a.wait_connected("node-b", Duration::from_secs(20));
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 1 << 20, 99)),
        Outcome::Complete,
        "a transfer before any fault"
    );
    Some((net, setup, a, b))
}

/// A partition shorter than the idle timeout: the connection survives and
/// every transfer completes within seconds of the line healing. Both
/// transports needed a fix: TCP lanes' retransmission timeout and QUIC's
/// probe timeout double through the outage (TCP lanes took 20 s and more
/// after the heal, or hung; QUIC lost the connection at the idle timeout in
/// 2 of 4 runs); lanes now cap the timeout at 1 s, and QUIC lets one probe
/// through per second of silence (`net/outage_probe.rs`).
fn partition(tag: &str, transport: &str) {
    let Some((net, _setup, a, b)) = start(tag, transport, 30) else {
        return;
    };
    let handles = start_transfers(&net, 4, 4 << 20);
    std::thread::sleep(Duration::from_millis(500));
    net.partition(true);
    std::thread::sleep(Duration::from_secs(20));
    net.partition(false);
    let healed = Instant::now();
    let out = outcomes(handles);
    let done = healed.elapsed();
    assert_nothing_lost(
        &format!("{transport}: 20 s partition\n{}", logs(&a, &b)),
        &out,
    );
    assert_eq!(
        out,
        vec![Outcome::Complete; 4],
        "{transport}: transfers across a 20 s partition shorter than the idle timeout\n{}",
        logs(&a, &b)
    );
    assert_eq!(a.peer_state("node-b"), "connected");
    // 16 MiB take about 3 s at 50 Mbit/s.
    assert!(
        done < Duration::from_secs(12),
        "{transport}: transfers took {done:?} to finish after the line healed"
    );
    eprintln!(
        "FIGURE faults partition_20s {transport}: transfers completed {:.2} s after the line healed; drops {:?}",
        done.as_secs_f64(),
        net.partition_drops()
    );
}

#[test]
fn a_20_s_partition_loses_nothing_over_quic() {
    partition("fq", "quic");
}

#[test]
fn a_20_s_partition_loses_nothing_over_tcp_lanes() {
    partition("ft", "tcp");
}

/// A partition longer than the idle timeout: the connection is declared
/// dead, transfers in flight fail at the application, and the peer is
/// redialled within twice the backoff ceiling of the line healing.
#[test]
fn a_partition_past_the_idle_timeout_fails_transfers_loudly_and_reconnects() {
    let Some((net, _setup, a, _b)) = start("fi", "quic", 5) else {
        return;
    };
    let handles = start_transfers(&net, 4, 32 << 20);
    std::thread::sleep(Duration::from_millis(500));
    net.partition(true);
    let cut = Instant::now();
    let lost = a.wait_lost("node-b", Duration::from_secs(15));
    let out = outcomes(handles);
    assert_nothing_lost("partition past the idle timeout", &out);
    assert!(
        out.iter().any(|o| matches!(o, Outcome::Failed(_))),
        "32 MiB transfers cannot finish inside the partition: {out:?}"
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed()));
    net.partition(false);
    let back = a.wait_connected("node-b", 2 * BACKOFF_MAX + Duration::from_secs(1));
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 4 << 20, 7)),
        Outcome::Complete
    );
    eprintln!(
        "FIGURE faults partition_past_idle quic: loss noticed {:.2} s after the cut (idle 5 s); reconnected {:.2} s after the heal; {out:?}",
        lost.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(back <= 2 * BACKOFF_MAX, "reconnection took {back:?}");
}

/// node-b killed with SIGKILL mid-transfer and restarted.
fn peer_killed(tag: &str, transport: &str) {
    let Some((net, setup, a, mut b)) = start(tag, transport, 5) else {
        return;
    };
    let handles = start_transfers(&net, 4, 32 << 20);
    std::thread::sleep(Duration::from_millis(800));
    b.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let b2 = Node::start(&net, true, &setup.config_b(NetnsPair::B_ADDR, 5));
    let restarted = killed.elapsed();
    let out = outcomes(handles);
    let ended = killed.elapsed();
    assert_nothing_lost("peer killed", &out);
    let back = a.wait_connected("node-b", Duration::from_secs(30));
    let reconnected = killed.elapsed();
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 4 << 20, 8)),
        Outcome::Complete,
        "a transfer after the restart"
    );
    eprintln!(
        "FIGURE faults peer_killed {transport}: b ready again {:.2} s after SIGKILL; in-flight transfers ended by {:.2} s; node-a reconnected {:.2} s after the kill ({:.2} s of waiting after the transfers ended); {out:?}",
        restarted.as_secs_f64(),
        ended.as_secs_f64(),
        reconnected.as_secs_f64(),
        back.as_secs_f64(),
    );
    // Within twice the backoff ceiling of node-b being back: TCP lanes see
    // the kernel's RST; QUIC a stateless reset from the restarted endpoint
    // (not the 5 s idle timeout).
    assert!(
        reconnected <= restarted + 2 * BACKOFF_MAX,
        "node-a took {reconnected:?} to reconnect (node-b back after {restarted:?}, backoff ceiling {BACKOFF_MAX:?})"
    );
    drop(b2);
}

#[test]
fn the_peer_daemon_killed_and_restarted_loses_nothing_over_quic() {
    peer_killed("fk", "quic");
}

#[test]
fn the_peer_daemon_killed_and_restarted_loses_nothing_over_tcp_lanes() {
    peer_killed("fl", "tcp");
}

/// node-b comes back on a new address; node-a finds it by name.
#[test]
fn the_peer_moving_to_a_new_address_is_found_again() {
    let Some((net, setup, a, mut b)) = start("fm", "quic", 5) else {
        return;
    };
    b.kill();
    let (na, nb) = net.names();
    let ip = |ns: &str, args: &[&str]| {
        let st = Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip -n {ns} {args:?}");
    };
    let old = format!("{}/32", NetnsPair::B_ADDR);
    let peer = format!("{}/32", NetnsPair::A_ADDR);
    // NetnsPair names its devices `<tag>ta` and `<tag>tb`.
    let (ta, tb) = ("fmta", "fmtb");
    ip(nb, &["addr", "del", &old, "peer", &peer, "dev", tb]);
    ip(
        nb,
        &[
            "addr",
            "add",
            &format!("{B_NEW}/32"),
            "peer",
            &peer,
            "dev",
            tb,
        ],
    );
    ip(na, &["route", "add", &format!("{B_NEW}/32"), "dev", ta]);
    setup.point_b_at(B_NEW);
    let moved = Instant::now();
    let b2 = Node::start(&net, true, &setup.config_b(B_NEW, 5));
    let ready = moved.elapsed();
    // The old connection's end is seen at the idle timeout: nothing answers
    // at the old address.
    let lost = a.wait_lost("node-b", Duration::from_secs(15));
    a.wait_connected("node-b", Duration::from_secs(30));
    let total = moved.elapsed();
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 4 << 20, 9)),
        Outcome::Complete,
        "a transfer to the new address"
    );
    eprintln!(
        "FIGURE faults address_change quic: b ready at its new address {:.2} s after the move; old connection given up {:.2} s after the move (idle timeout 5 s); node-a connected to the new address {:.2} s after the move",
        ready.as_secs_f64(),
        lost.as_secs_f64(),
        total.as_secs_f64()
    );
    assert!(
        total <= ready + Duration::from_secs(5) + 2 * BACKOFF_MAX,
        "node-a took {total:?} to find node-b at its new address"
    );
    drop(b2);
}

/// The service behind node-b as a process (Python: count and CRC-32), so
/// that it can be killed like a crashing pod container.
fn service_process(net: &NetnsPair) -> Child {
    let script = format!(
        "import socket,threading,zlib\n\
         l=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         l.bind(('127.0.0.1',{SERVICE})); l.listen(64)\n\
         def one(s):\n \
         n=0;h=0\n \
         while True:\n  \
         b=s.recv(65536)\n  \
         if not b: break\n  \
         n+=len(b);h=zlib.crc32(b,h)\n \
         s.sendall(n.to_bytes(8,'big')+h.to_bytes(8,'big'))\n\
         while True:\n \
         s,_=l.accept(); threading.Thread(target=one,args=(s,),daemon=True).start()\n"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", net.names().1, "python3", "-c", &script])
        .spawn()
        .expect("python3 service");
    let deadline = Instant::now() + Duration::from_secs(10);
    while within(net, true, || {
        TcpStream::connect(("127.0.0.1", SERVICE)).is_err()
    }) {
        assert!(Instant::now() < deadline, "the service never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The service behind node-b is killed (SIGKILL) while transfers run and
/// started again: every transfer ends (none hangs, none is answered wrong)
/// and new ones complete at once. A service killed with no unread data
/// closes with FIN, which a direct client would see too: here that clean
/// end is the service's own, and is counted, not failed.
#[test]
fn the_local_service_restarting_loses_nothing() {
    let Some(net) = net("fs") else { return };
    let setup = Setup::new(&net);
    let mut svc = service_process(&net);
    let _b = Node::start(&net, true, &setup.config_b(NetnsPair::B_ADDR, 5));
    let a = Node::start(&net, false, &setup.config_a("quic", 5));
    a.wait_connected("node-b", Duration::from_secs(20));
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 1 << 20, 99)),
        Outcome::Complete
    );
    let handles = start_transfers(&net, 4, 32 << 20);
    std::thread::sleep(Duration::from_millis(800));
    let _ = svc.kill();
    let _ = svc.wait();
    let killed = Instant::now();
    let out = outcomes(handles);
    let ended = killed.elapsed();
    for o in &out {
        assert!(
            matches!(
                o,
                Outcome::Complete | Outcome::Failed(_) | Outcome::CleanEndTooEarly { .. }
            ),
            "service restart: {out:?}"
        );
    }
    let mut svc = service_process(&net);
    let restarted = killed.elapsed();
    assert_eq!(
        within(&net, false, || transfer(TUNNEL, 4 << 20, 5)),
        Outcome::Complete,
        "a transfer after the service restarted"
    );
    assert_eq!(
        a.peer_state("node-b"),
        "connected",
        "the tunnel outlives the service"
    );
    eprintln!(
        "FIGURE faults service_restart quic: in-flight transfers ended {:.2} s after the kill; service back at {:.2} s; {out:?}",
        ended.as_secs_f64(),
        restarted.as_secs_f64()
    );
    let _ = svc.kill();
    let _ = svc.wait();
}
