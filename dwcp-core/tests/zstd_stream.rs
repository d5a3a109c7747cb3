//! zstd-stream contexts (`CodecId::ZstdStream`) end to end: data stays
//! exact while streams that hold contexts finish, are reset or are stopped
//! mid-flight, the contexts come back for new streams, and a peer that asks
//! for more contexts than this side keeps is refused.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use bytes::{Bytes, BytesMut};
use common::{connected, opts};
use dwcp_core::frame::{Data, Encoding, Frame, Open, Reset};
use dwcp_core::net::{Compression, Connection, Transport};
use dwcp_core::zstd_stream::RECEIVER_CONTEXTS;
use dwcp_core::{corpus, CodecId, Config, ErrorCode, Side};

const STREAM_LEN: usize = 3 << 20;

fn content(seed: u64) -> Vec<u8> {
    // Compressible, different per stream, repeating beyond one chunk.
    let mut v = corpus::text(STREAM_LEN / 2, seed);
    v.extend_from_slice(&corpus::vm_memory(STREAM_LEN / 2, seed));
    v
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

/// The server's side: streams routed `read` are read to their end and
/// their hash reported; streams routed `stop` are stopped after 256 KiB.
fn serve(
    server: Connection,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Result<u64, String>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut s) = server.accept_stream().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let route = String::from_utf8_lossy(&s.route()).to_string();
                let mut h = DefaultHasher::new();
                let mut n = 0usize;
                let r = loop {
                    match s.recv().await {
                        Ok(Some(b)) => {
                            h.write(&b);
                            n += b.len();
                            if route == "stop" && n >= 256 * 1024 {
                                s.reset(ErrorCode::Cancel);
                                break Err("stopped".to_string());
                            }
                        }
                        Ok(None) => break Ok(h.finish()),
                        Err(e) => break Err(e.to_string()),
                    }
                };
                let _ = tx.send((route, r));
            });
        }
    });
    rx
}

/// What the client does with one stream.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    /// Sends everything and finishes.
    Whole,
    /// Resets after 1 MiB.
    Reset,
    /// The server stops reading after 256 KiB.
    Stopped,
}

async fn send(client: &Connection, seed: u64, fate: Fate) -> Option<u64> {
    let mut o = opts(if fate == Fate::Stopped {
        "stop"
    } else {
        "read"
    });
    o.compression = Compression::Force(CodecId::ZstdStream, 3);
    let mut s = client.open_stream(o).expect("open");
    let data = Bytes::from(content(seed));
    let want = hash(&data);
    for (i, piece) in data.chunks(256 * 1024).enumerate() {
        if fate == Fate::Reset && i == 4 {
            s.reset(ErrorCode::Cancel);
            return None;
        }
        if let Err(e) = s.send(data.slice_ref(piece)).await {
            assert_eq!(fate, Fate::Stopped, "stream {seed}: {e}");
            return None;
        }
    }
    s.finish().expect("finish");
    let _ = s.stopped().await;
    Some(want)
}

async fn waves(transport: Transport) {
    let (_server_ep, _client_ep, client, server) = connected(transport).await;
    let mut results = serve(server);
    let context_raw =
        |c: &Connection| -> u64 { c.stats().compression.values().map(|c| c.context_raw).sum() };
    // Wave 1: more streams than contexts, some reset, one stopped.
    let fates = [
        Fate::Whole,
        Fate::Reset,
        Fate::Whole,
        Fate::Stopped,
        Fate::Whole,
        Fate::Reset,
        Fate::Whole,
    ];
    let mut wave2 = 0;
    for (wave, fates) in [(1, &fates[..]), (2, &[Fate::Whole; 5][..])] {
        let before = context_raw(&client);
        let tasks: Vec<_> = fates
            .iter()
            .enumerate()
            .map(|(i, &fate)| {
                let c = client.clone();
                tokio::spawn(async move { send(&c, wave * 100 + i as u64, fate).await })
            })
            .collect();
        let mut want = Vec::new();
        for t in tasks {
            if let Some(h) = t.await.expect("sender") {
                want.push(h);
            }
        }
        let mut got = Vec::new();
        for _ in 0..fates.len() {
            let (route, r) = results.recv().await.expect("a result");
            match r {
                Ok(h) => got.push(h),
                Err(e) => assert!(
                    route == "stop" || e.contains("reset"),
                    "wave {wave}: {route}: {e}"
                ),
            }
        }
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "wave {wave}: every whole stream arrives exact");
        let used = context_raw(&client) - before;
        assert!(used > 0, "wave {wave}: no chunk used a stream context");
        if wave == 2 {
            wave2 = used;
        }
    }
    // Wave 2's streams got contexts: the ones of wave 1 came back after
    // their finish, reset or stop.
    assert!(
        wave2 >= STREAM_LEN as u64 / 4,
        "wave 2 used contexts for {wave2} bytes"
    );
    let ratio = client.stats().compression_ratio();
    assert!(ratio > 3.0, "ratio {ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_survive_resets_and_stops_and_come_back_over_quic() {
    waves(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_survive_resets_and_stops_and_come_back_over_tcp_lanes() {
    waves(Transport::Tcp).await;
}

fn established() -> (dwcp_core::Connection, std::time::Instant) {
    let now = std::time::Instant::now();
    let mut c = dwcp_core::Connection::new(Config::default(), Side::Server, now).expect("config");
    let hello = dwcp_core::frame::Hello {
        min_version: dwcp_core::PROTOCOL_VERSION,
        max_version: dwcp_core::PROTOCOL_VERSION,
        capabilities: dwcp_core::Capabilities::ALL,
        required: dwcp_core::Capabilities::NONE,
        codecs: CodecId::all_bits(),
        max_frame_payload: 256 * 1024,
        max_decoded_frame: 1 << 20,
        initial_stream_window: 1 << 20,
        initial_connection_window: 16 << 20,
        max_streams: 100,
        class_names: Vec::new(),
    };
    c.handle_input(
        now,
        &mut BytesMut::from(&Frame::Hello(Box::new(hello)).to_bytes()[..]),
    );
    (c, now)
}

fn feed(c: &mut dwcp_core::Connection, now: std::time::Instant, f: Frame) {
    c.handle_input(now, &mut BytesMut::from(&f.to_bytes()[..]));
}

fn open_with_context_chunk(c: &mut dwcp_core::Connection, now: std::time::Instant, id: u32) {
    feed(
        c,
        now,
        Frame::Open(Open {
            stream: id,
            class: 0,
            priority: 0,
            weight: 1,
            options: Default::default(),
            route: Bytes::new(),
        }),
    );
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
    feed(
        &mut c,
        now,
        Frame::Open(Open {
            stream: next + 2,
            class: 0,
            priority: 0,
            weight: 1,
            options: Default::default(),
            route: Bytes::new(),
        }),
    );
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
fn output(c: &mut dwcp_core::Connection, now: std::time::Instant) -> Vec<Frame> {
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
    feed(
        &mut c,
        now,
        Frame::Open(Open {
            stream: 3,
            class: 0,
            priority: 0,
            weight: 1,
            options: Default::default(),
            route: Bytes::new(),
        }),
    );
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
