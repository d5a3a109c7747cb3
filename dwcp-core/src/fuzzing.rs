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
        initial_stream_window: 256 * 1024,
        initial_connection_window: 512 * 1024,
        ..Config::default()
    };
    let start = Instant::now();
    // A configuration the harness cannot use is the harness's bug: fail
    // loudly (a silent return once made every input a no-op).
    #[allow(clippy::expect_used)]
    let mut conn =
        Connection::new(config, Side::Server, start).expect("the harness's configuration is valid");
    let hello = Frame::Hello(Box::new(Hello {
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
    }));
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

/// TCP lane preambles and their grouping: `data` is a sequence of 24-byte
/// records (identity choice, time step in 100 ms, 22 preamble bytes). Each
/// preamble that parses must re-encode to the same bytes; a group is handed
/// over only with exactly `count` lanes in index order; pending groups stay
/// bounded. Must never panic.
pub fn lane_preambles(data: &[u8]) {
    use crate::net::lanes::{LaneGroups, Preamble, MAX_PENDING_GROUPS, PREAMBLE_LEN};
    let start = Instant::now();
    let mut now = start;
    let mut groups: LaneGroups<(usize, [u8; 16])> = LaneGroups::new(Duration::from_secs(10));
    for rec in data.chunks(PREAMBLE_LEN + 2) {
        let (who, step, pre) = match rec {
            [who, step, pre @ ..] => (*who, *step, pre),
            _ => return,
        };
        now += Duration::from_millis(100 * u64::from(step));
        let Ok(p) = Preamble::parse(pre) else {
            continue;
        };
        assert_eq!(&p.encode()[..], pre, "preamble re-encodes differently");
        let identity = match who % 3 {
            0 => None,
            1 => Some("a".to_string()),
            _ => Some("b".to_string()),
        };
        if let Ok(Some((lanes, _))) = groups.arrive(now, p, identity, (p.index, p.nonce)) {
            assert_eq!(lanes.len(), p.count, "group handed over incomplete");
            for (i, (index, nonce)) in lanes.iter().enumerate() {
                assert_eq!((*index, *nonce), (i, p.nonce), "lane out of place");
            }
        }
        assert!(groups.pending() <= MAX_PENDING_GROUPS);
    }
}

/// Compressed DATA through the codec layer and through a connection:
/// `data` = codec byte, declared decoded length (u32, may lie), payload.
/// Decoding yields exactly the declared length within the limit, or an
/// error; a server connection fed the frame either delivers exactly the
/// declared bytes or fails with a compression code. Also round-trips the
/// payload through each codec. Must never panic or allocate beyond limits.
pub fn compressed_data(data: &[u8]) {
    use crate::codec::{self, CodecId};
    use crate::frame::{Data, Encoding, Open, StreamOptions};
    const MAX_DECODED: u32 = 1 << 20;
    let [c, l0, l1, l2, l3, payload @ ..] = data else {
        return;
    };
    let Some(codec_id) = CodecId::from_u8(c % 4) else {
        return;
    };
    let raw_len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) % (MAX_DECODED * 2);
    let enc = Encoding {
        codec: codec_id,
        raw_len,
    };
    let direct = codec::decompress(enc, payload, MAX_DECODED);
    if let Ok(out) = &direct {
        assert_eq!(out.len(), raw_len as usize);
        assert!(raw_len <= MAX_DECODED);
    }
    // The payload as raw data, through each codec and back.
    for id in CodecId::ALL {
        if let Ok(packed) = codec::compress(id, 1, payload) {
            let e = Encoding {
                codec: id,
                raw_len: payload.len() as u32,
            };
            let back = codec::decompress(e, &packed, MAX_DECODED);
            if payload.len() as u32 <= MAX_DECODED {
                assert_eq!(back.as_deref(), Ok(payload), "{id:?} round trip");
            }
        }
    }
    // The same frame to a server connection.
    let config = Config {
        max_decoded_frame: MAX_DECODED,
        ..Config::default()
    };
    let start = Instant::now();
    #[allow(clippy::expect_used)]
    let mut conn =
        Connection::new(config, Side::Server, start).expect("the harness's configuration is valid");
    let mut buf = BytesMut::new();
    for f in [
        Frame::Hello(Box::new(peer_hello())),
        Frame::Open(Open {
            stream: 1,
            class: 0,
            priority: 0,
            weight: 1,
            options: StreamOptions::default(),
            route: bytes::Bytes::new(),
        }),
        Frame::Data(Data {
            stream: 1,
            encoding: Some(enc),
            payload: bytes::Bytes::copy_from_slice(payload),
            fin: true,
        }),
    ] {
        buf.extend_from_slice(&f.to_bytes());
    }
    conn.handle_input(start, &mut buf);
    let mut got = Vec::new();
    while let Ok(Some(chunk)) = conn.recv(1, 1 << 20) {
        got.extend_from_slice(&chunk);
    }
    match (&direct, conn.error()) {
        (Ok(out), None) => assert_eq!(&got[..], &out[..], "delivered other than decoded"),
        (Ok(_), Some(e)) => {
            // Protocol rules above the codec layer: ENCODED with codec none
            // is refused, and so is a payload above the negotiated 64 KiB.
            assert!(
                codec_id == CodecId::None || payload.len() > 64 * 1024,
                "valid frame refused: {e}"
            );
            assert!(got.is_empty(), "bytes of a refused frame delivered");
        }
        (Err(e), None) => panic!("undecodable frame accepted ({e})"),
        (Err(_), Some(_)) => assert!(got.is_empty(), "bytes of an undecodable frame delivered"),
    }
}

/// A client HELLO with generous limits (64 KiB frames), for harnesses.
fn peer_hello() -> Hello {
    Hello {
        min_version: crate::PROTOCOL_VERSION,
        max_version: crate::PROTOCOL_VERSION,
        capabilities: Capabilities::ALL,
        required: Capabilities::NONE,
        codecs: 0b111,
        max_frame_payload: 64 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 1 << 20,
        initial_connection_window: 16 << 20,
        max_streams: 16,
        class_names: Vec::new(),
    }
}

/// Two connections over the simulated link, both opening streams and
/// sending, finishing, resetting, stopping and reading as `data` directs
/// (two bytes an operation). Every byte read must be the next byte the
/// other side wrote on that stream, and a stream that ends cleanly must
/// have delivered all of it. Must never panic. Returns the bytes read on
/// both sides.
pub fn two_sided(data: &[u8]) -> u64 {
    use std::collections::HashMap;

    use crate::sim::{LinkConfig, Pair};
    use crate::{ErrorCode, OpenParams, StreamId};

    let config = Config {
        max_streams: 32,
        stream_send_buffer: 64 * 1024,
        ..Config::default()
    };
    let link = LinkConfig {
        bandwidth_bps: 100_000_000,
        one_way_delay: Duration::from_millis(5),
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(config.clone(), config, link);
    if !pair.run_until(Duration::from_secs(1), |p| {
        p.client.conn.is_established() && p.server.conn.is_established()
    }) {
        return 0;
    }
    // Per (sender side, stream): bytes written; per (receiver side, stream): bytes read.
    let mut written: HashMap<(bool, StreamId), u64> = HashMap::new();
    let mut read: HashMap<(bool, StreamId), u64> = HashMap::new();
    let mut ids: Vec<(bool, StreamId)> = Vec::new();
    // Content byte `i` of a stream: a function of the stream and offset.
    let byte = |id: StreamId, i: u64| (id as u64).wrapping_mul(31).wrapping_add(i) as u8;
    let mut ops = data.chunks(2);
    for _ in 0..2000 {
        let (op, arg) = match ops.next() {
            Some([a, b]) => (*a, *b),
            _ => (0xFF, 0),
        };
        let client = op & 1 == 0;
        let pick = ids.get(usize::from(arg) % ids.len().max(1)).copied();
        {
            let end = if client {
                &mut pair.client
            } else {
                &mut pair.server
            };
            match (op >> 1) % 8 {
                0 if op != 0xFF => {
                    let params = OpenParams {
                        class: arg % 3,
                        options: if arg & 0x80 != 0 {
                            crate::frame::StreamOptions::INTERACTIVE
                        } else {
                            crate::frame::StreamOptions::default()
                        },
                        ..OpenParams::default()
                    };
                    if let Ok(id) = end.conn.open_stream(params) {
                        ids.push((client, id));
                    }
                }
                1 | 2 => {
                    if let Some((_, id)) = pick {
                        // Either side may write on a stream it opened or accepted.
                        let from = written.entry((client, id)).or_insert(0);
                        let len = 1 + usize::from(arg) * 97;
                        let chunk: Vec<u8> = (0..len as u64).map(|i| byte(id, *from + i)).collect();
                        if let Ok(n) = end.conn.send(id, bytes::Bytes::from(chunk)) {
                            *from += n as u64;
                        }
                    }
                }
                3 => {
                    if let Some((_, id)) = pick {
                        let _ = end.conn.finish(id);
                    }
                }
                4 if arg < 16 => {
                    if let Some((_, id)) = pick {
                        let _ = end.conn.reset(id, ErrorCode::Cancel);
                    }
                }
                5 if arg < 16 => {
                    if let Some((_, id)) = pick {
                        let _ = end.conn.stop(id, ErrorCode::Cancel);
                    }
                }
                _ => {}
            }
        }
        // Read everything readable on both sides, checking content.
        for side in [true, false] {
            let end = if side {
                &mut pair.client
            } else {
                &mut pair.server
            };
            while let Some(ev) = end.conn.poll_event() {
                if let crate::Event::StreamOpened(id) = ev {
                    ids.push((side, id));
                }
            }
            let mine: Vec<StreamId> = ids.iter().map(|(_, id)| *id).collect();
            for id in mine {
                loop {
                    match end.conn.recv(id, 64 * 1024) {
                        Ok(Some(chunk)) => {
                            let at = read.entry((side, id)).or_insert(0);
                            for (k, b) in chunk.iter().enumerate() {
                                assert_eq!(*b, byte(id, *at + k as u64), "stream {id}: wrong byte");
                            }
                            *at += chunk.len() as u64;
                        }
                        Ok(None) => {
                            // A clean end: everything the other side wrote arrived.
                            let sent = written.get(&(!side, id)).copied().unwrap_or(0);
                            let got = read.get(&(side, id)).copied().unwrap_or(0);
                            assert_eq!(got, sent, "stream {id} ended cleanly short of its bytes");
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        pair.step(&mut |_| {});
        if op == 0xFF && !pair.advance() {
            break;
        }
        if op != 0xFF {
            let _ = pair.advance();
        }
        if pair.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    assert!(pair.client.conn.active_streams() <= 64);
    read.values().sum()
}
