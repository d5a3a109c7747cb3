//! Kernel TCP between two network namespaces through the TUN delay line:
//! the configured delay and rate are what TCP sees. Needs root; skipped with
//! a message elsewhere.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use dwcp_wanem::tun::NetnsPair;
use dwcp_wanem::LinkProfile;

fn pair(tag: &str, mbit: u64, rtt_ms: u64) -> Option<NetnsPair> {
    if let Some(why) = NetnsPair::unavailable() {
        eprintln!("SKIPPED: the TUN delay line test {why}");
        return None;
    }
    let p = LinkProfile::wan(mbit, rtt_ms, 0.0);
    let back = LinkProfile {
        seed: 2,
        ..p.clone()
    };
    Some(NetnsPair::new(tag, p, back).expect("namespaces and delay line"))
}

/// A listener in namespace b answering each connection: echoes 1-byte pings
/// until EOF, or (first byte `S`) counts bytes to EOF and answers the count.
fn server(ns: &NetnsPair, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn_in(true, move || {
        let l = TcpListener::bind((NetnsPair::B_ADDR, port)).expect("bind in b");
        tx.send(()).expect("ready");
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).is_err() {
                    return;
                }
                if first[0] == b'S' {
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    let _ = s.write_all(&n.to_be_bytes());
                    return;
                }
                let _ = s.write_all(&first);
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    if s.write_all(&b).is_err() {
                        break;
                    }
                }
            });
        }
    })
    .expect("enter b");
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
}

#[test]
fn tcp_round_trips_take_the_configured_delay() {
    let Some(ns) = pair("dwtr", 100, 40) else {
        return;
    };
    server(&ns, 7001);
    let rtts = ns
        .spawn_in(false, || {
            let to = SocketAddr::from((NetnsPair::B_ADDR, 7001));
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut rtts = Vec::new();
            for i in 0..20u8 {
                let t = Instant::now();
                s.write_all(&[i.max(1)]).expect("write");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).expect("read");
                rtts.push(t.elapsed());
            }
            rtts
        })
        .expect("enter a")
        .join()
        .expect("client");
    let mut sorted = rtts.clone();
    sorted.sort();
    eprintln!(
        "TCP ping through the line: min {:?} median {:?} max {:?}",
        sorted[0], sorted[10], sorted[19]
    );
    // Nothing crosses faster than the configured delay, and an idle line adds
    // little to it (a bound far above the expected millisecond).
    assert!(sorted[0] >= Duration::from_millis(40), "{:?}", sorted[0]);
    assert!(
        sorted[10] < Duration::from_millis(40 + 200),
        "{:?}",
        sorted[10]
    );
    let (ab, ba) = ns.stats();
    assert!(ab.delivered >= 20 && ba.delivered >= 20, "{ab:?} {ba:?}");
}

#[test]
fn tcp_bulk_is_held_to_the_configured_rate() {
    let Some(ns) = pair("dwtb", 20, 20) else {
        return;
    };
    server(&ns, 7002);
    let (bytes, secs, counted) = ns
        .spawn_in(false, || {
            let to = SocketAddr::from((NetnsPair::B_ADDR, 7002));
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
            let buf = vec![0x42u8; 1 << 16];
            let t = Instant::now();
            s.write_all(b"S").expect("write");
            let mut sent = 1u64;
            while t.elapsed() < Duration::from_secs(3) {
                s.write_all(&buf).expect("write");
                sent += buf.len() as u64;
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut n = [0u8; 8];
            s.read_exact(&mut n).expect("count");
            (sent, t.elapsed().as_secs_f64(), u64::from_be_bytes(n))
        })
        .expect("enter a")
        .join()
        .expect("client");
    let mbit = bytes as f64 * 8.0 / secs / 1e6;
    eprintln!("TCP bulk through a 20 Mbit/s line: {mbit:.1} Mbit/s ({bytes} bytes in {secs:.2} s)");
    assert_eq!(counted + 1, bytes, "the sink must count every byte");
    // The line never carries more than its rate (IP and TCP headers come
    // on top of the payload counted here), and TCP does fill much of it.
    assert!(mbit <= 20.5, "{mbit} Mbit/s through a 20 Mbit/s line");
    assert!(mbit >= 5.0, "only {mbit} Mbit/s through a 20 Mbit/s line");
}
