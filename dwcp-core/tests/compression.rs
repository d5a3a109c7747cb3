//! Codec layer: round trips on every corpus, bombs, the selector's behaviour.

use bytes::{Bytes, BytesMut};
use dwcp_core::codec::decompress;
use dwcp_core::encoder::{sample_ratio, Encoder, Policy};
use dwcp_core::frame::{Data, Encoding, Frame, Open, Reset};
use dwcp_core::selector::{Level, LADDER};
use dwcp_core::zstd_stream::RECEIVER_CONTEXTS;
use dwcp_core::{corpus, CodecId, Config, Connection, ErrorCode, Side};

#[test]
fn every_codec_round_trips_every_corpus() {
    for (name, data) in corpus::all(1 << 20) {
        for level in LADDER {
            let mut enc = Encoder::new(Policy::Force(level), CodecId::all_bits());
            for chunk in data.chunks(128 * 1024) {
                let out = enc.encode(Bytes::copy_from_slice(chunk), None);
                let back = match out.encoding {
                    Some(e) => decompress(e, &out.payload, 1 << 20).expect("decode"),
                    None => out.payload.clone(),
                };
                assert_eq!(&back[..], chunk, "{name} {level:?}");
            }
        }
    }
}

#[test]
fn corpora_have_the_intended_compressibility() {
    let ratio = |d: &[u8]| sample_ratio(d);
    assert!(ratio(&corpus::random(1 << 16, 1)) < 1.05);
    assert!(ratio(&corpus::text(1 << 16, 1)) > 2.0);
    assert!(ratio(&corpus::json(1 << 16, 1)) > 2.0);
    assert!(ratio(&corpus::zeros(1 << 16)) > 50.0);
}

#[test]
fn adaptive_sends_random_data_as_is() {
    let data = corpus::random(2 << 20, 9);
    let mut enc = Encoder::new(Policy::Adaptive, CodecId::all_bits());
    for chunk in data.chunks(128 * 1024) {
        for rate in [Some(1.25e6), Some(125e6), None] {
            let out = enc.encode(Bytes::copy_from_slice(chunk), rate);
            assert_eq!(out.level, Level::None);
            assert!(out.encoding.is_none());
        }
    }
}

fn settle(enc: &mut Encoder, data: &[u8], rate: Option<f64>) -> Level {
    let mut last = Level::None;
    for _ in 0..3 {
        for chunk in data.chunks(128 * 1024) {
            last = enc.encode(Bytes::copy_from_slice(chunk), rate).level;
        }
    }
    last
}

#[test]
fn adaptive_picks_stronger_codec_on_slow_link_and_returns() {
    let data = corpus::vm_memory(4 << 20, 5);
    let mut enc = Encoder::new(Policy::Adaptive, CodecId::all_bits());
    let idx = |l: Level| LADDER.iter().position(|x| *x == l).unwrap_or(0);
    let fast = settle(&mut enc, &data, None);
    let slow = settle(&mut enc, &data, Some(10e6 / 8.0));
    let back = settle(&mut enc, &data, None);
    assert!(
        idx(slow) > idx(fast),
        "10 Mbit/s {slow:?} vs unlimited {fast:?}"
    );
    assert!(idx(back) < idx(slow), "did not return: {back:?}");
}

fn established() -> (Connection, std::time::Instant) {
    let now = std::time::Instant::now();
    let mut c = Connection::new(Config::default(), Side::Server, now).expect("config");
    let hello = dwcp_core::frame::Hello {
        min_version: dwcp_core::PROTOCOL_VERSION,
        max_version: dwcp_core::PROTOCOL_VERSION,
        capabilities: dwcp_core::Capabilities::ALL,
        required: dwcp_core::Capabilities::NONE,
        codecs: CodecId::all_bits(),
        max_frame_payload: 256 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 256 * 1024,
        initial_connection_window: 1 << 20,
        max_streams: 100,
        class_names: Vec::new(),
    };
    c.handle_input(
        now,
        &mut BytesMut::from(&Frame::Hello(Box::new(hello)).to_bytes()[..]),
    );
    (c, now)
}

#[test]
fn bomb_frames_are_rejected_with_their_code() {
    for codec in [CodecId::Lz4, CodecId::Zstd] {
        let (mut c, now) = established();
        let open = Frame::Open(dwcp_core::frame::Open {
            stream: 1,
            class: 0,
            priority: 0,
            weight: 1,
            options: Default::default(),
            route: Bytes::new(),
        });
        c.handle_input(now, &mut BytesMut::from(&open.to_bytes()[..]));
        let zeros = corpus::zeros(64 << 20);
        let payload = dwcp_core::codec::compress(codec, 19, &zeros).expect("compress");
        let bomb = Frame::Data(Data {
            stream: 1,
            encoding: Some(dwcp_core::frame::Encoding {
                codec,
                raw_len: zeros.len() as u32,
            }),
            payload: payload.slice(..payload.len().min(200_000)),
            fin: false,
        });
        c.handle_input(now, &mut BytesMut::from(&bomb.to_bytes()[..]));
        assert_eq!(
            c.error().and_then(|e| e.code()),
            Some(ErrorCode::DecompressionLimit),
            "{codec:?}"
        );
    }
}

/// On a bottleneck, a stream whose data compresses R× delivers about R× the
/// application bytes of an incompressible stream beside it: the scheduler
/// shares the link in bytes on the wire, while flow-control credit and send
/// buffers are counted in decoded bytes and must not hold the compressible
/// stream back (issue 15, item 6). Virtual time, 20 Mbit/s, 40 ms RTT.
#[test]
fn a_compressible_stream_gains_application_rate_on_a_bottleneck() {
    use dwcp_core::frame::Encoding;
    use dwcp_core::sim::{LinkConfig, Pair};
    use dwcp_core::{Event, OpenParams, StreamId};
    use std::collections::HashMap;
    use std::time::Duration;

    const CHUNK: usize = 64 * 1024;
    let text = corpus::text(CHUNK, 7);
    let packed = Bytes::from(lz4_flex::block::compress(&text));
    let ratio = CHUNK as f64 / packed.len() as f64;
    let random = Bytes::from(corpus::random(CHUNK, 8));
    let link = LinkConfig {
        bandwidth_bps: 20_000_000,
        one_way_delay: Duration::from_millis(20),
        ..LinkConfig::default()
    };
    let mut pair = Pair::new(Config::default(), Config::default(), link);
    assert!(
        pair.run_until(Duration::from_secs(2), |p| p.client.conn.is_established()
            && p.server.conn.is_established())
    );
    let packed_id = pair
        .client
        .conn
        .open_stream(OpenParams::default())
        .expect("open");
    let raw_id = pair
        .client
        .conn
        .open_stream(OpenParams::default())
        .expect("open");
    let got: std::cell::RefCell<HashMap<StreamId, u64>> = Default::default();
    let mut app = |p: &mut Pair| {
        // The writer keeps both streams' send buffers full.
        while p
            .client
            .conn
            .send_encoded(
                packed_id,
                Encoding {
                    codec: CodecId::Lz4,
                    raw_len: CHUNK as u32,
                },
                packed.clone(),
            )
            .is_ok()
        {}
        while matches!(p.client.conn.send(raw_id, random.clone()), Ok(n) if n == CHUNK) {}
        while p.client.conn.poll_event().is_some() {}
        // The reader drains whatever arrives, decoded.
        let mut ids = Vec::new();
        while let Some(ev) = p.server.conn.poll_event() {
            if let Event::StreamOpened(id) | Event::StreamReadable(id) = ev {
                ids.push(id);
            }
        }
        let mut got = got.borrow_mut();
        ids.extend(got.keys().copied());
        for id in ids {
            while let Ok(Some(b)) = p.server.conn.recv(id, usize::MAX) {
                *got.entry(id).or_default() += b.len() as u64;
            }
        }
    };
    let never = |_: &mut Pair| false;
    pair.drive(Duration::from_secs(3), &mut app, never);
    let before = got.borrow().clone();
    pair.drive(Duration::from_secs(10), &mut app, never);
    // Stream ids are the same on both sides.
    let got = got.into_inner();
    let delta =
        |id: StreamId| got.get(&id).copied().unwrap_or(0) - before.get(&id).copied().unwrap_or(0);
    let (packed_rate, raw_rate) = (delta(packed_id) as f64 / 10.0, delta(raw_id) as f64 / 10.0);
    let gain = packed_rate / raw_rate;
    println!(
        "lz4 ratio {ratio:.2}: compressible stream {:.1} Mbit/s of application data, \
         incompressible {:.1}, gain {gain:.2}×",
        packed_rate * 8e-6,
        raw_rate * 8e-6
    );
    assert!(raw_rate * 8.0 > 5e6, "the incompressible stream starved");
    assert!(
        gain >= 0.8 * ratio,
        "a {ratio:.2}× compressible stream delivers only {gain:.2}× the application rate"
    );
}

// zstd-stream contexts (codec 3): the receiver's limit and its STOPs.

fn open_frame(stream: u32) -> Frame {
    Frame::Open(Open {
        stream,
        class: 0,
        priority: 0,
        weight: 1,
        options: Default::default(),
        route: Bytes::new(),
    })
}

fn feed(c: &mut Connection, now: std::time::Instant, f: Frame) {
    c.handle_input(now, &mut BytesMut::from(&f.to_bytes()[..]));
}

fn open_with_context_chunk(c: &mut Connection, now: std::time::Instant, id: u32) {
    feed(c, now, open_frame(id));
    let raw = corpus::text(64 * 1024, id as u64);
    let payload = dwcp_core::codec::compress(CodecId::ZstdStream, 3, &raw).expect("compress");
    feed(
        c,
        now,
        Frame::Data(Data {
            stream: id,
            encoding: Some(Encoding {
                codec: CodecId::ZstdStream,
                raw_len: raw.len() as u32,
            }),
            payload,
            fin: false,
        }),
    );
    let got = c.recv(id, usize::MAX).expect("recv").expect("data");
    assert_eq!(&got[..], &raw[..got.len()]);
}

/// A peer may hold [`RECEIVER_CONTEXTS`] decoders; one more is a
/// compression error. A RESET gives one back (and the next stream may use
/// it), so a well-behaved peer that waits for the STOP never hits the limit.
#[test]
fn a_peer_asking_for_more_contexts_than_kept_is_refused() {
    let (mut c, now) = established();
    let ids: Vec<u32> = (0..RECEIVER_CONTEXTS as u32).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        open_with_context_chunk(&mut c, now, id);
    }
    assert!(c.error().is_none(), "{:?}", c.error());
    feed(
        &mut c,
        now,
        Frame::Reset(Reset {
            stream: ids[0],
            code: ErrorCode::Cancel,
        }),
    );
    let next = 1 + 2 * RECEIVER_CONTEXTS as u32;
    open_with_context_chunk(&mut c, now, next);
    assert!(c.error().is_none(), "{:?}", c.error());
    // One beyond the limit.
    feed(&mut c, now, open_frame(next + 2));
    let raw = corpus::text(64 * 1024, 1);
    let payload = dwcp_core::codec::compress(CodecId::ZstdStream, 3, &raw).expect("compress");
    feed(
        &mut c,
        now,
        Frame::Data(Data {
            stream: next + 2,
            encoding: Some(Encoding {
                codec: CodecId::ZstdStream,
                raw_len: raw.len() as u32,
            }),
            payload,
            fin: false,
        }),
    );
    assert_eq!(
        c.error().and_then(|e| e.code()),
        Some(ErrorCode::CompressionError)
    );
}

/// Frames the connection wants to send, decoded.
fn output(c: &mut Connection, now: std::time::Instant) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while let Some(t) = c.poll_transmit(now) {
        buf.extend_from_slice(&t.header);
        buf.extend_from_slice(&t.payload);
    }
    let decoder = dwcp_core::frame::FrameDecoder::new(16 << 20);
    let mut out = Vec::new();
    while let Some(f) = decoder.decode(&mut buf).expect("our own frames decode") {
        out.push(f);
    }
    out
}

/// The sender counts a context until the STOP that says the receiver let
/// go of it. A RESET may overtake the stream's first context chunk, so the
/// receiver answers every RESET of a direction it had not stopped, with or
/// without a context, and the sender's count comes back (else a stream
/// reset that way would hold one of the four for the connection's life).
#[test]
fn every_reset_is_answered_with_a_stop() {
    let (mut c, now) = established();
    let _ = output(&mut c, now);
    open_with_context_chunk(&mut c, now, 1);
    feed(&mut c, now, open_frame(3));
    let _ = output(&mut c, now);
    for id in [1, 3] {
        feed(
            &mut c,
            now,
            Frame::Reset(Reset {
                stream: id,
                code: ErrorCode::Cancel,
            }),
        );
    }
    let stops: Vec<u32> = output(&mut c, now)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Stop(s) if s.code == ErrorCode::Cancel => Some(s.stream),
            _ => None,
        })
        .collect();
    assert_eq!(stops, vec![1, 3]);
    assert!(c.error().is_none(), "{:?}", c.error());
}
