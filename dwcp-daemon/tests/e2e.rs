//! End-to-end: two `dwcp-daemon` processes on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{certs, data, round_trip, Pair, Proc};

fn start_pair() -> (Pair, Proc, Proc) {
    let pair = Pair::new();
    let b = Proc::start(&pair.config_b(""));
    let a = Proc::start(&pair.config_a("node-a", ""));
    a.wait_peer("node-b", Duration::from_secs(20));
    (pair, a, b)
}

#[test]
fn tunnel_carries_bulk_and_echo_intact() {
    let (pair, a, b) = start_pair();
    // Bulk through the echo service: 24 MiB out and back, both half-closes.
    let payload = data(24 << 20, 7);
    let back = round_trip(pair.t_echo, &payload).expect("round trip");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");

    // Bulk to the counting sink, several connections at once.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let port = pair.t_sink;
            std::thread::spawn(move || {
                let d = data((3 << 20) + i * 1000, i as u64);
                let reply = round_trip(port, &d).expect("sink");
                assert_eq!(reply, (d.len() as u64).to_be_bytes().to_vec());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sink thread");
    }

    // Small request/response on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", pair.t_echo)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for i in 0..50u32 {
        let msg = i.to_be_bytes().repeat(256);
        s.write_all(&msg).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("read");
        assert_eq!(got, msg);
    }
    drop(s);

    // The streams table and counters saw it.
    let status = a.json("/api/v1/dwcp/status");
    assert_eq!(status["peers"]["node-b"]["state"], "connected");
    let bstatus = b.json("/api/v1/dwcp/status");
    assert_eq!(bstatus["peers"]["node-a"]["state"], "connected");
}

#[test]
fn unknown_service_forbidden_service_and_unknown_peer_are_refused() {
    let (pair, a, b) = start_pair();
    for port in [pair.t_nope, pair.t_forbidden] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reset = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        };
        // Refused: an error (RST), never a clean end of data. The RST may
        // arrive before the write, which then reports it (and a read after
        // that sees the closed socket), or after it, when the read reports it.
        if let Err(e) = s.write_all(b"hello") {
            assert!(reset(&e), "port {port}: write: {e}");
            continue;
        }
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e) => assert!(reset(&e), "port {port}: {e}"),
            Ok(n) => panic!("port {port}: read {n} bytes instead of a reset"),
        }
    }
    // The refusals are logged and counted on node-b.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = b.get("/metrics").expect("metrics");
        if metrics.contains("reason=\"unknown_service\"")
            && metrics.contains("reason=\"not_allowed\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = b.log_text();
    assert!(log.contains("refused a stream"), "{log}");

    drop(a);
}

#[test]
fn a_peer_node_b_does_not_list_is_refused() {
    let pair = Pair::new();
    let b = Proc::start(&pair.config_b(""));
    // node-x holds a certificate from the same CA, but node-b lists no such peer.
    let x = Proc::start(&pair.config_a("node-x", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = b.get("/metrics").expect("metrics");
        if metrics.contains("kind=\"unknown_peer\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "unknown peer not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        b.log_text().contains("unknown peer") || b.log_text().contains("unknown_peer"),
        "{}",
        b.log_text()
    );
    wait_metric(
        &b,
        "dwcp_handshake_failures_total",
        "reason=\"unknown_peer\"",
    );
    // node-b never lists node-x as connected, and node-x's tunnels carry nothing.
    let s = b.json("/api/v1/dwcp/status");
    assert!(s["peers"].get("node-x").is_none(), "{s}");
    let r = round_trip(pair.t_echo, b"hello");
    assert!(
        r.as_ref().map_or(true, |v| v.is_empty()),
        "data crossed: {r:?}"
    );
    drop(x);
}

#[test]
fn sigterm_drains_without_cutting_streams_short() {
    let (pair, mut a, _b) = start_pair();
    // A slow upload: 8 chunks of 256 KiB, one every 250 ms (2 s in all).
    let port = pair.t_sink;
    let upload = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let chunk = data(256 * 1024, 3);
        for _ in 0..8 {
            s.write_all(&chunk).expect("write during drain");
            std::thread::sleep(Duration::from_millis(250));
        }
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply).expect("sink reply after drain");
        u64::from_be_bytes(reply)
    });
    std::thread::sleep(Duration::from_millis(400));
    a.signal("-TERM");
    // Readiness flips to 503 while the stream drains.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut saw_503 = false;
    while Instant::now() < deadline {
        if let Ok((503, body)) = a.get("/ready") {
            assert!(body.contains("draining"), "{body}");
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503, "readiness never went to 503");
    // New connections to the tunnel are refused while draining.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(("127.0.0.1", pair.t_echo)).is_err(),
        "tunnel still accepting while draining"
    );
    let got = match upload.join() {
        Ok(g) => g,
        Err(_) => panic!(
            "upload failed; node-a log:\n{}\nnode-b log:\n{}",
            a.log_text(),
            _b.log_text()
        ),
    };
    assert_eq!(got, 8 * 256 * 1024, "the stream was cut short");
    let status = a
        .wait_exit(Duration::from_secs(15))
        .expect("daemon exits after the drain");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        a.log_text()
    );
    assert!(a.log_text().contains("drained"), "{}", a.log_text());
}

#[test]
fn admin_endpoints_have_the_documented_shapes_and_metrics() {
    let (pair, a, _b) = start_pair();
    let d = data(1 << 20, 1);
    assert_eq!(round_trip(pair.t_echo, &d).expect("echo"), d);
    // Keep one connection open for the streams table.
    let mut open = TcpStream::connect(("127.0.0.1", pair.t_echo)).expect("connect");
    open.write_all(b"ping").expect("write");
    let mut b4 = [0u8; 4];
    open.read_exact(&mut b4).expect("read");

    let h = a.json("/health");
    assert_eq!(h["status"], "healthy");
    assert!(
        h["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{h}"
    );

    let r = a.json("/ready");
    assert_eq!(r["status"], "ready");

    let hd = a.json("/health/detailed");
    assert_eq!(hd["status"], "healthy");
    assert_eq!(hd["components"]["transport"], "healthy");
    assert_eq!(hd["components"]["peers"]["node-b"], "connected");

    let s = a.json("/api/v1/dwcp/status");
    assert_eq!(s["status"], "active");
    assert!(s["active_streams"].as_u64().is_some_and(|n| n >= 1), "{s}");
    assert!(s["bandwidth_allocated"].is_number(), "{s}");
    assert!(
        s["compression_ratio"].as_f64().is_some_and(|r| r >= 1.0),
        "{s}"
    );
    assert!(s["peers"]["node-b"]["rtt_ms"].is_number(), "{s}");
    // Which codec each class uses now, with its CPU time by codec.
    let classes = s["peers"]["node-b"]["compression"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!classes.is_empty(), "no compression classes: {s}");
    for (class, c) in &classes {
        assert!(
            c["codec"].as_str().is_some_and(|l| !l.is_empty()),
            "{class}: {c}"
        );
        assert!(c["ratio"].as_f64().is_some_and(|r| r > 0.0), "{class}: {c}");
        assert!(c["cpu_seconds"].is_object(), "{class}: {c}");
    }
    assert_eq!(s["tunnels"].as_array().map(Vec::len), Some(4));

    let st = a.json("/api/v1/dwcp/streams?page=1&per_page=10");
    assert_eq!(st["page"], 1);
    assert_eq!(st["per_page"], 10);
    assert!(st["total"].as_u64().is_some_and(|n| n >= 1), "{st}");
    let row = &st["streams"][0];
    for key in [
        "id",
        "stream_id",
        "peer",
        "name",
        "direction",
        "class",
        "age_secs",
        "bytes_sent",
        "bytes_received",
    ] {
        assert!(!row[key].is_null(), "streams row lacks {key}: {st}");
    }
    assert_eq!(row["direction"], "outbound");
    let (code, _) = a.get("/api/v1/dwcp/streams?per_page=0").expect("answer");
    assert_eq!(code, 400);

    let info = a.json("/api/v1/info");
    assert_eq!(info["name"], "dwcp-daemon");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["build"]["target"].is_string());
    assert!(info["features"]["transports"].is_array());

    // Wait for a sample, then check every contract metric name.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, metrics) = a.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in dwcp_daemon::telemetry::NAMES {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    for name in [
        "dwcp_compression_raw_bytes_total",
        "dwcp_compression_wire_bytes_total",
        "dwcp_compression_cpu_seconds_total",
        "dwcp_rtt_milliseconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert!(metrics.contains("peer=\"node-b\""));
    assert!(!metrics.contains("stream_id"), "a label per stream");
    // Compression counters use class names like every other metric.
    let compression: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("dwcp_compression_raw_bytes_total{"))
        .collect();
    assert!(
        !compression.is_empty()
            && compression
                .iter()
                .all(|l| l.contains("class=\"bulk\"") || l.contains("class=\"interactive\"")),
        "{compression:?}"
    );
    drop(open);

    // `dwcp-daemon health` exits 0 against a live admin server, 1 otherwise.
    let probe = |addr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
            .args(["health", "--addr", addr, "--path", "/ready"])
            .output()
            .expect("run health")
            .status
            .success()
    };
    assert!(probe(&a.admin));
    assert!(!probe(&format!("127.0.0.1:{}", common::free_tcp())));

    // Drain through `dwcp-daemon drain` (loopback): accepted, then readiness is 503.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
        .args(["drain", "--addr", &a.admin])
        .output()
        .expect("run drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    let (code, _) = a.get("/ready").expect("ready");
    assert_eq!(code, 503);
    let s = a.json("/api/v1/dwcp/status");
    assert_eq!(s["status"], "draining");
}

#[test]
fn peer_restart_is_followed_by_reconnection() {
    let (pair, a, mut b) = start_pair();
    let d = data(256 * 1024, 9);
    assert_eq!(round_trip(pair.t_echo, &d).expect("before"), d);
    b.child.kill().expect("kill node-b");
    let _ = b.child.wait();
    // node-a notices and backs off.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = a.json("/api/v1/dwcp/status");
        if s["peers"]["node-b"]["state"] != "connected" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "loss of node-b never noticed: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hd = a.json("/health/detailed");
    assert_eq!(hd["status"], "degraded");
    let b2 = Proc::start(&b.config);
    a.wait_peer("node-b", Duration::from_secs(30));
    assert_eq!(round_trip(pair.t_echo, &d).expect("after"), d);
    let s = a.json("/api/v1/dwcp/status");
    assert!(
        s["peers"]["node-b"]["reconnects"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{s}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let (_, metrics) = a.get("/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dwcp_reconnects_total{peer=\"node-b\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(b2);
}

#[test]
fn bad_configs_are_answered_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
            .arg("check-config")
            .arg(&p)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = check(
        "typo.toml",
        "[admin]\nlisten = \"127.0.0.1:9090\"\nlisen = 1\n",
    );
    assert!(!ok);
    assert!(err.contains("line 3") && err.contains("lisen"), "{err}");

    let (ok, err) = check(
        "refs.toml",
        "[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n\n[[tunnels]]\nname = \"t\"\nlisten = \"127.0.0.1:1\"\npeer = \"ghost\"\nservice = \"s\"\n",
    );
    assert!(!ok);
    assert!(
        err.contains("line 9") && err.contains("tunnels[0].peer") && err.contains("ghost"),
        "{err}"
    );

    let (ok, err) = check("syntax.toml", "[admin\n");
    assert!(!ok);
    assert!(err.contains("line 1"), "{err}");

    let (ok, err) = check("missing.toml", "");
    assert!(!ok);
    assert!(err.contains("tls.cert"), "{err}");

    // TLS files that are not there: `run` fails on them, so check-config
    // does too (it said OK), naming the file; `--offline` checks the file
    // alone.
    let p = dir.path().join("good.toml");
    std::fs::write(&p, "[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n").expect("write");
    let (ok, err) = check(
        "good.toml",
        "[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n",
    );
    assert!(!ok);
    assert!(err.contains("tls.cert a:"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
        .args(["check-config", "--offline"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    // A misspelled override is named, with the variable meant.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
        .args(["check-config", "--offline"])
        .arg(&p)
        .env("DWCP_LINK_RATE_MPBS", "100")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains("warning: DWCP_LINK_RATE_MPBS")
            && err.contains("DWCP_LINK_RATE_MBPS"),
        "{out:?}"
    );

    // Real files, checked as `run` loads them; then a key that is not the
    // certificate's.
    let pki = certs(&["node-a", "node-b"]);
    let d = pki.path().display();
    let (ok, out) = check(
        "files.toml",
        &format!(
            "[tls]\ncert = \"{d}/node-a.pem\"\nkey = \"{d}/node-a.key\"\nca = \"{d}/ca.pem\"\n"
        ),
    );
    assert!(ok, "{out}");
    let (ok, err) = check(
        "mismatch.toml",
        &format!(
            "[tls]\ncert = \"{d}/node-a.pem\"\nkey = \"{d}/node-b.key\"\nca = \"{d}/ca.pem\"\n"
        ),
    );
    assert!(!ok);
    assert!(
        err.contains("tls.cert") && err.contains("tls.key") && err.contains("node-b.key"),
        "{err}"
    );

    // A file that does not exist.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
        .args(["check-config", "/nonexistent/dwcp.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    // Environment overrides are validated too.
    let p = dir.path().join("good.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dwcp-daemon"))
        .arg("check-config")
        .arg(&p)
        .env("DWCP_ADMIN_LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.listen"));
}

/// Waits until `/metrics` has a `name` sample whose labels contain `label`
/// and whose value is at least 1.
fn wait_metric(p: &Proc, name: &str, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = p.get("/metrics").expect("metrics");
        let hit = metrics.lines().any(|l| {
            l.starts_with(name)
                && l.contains(label)
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
        });
        if hit {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {name}{{{label}}} >= 1:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failed_handshakes_are_counted_by_reason_and_a_dial_only_node_listens_on_nothing() {
    let (pair, a, b) = start_pair();
    // node-a is dial-only: no listener at all.
    let st = a.json("/api/v1/dwcp/status");
    assert_eq!(st["listeners"], serde_json::json!({}), "{st}");
    let d = a.json("/health/detailed");
    assert_eq!(d["components"]["transport"], "healthy", "{d}");
    // A client whose certificate comes from another CA.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let other = dwcp_core::tls::DevCa::new().expect("ca");
        let cfg = dwcp_core::net::EndpointConfig::new(
            other.config_for("node-a").expect("cert"),
            dwcp_core::net::Transport::Quic,
        );
        let rogue = dwcp_core::net::Endpoint::client(cfg).await.expect("client");
        let addr = ([127, 0, 0, 1], pair.b_quic).into();
        assert!(rogue.connect(addr, "node-b").await.is_err());
    });
    wait_metric(&b, "dwcp_handshake_failures_total", "reason=\"tls\"");
    let (_, metrics) = b.get("/metrics").expect("metrics");
    assert!(metrics.contains("dwcp_handshakes_in_progress"), "{metrics}");
    drop(a);
}

/// `dwcp_tls_cert_expiry_timestamp_seconds` of `p`.
fn cert_expiry(p: &Proc) -> f64 {
    let (_, metrics) = p.get("/metrics").expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dwcp_tls_cert_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dwcp_tls_cert_expiry_timestamp_seconds:\n{metrics}"))
}

#[test]
fn certificates_rotate_without_restart_and_tunnels_go_on() {
    std::env::set_var("DWCP_TLS_RELOAD_SECS", "1");
    let (pair, mut a, b) = start_pair();
    // A tunnelled connection that stays open across the rotation.
    let mut held = TcpStream::connect(("127.0.0.1", pair.t_echo)).expect("connect");
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let echo = |s: &mut TcpStream, msg: &[u8]| {
        s.write_all(msg).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("read");
        assert_eq!(got, msg);
    };
    echo(&mut held, b"before");
    // The expiry of node-b's certificate: a year from now (DevCa's leaves).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as f64;
    let year = 365.0 * 86_400.0;
    let before = cert_expiry(&b);
    assert!((before - (now + year)).abs() < 120.0, "{before} vs {now}");

    // A new CA and new leaves, valid for 30 days, replace the files in
    // place (as a secret update would), for both nodes.
    dwcp_core::tls::DevCa::new()
        .expect("ca")
        .write_pem_files_valid_for(
            pair.dir.path(),
            &["node-a", "node-b", "node-c", "node-x"],
            Duration::from_secs(30 * 86_400),
        )
        .expect("new certs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains("TLS files changed") {
        assert!(
            Instant::now() < deadline,
            "node-b never reloaded:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    echo(&mut held, b"after the rotation");
    // The metric follows the identity in force.
    let after = cert_expiry(&b);
    assert!(
        (after - (now + 30.0 * 86_400.0)).abs() < 120.0,
        "{after} vs {now}"
    );

    // node-a restarts with the new files: node-b, still running, accepts its
    // new certificate only because it reloaded the new CA.
    a.child.kill().expect("kill node-a");
    let _ = a.child.wait();
    let a2 = Proc::start(&a.config);
    a2.wait_peer("node-b", Duration::from_secs(20));
    let d = data(64 * 1024, 3);
    assert_eq!(round_trip(pair.t_echo, &d).expect("after"), d);
    let (_, metrics) = b.get("/metrics").expect("metrics");
    assert!(
        metrics.contains("dwcp_tls_reloads_total{result=\"ok\"}"),
        "{metrics}"
    );
}

/// Sum of the `name` samples on `p` whose labels contain every one of `labels`.
fn metric_sum(p: &Proc, name: &str, labels: &[&str]) -> f64 {
    let (_, metrics) = p.get("/metrics").expect("metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn clients_that_close_or_reset_mid_transfer_are_cancellations_not_errors() {
    let (pair, a, b) = start_pair();
    const N: usize = 8;
    for i in 0..N {
        let mut s = TcpStream::connect(("127.0.0.1", pair.t_echo)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(&data(256 << 10, i as u64)).expect("write");
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).expect("echo flows");
        if i % 2 == 0 {
            // An explicit reset (SO_LINGER 0), as a client that gives up does.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
        }
        // The rest of the echo is unread: closing sends a reset either way.
        drop(s);
    }
    let cancelled = |p: &Proc, dir: &str| {
        metric_sum(
            p,
            "dwcp_tunnel_connections_total",
            &[&format!("direction=\"{dir}\""), "outcome=\"cancelled\""],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while cancelled(&a, "outbound") < N as f64 || cancelled(&b, "inbound") < N as f64 {
        assert!(
            Instant::now() < deadline,
            "not every connection counted as cancelled:\n{}\n{}",
            a.get("/metrics").expect("metrics").1,
            b.get("/metrics").expect("metrics").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (p, dir) in [(&a, "outbound"), (&b, "inbound")] {
        let failed = metric_sum(
            p,
            "dwcp_tunnel_connections_total",
            &[&format!("direction=\"{dir}\""), "outcome=\"failed\""],
        );
        let errors = metric_sum(p, "dwcp_errors_total", &["kind=\"stream\""]);
        assert_eq!((failed, errors), (0.0, 0.0), "{dir}:\n{}", p.log_text());
        let log = p.log_text();
        assert!(
            !log.contains("tunnelled connection failed")
                && !log.contains("stream ended with an error"),
            "{dir}: a client's close logged as a failure:\n{log}"
        );
    }
    // The tunnel still works.
    let d = data(64 * 1024, 99);
    assert_eq!(round_trip(pair.t_echo, &d).expect("after"), d);
}
