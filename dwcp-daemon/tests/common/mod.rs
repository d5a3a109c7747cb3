//! Two `dwcp-daemon` processes on loopback, with their certificates,
//! configurations and local test services.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwcp_core::tls::DevCa;

/// A free port below Linux's ephemeral range (32768 and up), so that no
/// socket bound to port 0 by a concurrently running test can take it between
/// this check and the daemon's bind. Spread by process id and a counter.
fn free_port(check: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + ((std::process::id().wrapping_mul(7919) + n.wrapping_mul(104_729)) % 12_000) as u16;
        if check(port) {
            return port;
        }
    }
}

/// A free TCP port on loopback.
pub fn free_tcp() -> u16 {
    free_port(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// A free UDP port on loopback.
pub fn free_udp() -> u16 {
    free_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

/// Certificates for `names` in a fresh directory.
pub fn certs(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    DevCa::new()
        .expect("CA")
        .write_pem_files(dir.path(), names)
        .expect("certs");
    dir
}

/// A daemon process.
pub struct Proc {
    pub child: Child,
    pub admin: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(config: &Path) -> Proc {
        let text = std::fs::read_to_string(config).expect("config");
        let admin = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("listen = \"127.0.0.1:")
                    .filter(|_| l.contains("#admin"))
            })
            .map(|rest| format!("127.0.0.1:{}", rest.split('"').next().unwrap_or("")))
            .expect("config has an admin line marked #admin");
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
            .args([
                "--log-level",
                &std::env::var("DWCP_TEST_LOG").unwrap_or_else(|_| "info".into()),
                "run",
                "--config",
            ])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn dwcp-daemon");
        let p = Proc {
            child,
            admin,
            config: config.to_path_buf(),
            log,
        };
        p.wait_ready();
        p
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.get("/ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon never became ready; log:\n{}", self.log_text());
    }

    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        dwcp_daemon::probe::get(&self.admin, path, Duration::from_secs(5))
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path).expect("admin answers");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for the peer named `peer` to be connected, per /api/v1/dwcp/status.
    pub fn wait_peer(&self, peer: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let v = self.json("/api/v1/dwcp/status");
            if v["peers"][peer]["state"] == "connected" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("peer {peer} never connected; log:\n{}", self.log_text());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports and files of a two-node set-up: node-a (tunnels) → node-b (services).
pub struct Pair {
    pub dir: tempfile::TempDir,
    pub a_admin: u16,
    pub b_admin: u16,
    pub b_quic: u16,
    /// Tunnel ports on node-a: echo, sink, nope (undeclared), forbidden.
    pub t_echo: u16,
    pub t_sink: u16,
    pub t_nope: u16,
    pub t_forbidden: u16,
    pub echo_target: SocketAddr,
    pub sink_target: SocketAddr,
}

/// A TCP echo server on a thread.
pub fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A server that reads to EOF and answers with the byte count (8 bytes).
pub fn count_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut n = 0u64;
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => n += k as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    addr
}

impl Pair {
    pub fn new() -> Pair {
        let dir = certs(&["node-a", "node-b", "node-c", "node-x"]);
        Pair {
            dir,
            a_admin: free_tcp(),
            b_admin: free_tcp(),
            b_quic: free_udp(),
            t_echo: free_tcp(),
            t_sink: free_tcp(),
            t_nope: free_tcp(),
            t_forbidden: free_tcp(),
            echo_target: echo_server(),
            sink_target: count_server(),
        }
    }

    fn tls(&self, name: &str) -> String {
        let d = self.dir.path().display();
        format!("[tls]\ncert = \"{d}/{name}.pem\"\nkey = \"{d}/{name}.key\"\nca = \"{d}/ca.pem\"\n")
    }

    /// node-b: services `echo`, `sink` (node-a allowed) and `private`
    /// (only node-c allowed).
    pub fn config_b(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"[node]
name = "node-b"

{tls}
[listen]
quic = "127.0.0.1:{quic}"

[admin]
listen = "127.0.0.1:{admin}" #admin

[lifecycle]
drain_grace_secs = 20

[limits]
idle_timeout_secs = 3

[[peers]]
name = "node-a"

[[peers]]
name = "node-c"

[[services]]
name = "echo"
target = "{echo}"
allowed_peers = ["node-a"]

[[services]]
name = "sink"
target = "{sink}"
allowed_peers = ["node-a"]

[[services]]
name = "private"
target = "{echo}"
allowed_peers = ["node-c"]
{extra}"#,
            tls = self.tls("node-b"),
            quic = self.b_quic,
            admin = self.b_admin,
            echo = self.echo_target,
            sink = self.sink_target,
        );
        let p = self.dir.path().join("b.toml");
        std::fs::write(&p, text).expect("write");
        p
    }

    /// node-a (or another `name` with node-a's tunnels): dials node-b, and
    /// listens on nothing (a dial-only node).
    pub fn config_a(&self, name: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"[node]
name = "{name}"

{tls}
[listen]
quic = ""

[admin]
listen = "127.0.0.1:{admin}" #admin

[lifecycle]
drain_grace_secs = 20

[limits]
idle_timeout_secs = 3

[reconnect]
initial_ms = 50
max_ms = 500

[[peers]]
name = "node-b"
address = "127.0.0.1:{quic}"

[[tunnels]]
name = "echo"
listen = "127.0.0.1:{t_echo}"
peer = "node-b"
service = "echo"
class = "interactive"

[[tunnels]]
name = "sink"
listen = "127.0.0.1:{t_sink}"
peer = "node-b"
service = "sink"
class = "bulk"
compression = "lz4"

[[tunnels]]
name = "nope"
listen = "127.0.0.1:{t_nope}"
peer = "node-b"
service = "nope"

[[tunnels]]
name = "forbidden"
listen = "127.0.0.1:{t_forbidden}"
peer = "node-b"
service = "private"
{extra}"#,
            tls = self.tls(name),
            admin = self.a_admin,
            quic = self.b_quic,
            t_echo = self.t_echo,
            t_sink = self.t_sink,
            t_nope = self.t_nope,
            t_forbidden = self.t_forbidden,
        );
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// Deterministic test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    dwcp_core::corpus::json(len, seed)
}

/// Writes `data` to the tunnel, half-closes, and reads everything back.
pub fn round_trip(port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = s.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out)
    });
    s.write_all(data)?;
    s.shutdown(std::net::Shutdown::Write)?;
    reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))?
}
