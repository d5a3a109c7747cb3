//! Memory held per idle open stream, measured with a counting allocator.
//! Run with `--nocapture` to see the figures.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dwcp_core::frame::{Frame, Hello, Open};
use dwcp_core::{Capabilities, Config, Connection, OpenParams, Side, StreamOptions};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u32 = 10_000;

fn peer_hello() -> Bytes {
    Frame::Hello(Box::new(Hello {
        min_version: dwcp_core::PROTOCOL_VERSION,
        max_version: dwcp_core::PROTOCOL_VERSION,
        capabilities: Capabilities::ALL,
        required: Capabilities::NONE,
        codecs: 0b111,
        max_frame_payload: 256 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 256 * 1024,
        initial_connection_window: 1 << 20,
        max_streams: 100_000,
        class_names: Vec::new(),
    }))
    .to_bytes()
}

fn established(side: Side) -> (Connection, Instant) {
    let now = Instant::now();
    let cfg = Config {
        max_streams: 100_000,
        ..Config::default()
    };
    let mut c = Connection::new(cfg, side, now).expect("config");
    c.handle_input(now, &mut BytesMut::from(&peer_hello()[..]));
    while c.poll_transmit(now).is_some() {}
    while c.poll_event().is_some() {}
    (c, now)
}

// One test function: the allocator counter is process-wide, so the two
// measurements must not run concurrently.
#[test]
fn idle_stream_costs_under_2_kib_on_each_side() {
    // Accepting side: the peer opens N streams.
    let (mut server, now) = established(Side::Server);
    let mut wire = BytesMut::new();
    for i in 0..N {
        wire.extend_from_slice(
            &Frame::Open(Open {
                stream: 2 * i + 1,
                class: 0,
                priority: 0,
                weight: 1,
                options: StreamOptions::default(),
                route: Bytes::from_static(b"replication"),
            })
            .to_bytes(),
        );
    }
    let before = LIVE.load(Ordering::Relaxed);
    server.handle_input(now, &mut wire);
    while server.poll_event().is_some() {}
    while server.poll_transmit(now).is_some() {}
    let per_accepted = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
    assert_eq!(server.active_streams(), N);
    drop(wire);

    // Opening side: the application opens N streams.
    let (mut client, now) = established(Side::Client);
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..N {
        client
            .open_stream(OpenParams {
                route: Bytes::from_static(b"replication"),
                ..OpenParams::default()
            })
            .expect("open");
    }
    while client.poll_transmit(now).is_some() {}
    let per_opened = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
    assert_eq!(client.active_streams(), N);

    println!(
        "idle stream state: {per_accepted:.0} bytes per accepted stream, {per_opened:.0} bytes per opened stream ({N} streams)"
    );
    assert!(per_accepted <= 2048.0, "{per_accepted}");
    assert!(per_opened <= 2048.0, "{per_opened}");
}
