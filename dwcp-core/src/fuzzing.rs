//! Harnesses shared by the cargo-fuzz targets (`fuzz/`) and the property tests:
//! the same code runs under libFuzzer and under proptest.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::frame::{Frame, FrameDecoder, Hello};
use crate::{Capabilities, Config, Connection, Side, StreamError};

/// Feeds `data` to the frame decoder until it errors or runs out. Must never panic.
pub fn decode_frames(data: &[u8]) -> usize {
    let decoder = FrameDecoder::new(256 * 1024);
    let mut buf = BytesMut::from(data);
    let mut n = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        // Whatever decodes must re-encode and decode to the same frame.
        if !matches!(frame, Frame::Ignored { .. }) {
            let again = frame.to_bytes();
            let mut b = BytesMut::from(&again[..]);
            let back = decoder.decode(&mut b);
            assert_eq!(back, Ok(Some(frame)), "re-encoding changed the frame");
        }
        n += 1;
    }
    n
}

/// Drives a server connection with a valid HELLO followed by `data` (split into
/// chunks at the positions the first bytes choose), acting as an application
/// that reads everything, answers and sends. Must never panic, and must never
/// buffer more than the configured limits.
pub fn session(data: &[u8]) {
    let config = Config {
        max_streams: 64,
        max_control_queue: 64,
        initial_connection_window: 512 * 1024,
        ..Config::default()
    };
    let start = Instant::now();
    let Ok(mut conn) = Connection::new(config, Side::Server, start) else {
        return;
    };
    let hello = Frame::Hello(Hello {
        min_version: crate::PROTOCOL_VERSION,
        max_version: crate::PROTOCOL_VERSION,
        capabilities: Capabilities::ALL,
        required: Capabilities::NONE,
        codecs: 0b111,
        max_frame_payload: 64 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 64 * 1024,
        initial_connection_window: 256 * 1024,
        max_streams: 16,
        class_names: Vec::new(),
    });
    let mut buf = BytesMut::from(&hello.to_bytes()[..]);
    conn.handle_input(start, &mut buf);
    let step = data.first().map_or(64, |b| *b as usize + 1);
    let mut now = start;
    for chunk in data.get(1..).unwrap_or_default().chunks(step) {
        now += Duration::from_millis(7);
        buf.extend_from_slice(chunk);
        conn.handle_input(now, &mut buf);
        assert!(
            buf.len() <= 16 * 1024 * 1024 + 10,
            "receive buffer unbounded"
        );
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        while let Some(ev) = conn.poll_event() {
            if let crate::Event::StreamReadable(id) | crate::Event::StreamOpened(id) = ev {
                while let Ok(Some(_)) = conn.recv(id, 4096) {}
                // Any outcome is fine here; only panics matter.
                let _: Result<usize, StreamError> =
                    conn.send(id, bytes::Bytes::from_static(b"reply"));
                let _ = conn.finish(id);
            }
        }
        while conn.poll_transmit(now).is_some() {}
        assert!(conn.send_buffered() <= 64 * 1024 * 1024);
        assert!(conn.active_streams() <= 64);
    }
}
