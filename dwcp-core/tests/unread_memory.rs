//! Memory held by received data that the application has not read yet.
//!
//! A counting global allocator measures the live heap. Payloads delivered
//! without copying are slices of the buffer the transport read them into: if
//! that buffer is larger than the frame (a shared read chunk, a read-ahead
//! reservation), every unread payload keeps the whole allocation alive, and
//! memory grows with the number of streams rather than with the data the
//! receive windows allow.
#![allow(unsafe_code)] // the counting allocator below

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use dwcp_core::net::{Compression, Endpoint, EndpointConfig, StreamOptions, Transport};
use dwcp_core::Config;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counter has no effect on the allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same layout as given to us.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same layout as given to us.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// The tests measure one process-wide counter: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STREAMS: usize = 200;
/// Above the core's copy threshold (32 KiB): delivered without copying.
const PAYLOAD: usize = 48 * 1024;

async fn unread_payloads_pin_only_their_frames(transport: Transport) {
    let _serial = SERIAL.lock().await;
    let ca = dwcp_core::tls::DevCa::new().expect("ca");
    let mk = |name: &str| {
        let mut c = EndpointConfig::new(ca.config_for(name).expect("cert"), transport);
        // Windows far above what the test sends: nothing waits for credit.
        c.protocol = Config {
            initial_stream_window: 256 << 10,
            initial_connection_window: 64 << 20,
            max_connection_window: 64 << 20,
            ..Config::default()
        };
        c
    };
    let server = Endpoint::bind(loopback(), mk(SERVER)).await.expect("bind");
    let client = Endpoint::bind(loopback(), mk(CLIENT)).await.expect("bind");
    let (c, s) = tokio::join!(client.connect(server.local_addr(), SERVER), server.accept());
    let (c, s) = (c.expect("connect"), s.expect("accept"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A stream the server reads as it arrives, interleaved with the unread
    // ones: on a shared lane its frames share read buffers with theirs.
    let mut drained = c
        .open_stream(StreamOptions {
            route: Bytes::from_static(b"drained"),
            compression: Compression::Off,
            ..StreamOptions::default()
        })
        .expect("open");
    drained
        .send_raw(Bytes::from_static(b"go"))
        .await
        .expect("send");
    let mut reader = tokio::time::timeout(Duration::from_secs(10), s.accept_stream())
        .await
        .expect("accept in time")
        .expect("stream");
    let reader = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(b)) = reader.recv().await {
            n += b.len();
        }
        n
    });

    let before = live();
    let payload = Bytes::from(vec![0x5a; PAYLOAD]);
    let filler = Bytes::from(vec![0xa5; PAYLOAD / 2]);
    let mut opened = Vec::new();
    for i in 0..STREAMS {
        drained.send_raw(filler.clone()).await.expect("send");
        let mut st = c
            .open_stream(StreamOptions {
                route: Bytes::from(i.to_string()),
                compression: Compression::Off,
                ..StreamOptions::default()
            })
            .expect("open");
        st.send_raw(payload.clone()).await.expect("send");
        opened.push(st);
    }
    drop((payload, filler));
    drained.finish().expect("finish");
    // Accept every stream and keep it, reading nothing.
    let mut accepted = Vec::new();
    for _ in 0..STREAMS {
        accepted.push(
            tokio::time::timeout(Duration::from_secs(10), s.accept_stream())
                .await
                .expect("accept in time")
                .expect("stream"),
        );
    }
    let drained_bytes = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("drained in time")
        .expect("reader");
    assert_eq!(drained_bytes, 2 + STREAMS * PAYLOAD / 2);
    let want = (STREAMS * PAYLOAD + drained_bytes) as u64;
    let t0 = Instant::now();
    while s.stats().core.data_raw_received < want {
        assert!(t0.elapsed() < Duration::from_secs(20), "data not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Acknowledgements free the sender's copies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = live() - before;
    let unread = (STREAMS * PAYLOAD) as i64;
    // The unread data itself, plus a per-stream allowance for state (stream
    // records, tasks, channels, quinn's stream state, a small read-ahead).
    let allowed = unread + unread / 4 + (STREAMS as i64) * 16 * 1024;
    eprintln!(
        "{transport:?}: {STREAMS} streams x {} KiB unread: heap grew {} KiB (allowed {} KiB)",
        PAYLOAD >> 10,
        grown >> 10,
        allowed >> 10
    );
    assert!(
        grown <= allowed,
        "{transport:?}: unread data of {} KiB held {} KiB of heap (allowed {} KiB)",
        unread >> 10,
        grown >> 10,
        allowed >> 10
    );
    // Everything is still there to read.
    for mut st in accepted.drain(..) {
        let b = st.recv().await.expect("recv").expect("data");
        assert_eq!(b.len(), PAYLOAD);
    }
    drop(opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_unread_payloads_pin_only_their_frames() {
    unread_payloads_pin_only_their_frames(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_unread_payloads_pin_only_their_frames() {
    unread_payloads_pin_only_their_frames(Transport::Tcp).await;
}
