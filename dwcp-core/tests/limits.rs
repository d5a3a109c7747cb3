//! Hostile-peer tests: a hand-written peer sends crafted frames to a real
//! connection, which must answer each violation with its own error code.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dwcp_core::frame::{Data, Encoding, Frame, FrameDecoder, GoAway, Hello, Open, Ping, Window};
use dwcp_core::{
    CodecId, Config, Connection, ConnectionError, ErrorCode, Event, OpenParams, Side, StreamOptions,
};

/// A connection under test plus a scripted peer.
struct RawPeer {
    conn: Connection,
    now: Instant,
    decoder: FrameDecoder,
}

fn hello() -> Hello {
    Hello {
        min_version: dwcp_core::PROTOCOL_VERSION,
        max_version: dwcp_core::PROTOCOL_VERSION,
        capabilities: dwcp_core::Capabilities::ALL,
        required: dwcp_core::Capabilities::NONE,
        codecs: 0b111,
        max_frame_payload: 256 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 256 * 1024,
        initial_connection_window: 1 << 20,
        max_streams: 100,
        class_names: Vec::new(),
    }
}

impl RawPeer {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        let mut p = RawPeer {
            conn: Connection::new(config, Side::Server, now).expect("config"),
            now,
            decoder: FrameDecoder::new(16 << 20),
        };
        p.feed(&Frame::Hello(Box::new(hello())).to_bytes());
        assert!(p.conn.is_established());
        p
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.conn.handle_input(self.now, &mut buf);
    }

    fn send(&mut self, f: Frame) {
        self.feed(&f.to_bytes());
    }

    /// Everything the connection wants to send, decoded.
    fn output(&mut self) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        while let Some(t) = self.conn.poll_transmit(self.now) {
            buf.extend_from_slice(&t.header);
            buf.extend_from_slice(&t.payload);
        }
        let mut out = Vec::new();
        while let Some(f) = self
            .decoder
            .decode(&mut buf)
            .expect("our own frames decode")
        {
            out.push(f);
        }
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Asserts the connection closed with `code`, sending GOAWAY with that code.
    fn assert_closed_with(&mut self, code: ErrorCode) {
        let out = self.output();
        let goaway = out.iter().find_map(|f| match f {
            Frame::GoAway(g) => Some(g.clone()),
            _ => None,
        });
        let g = goaway.unwrap_or_else(|| panic!("no GOAWAY sent, frames: {out:?}"));
        assert_eq!(g.code, code, "reason: {}", g.reason);
        assert!(!g.reason.is_empty());
        assert!(self.conn.is_closed());
        match self.conn.error() {
            Some(ConnectionError::Local { code: c, .. }) => assert_eq!(*c, code),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(self.events().iter().any(
            |e| matches!(e, Event::Lost(ConnectionError::Local { code: c, .. }) if *c == code)
        ));
    }

    fn open(&mut self, id: u32) {
        self.send(Frame::Open(Open {
            stream: id,
            class: 0,
            priority: 0,
            weight: 1,
            options: StreamOptions::default(),
            route: Bytes::from_static(b"svc"),
        }));
    }

    fn data(&mut self, id: u32, len: usize, fin: bool) {
        self.send(Frame::Data(Data {
            stream: id,
            encoding: None,
            payload: Bytes::from(vec![7u8; len]),
            fin,
        }));
    }
}

#[test]
fn frame_above_max_payload_is_rejected_from_its_header() {
    let mut p = RawPeer::new(Config::default());
    p.open(1);
    // Only the header: the connection must not wait for 1 MiB of payload.
    let mut header = BytesMut::new();
    dwcp_core::frame::Header {
        ty: 3,
        flags: 0,
        stream: 1,
        len: 1 << 20,
    }
    .encode(&mut header);
    p.feed(&header);
    p.assert_closed_with(ErrorCode::FrameTooLarge);
}

#[test]
fn decompression_bomb_is_rejected() {
    let mut p = RawPeer::new(Config::default());
    p.open(1);
    let zeros = vec![0u8; 8 << 20];
    let payload = dwcp_core::codec::compress(CodecId::Zstd, 19, &zeros).expect("compress");
    assert!(payload.len() < 4096, "a real bomb: {} bytes", payload.len());
    p.send(Frame::Data(Data {
        stream: 1,
        encoding: Some(Encoding {
            codec: CodecId::Zstd,
            raw_len: 8 << 20,
        }),
        payload,
        fin: false,
    }));
    p.assert_closed_with(ErrorCode::DecompressionLimit);
}

#[test]
fn lying_raw_length_is_a_compression_error() {
    let mut p = RawPeer::new(Config::default());
    p.open(1);
    let zeros = vec![0u8; 8 << 20];
    let payload = dwcp_core::codec::compress(CodecId::Lz4, 0, &zeros).expect("compress");
    p.send(Frame::Data(Data {
        stream: 1,
        encoding: Some(Encoding {
            codec: CodecId::Lz4,
            raw_len: 1000,
        }),
        payload: payload.slice(..payload.len().min(200_000)),
        fin: false,
    }));
    p.assert_closed_with(ErrorCode::CompressionError);
}

#[test]
fn compressed_data_round_trips() {
    let mut p = RawPeer::new(Config::default());
    p.open(1);
    let text: Vec<u8> = b"the quick brown fox "
        .iter()
        .cycle()
        .take(100_000)
        .copied()
        .collect();
    for codec in [CodecId::Lz4, CodecId::Zstd] {
        let payload = dwcp_core::codec::compress(codec, 3, &text).expect("compress");
        p.send(Frame::Data(Data {
            stream: 1,
            encoding: Some(Encoding {
                codec,
                raw_len: text.len() as u32,
            }),
            payload,
            fin: false,
        }));
    }
    let mut got = Vec::new();
    while let Ok(Some(b)) = p.conn.recv(1, usize::MAX) {
        got.extend_from_slice(&b);
    }
    assert_eq!(got.len(), 200_000);
    assert_eq!(&got[..100_000], &text[..]);
    assert_eq!(&got[100_000..], &text[..]);
}

#[test]
fn stream_window_violation() {
    let cfg = Config {
        initial_stream_window: 256 * 1024,
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    p.open(1);
    // 256 KiB is the initial stream window; send one byte more.
    for _ in 0..8 {
        p.data(1, 32 * 1024, false);
    }
    assert!(!p.conn.is_closed());
    p.data(1, 1, false);
    p.assert_closed_with(ErrorCode::StreamBufferExceeded);
}

#[test]
fn connection_window_violation() {
    let cfg = Config {
        initial_stream_window: 256 * 1024,
        initial_connection_window: 512 * 1024,
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    for id in [1, 3, 5] {
        p.open(id);
    }
    for id in [1, 3] {
        for _ in 0..8 {
            p.data(id, 32 * 1024, false);
        }
    }
    assert!(!p.conn.is_closed());
    p.data(5, 1, false);
    p.assert_closed_with(ErrorCode::ConnectionBufferExceeded);
}

#[test]
fn stream_limit_answers_with_refusal_not_connection_error() {
    let cfg = Config {
        max_streams: 3,
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    for id in [1, 3, 5, 7, 9] {
        p.open(id);
    }
    let out = p.output();
    let refused: Vec<u32> = out
        .iter()
        .filter_map(|f| match f {
            Frame::Reset(r) if r.code == ErrorCode::RefusedStream => Some(r.stream),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![7, 9]);
    assert!(!p.conn.is_closed());
    assert_eq!(p.conn.active_streams(), 3);
    // Data already in flight for a refused stream is discarded, not an error,
    // and its connection credit comes back.
    p.data(7, 200 * 1024, false);
    assert!(!p.conn.is_closed());
    assert_eq!(p.conn.stats().streams_refused, 2);
    // Closing one stream makes room for a new one.
    p.data(1, 10, true);
    while let Ok(Some(_)) = p.conn.recv(1, usize::MAX) {}
    assert_eq!(p.conn.recv(1, usize::MAX), Ok(None));
    p.conn.finish(1).expect("finish");
    let _ = p.output();
    assert_eq!(p.conn.active_streams(), 2);
    p.open(11);
    assert_eq!(p.conn.active_streams(), 3);
    let out = p.output();
    assert!(!out.iter().any(|f| matches!(f, Frame::Reset(_))));
}

#[test]
fn ping_flood_without_reading_is_excessive_load() {
    let cfg = Config {
        max_control_queue: 64,
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    let mut buf = BytesMut::new();
    for i in 0..65u64 {
        buf.extend_from_slice(&Frame::Ping(Ping(i.to_be_bytes())).to_bytes());
    }
    p.feed(&buf);
    p.assert_closed_with(ErrorCode::ExcessiveLoad);
}

#[test]
fn pings_are_answered() {
    let mut p = RawPeer::new(Config::default());
    let _ = p.output();
    p.send(Frame::Ping(Ping(*b"12345678")));
    let out = p.output();
    assert!(out.contains(&Frame::Pong(Ping(*b"12345678"))));
}

#[test]
fn unknown_frames() {
    let mut p = RawPeer::new(Config::default());
    // Ignorable unknown kind: skipped.
    let mut b = BytesMut::new();
    dwcp_core::frame::Header {
        ty: 0xC4,
        flags: 0,
        stream: 0,
        len: 3,
    }
    .encode(&mut b);
    b.extend_from_slice(b"xyz");
    p.feed(&b);
    assert!(!p.conn.is_closed());
    // Mandatory unknown kind: protocol error.
    let mut b = BytesMut::new();
    dwcp_core::frame::Header {
        ty: 0x44,
        flags: 0,
        stream: 0,
        len: 0,
    }
    .encode(&mut b);
    p.feed(&b);
    p.assert_closed_with(ErrorCode::ProtocolError);
}

#[test]
fn data_on_unopened_stream() {
    let mut p = RawPeer::new(Config::default());
    p.data(41, 10, false);
    p.assert_closed_with(ErrorCode::ProtocolError);
}

#[test]
fn data_after_fin() {
    let mut p = RawPeer::new(Config::default());
    p.open(1);
    p.data(1, 10, true);
    p.data(1, 10, false);
    p.assert_closed_with(ErrorCode::StreamStateError);
}

#[test]
fn stream_id_of_wrong_parity_or_reused() {
    let mut p = RawPeer::new(Config::default());
    p.open(2);
    p.assert_closed_with(ErrorCode::ProtocolError);
    let mut p = RawPeer::new(Config::default());
    p.open(5);
    p.open(5);
    p.assert_closed_with(ErrorCode::ProtocolError);
}

#[test]
fn opens_may_arrive_out_of_order_across_lanes() {
    let mut p = RawPeer::new(Config::default());
    p.open(5);
    p.open(1);
    p.open(3);
    assert!(!p.conn.is_closed());
    assert_eq!(p.conn.active_streams(), 3);
    // A skipped id, once used, cannot be opened again.
    p.open(3);
    p.assert_closed_with(ErrorCode::ProtocolError);
}

#[test]
fn skipping_too_many_ids_is_an_error() {
    let cfg = Config {
        max_streams: 10,
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    p.open(101);
    p.assert_closed_with(ErrorCode::ProtocolError);
}

#[test]
fn window_overflow() {
    let mut p = RawPeer::new(Config::default());
    p.send(Frame::Window(Window {
        stream: 0,
        credit: u32::MAX,
    }));
    p.assert_closed_with(ErrorCode::FlowControlError);
}

#[test]
fn first_frame_must_be_hello() {
    let now = Instant::now();
    let mut c = Connection::new(Config::default(), Side::Server, now).expect("config");
    let mut b = BytesMut::from(&Frame::Ping(Ping([0; 8])).to_bytes()[..]);
    c.handle_input(now, &mut b);
    assert!(matches!(
        c.error(),
        Some(ConnectionError::Local {
            code: ErrorCode::ProtocolError,
            ..
        })
    ));

    let mut c = Connection::new(Config::default(), Side::Server, now).expect("config");
    let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    c.handle_input(now, &mut b);
    assert!(c.error().is_some(), "HTTP is not DWCP");
}

#[test]
fn bad_magic_is_handshake_failure() {
    let now = Instant::now();
    let mut c = Connection::new(Config::default(), Side::Server, now).expect("config");
    let mut bytes = BytesMut::from(&Frame::Hello(Box::new(hello())).to_bytes()[..]);
    bytes[10] = b'X';
    c.handle_input(now, &mut bytes);
    assert!(matches!(
        c.error(),
        Some(ConnectionError::Local {
            code: ErrorCode::HandshakeFailed,
            ..
        })
    ));
}

#[test]
fn peer_goaway_with_error_fails_streams() {
    let mut p = RawPeer::new(Config::default());
    let _ = p.output();
    p.open(1);
    p.data(1, 100, false);
    p.send(Frame::GoAway(GoAway {
        last_stream: 0,
        code: ErrorCode::InternalError,
        reason: "disk on fire".into(),
    }));
    // Buffered data is still readable, then the loss is reported, never a clean FIN.
    assert_eq!(
        p.conn.recv(1, usize::MAX).expect("data").map(|b| b.len()),
        Some(100)
    );
    match p.conn.recv(1, usize::MAX) {
        Err(dwcp_core::StreamError::ConnectionLost(ConnectionError::Remote { code, reason })) => {
            assert_eq!(code, ErrorCode::InternalError);
            assert_eq!(reason, "disk on fire");
        }
        other => panic!("expected connection loss, got {other:?}"),
    }
}

#[test]
fn local_streams_after_refusal() {
    // The peer refuses one of our streams: the writer and reader see Refused.
    let mut p = RawPeer::new(Config::default());
    let _ = p.output();
    let id = p.conn.open_stream(OpenParams::default()).expect("open");
    p.send(Frame::Reset(dwcp_core::frame::Reset {
        stream: id,
        code: ErrorCode::RefusedStream,
    }));
    assert_eq!(
        p.conn.send(id, Bytes::from_static(b"x")),
        Err(dwcp_core::StreamError::Refused)
    );
    assert_eq!(p.conn.recv(id, 10), Err(dwcp_core::StreamError::Refused));
    assert_eq!(p.conn.active_streams(), 0);
}

#[test]
fn idle_timeout_fires() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut p = RawPeer::new(cfg);
    let deadline = p.now + Duration::from_secs(60);
    while p.conn.error().is_none() && p.now < deadline {
        let out = p.output();
        assert!(!out.iter().any(|f| matches!(f, Frame::GoAway(_))));
        let t = p.conn.poll_timeout().expect("timer");
        p.now = t;
        p.conn.handle_timeout(t);
    }
    assert!(matches!(p.conn.error(), Some(ConnectionError::TimedOut(_))));
    let out = p.output();
    assert!(out
        .iter()
        .any(|f| matches!(f, Frame::GoAway(g) if g.code == ErrorCode::IdleTimeout)));
}

/// Regression: with DATA frames larger than the scheduler quantum, one
/// `poll_transmit` loop must still send everything credit allows (it once
/// returned `None` after a few empty DRR rounds, stalling a real driver until
/// its next timer).
#[test]
fn transmit_loop_drains_everything_credit_allows() {
    for frame in [8 * 1024u32, 32 * 1024, 128 * 1024] {
        let cfg = Config {
            data_frame_size: frame,
            quantum: 4096,
            ..Config::default()
        };
        let mut p = RawPeer::new(cfg);
        let _ = p.output();
        let a = p.conn.open_stream(OpenParams::default()).expect("open");
        let b = p
            .conn
            .open_stream(OpenParams {
                weight: 3,
                ..OpenParams::default()
            })
            .expect("open");
        p.conn
            .send(a, Bytes::from(vec![1u8; 1 << 20]))
            .expect("send");
        p.conn
            .send(b, Bytes::from(vec![2u8; 1 << 20]))
            .expect("send");
        let sent: usize = p
            .output()
            .iter()
            .map(|f| match f {
                Frame::Data(d) => d.payload.len(),
                _ => 0,
            })
            .sum();
        // The peer's HELLO allows 256 KiB per stream and 1 MiB in total.
        assert_eq!(sent, 512 * 1024, "frame size {frame}");
    }
}
