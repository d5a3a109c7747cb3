//! zstd-stream contexts (`CodecId::ZstdStream`) end to end: data stays
//! exact while streams that hold contexts finish, are reset or are stopped
//! mid-flight, and the contexts come back for new streams. (The receiver's
//! limit, tested on the protocol core, is in `compression.rs`.)

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use bytes::Bytes;
use common::{connected, connected_at_rate, opts};
use dwcp_core::net::{Compression, Connection, Transport};
use dwcp_core::{corpus, CodecId, ErrorCode};

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
/// their bytes reported; streams routed `stop` are stopped after 256 KiB.
fn serve(
    server: Connection,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Result<Vec<u8>, String>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut s) = server.accept_stream().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let route = String::from_utf8_lossy(&s.route()).to_string();
                let mut got = Vec::new();
                let r = loop {
                    match s.recv().await {
                        Ok(Some(b)) => {
                            got.extend_from_slice(&b);
                            if route == "stop" && got.len() >= 256 * 1024 {
                                s.reset(ErrorCode::Cancel);
                                break Err("stopped".to_string());
                            }
                        }
                        Ok(None) => break Ok(got),
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
                Ok(bytes) => got.push(hash(&bytes)),
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

/// `send` is not cancel safe (a prefix of the data may have been queued),
/// but a cancelled `send` must not break the stream: a chunk that entered
/// the stream's zstd context and was never queued would leave the peer's
/// context behind, and the next chunk would decode wrong or fail the
/// connection. The receiver must get a prefix of the cancelled data and
/// then everything sent after, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_send_leaves_the_stream_exact() {
    let (_server_ep, _client_ep, client, server) = connected(Transport::Quic).await;
    let mut results = serve(server);
    for (i, micros) in [100u64, 300, 700, 1500, 3000, 6000].into_iter().enumerate() {
        let mut o = opts("read");
        o.compression = Compression::Force(CodecId::ZstdStream, 3);
        let mut s = client.open_stream(o).expect("open");
        let first = Bytes::from(content(1000 + i as u64));
        let then = Bytes::from(content(2000 + i as u64));
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(micros),
            s.send(first.clone()),
        )
        .await;
        s.send(then.clone())
            .await
            .expect("send after the cancelled one");
        s.finish().expect("finish");
        let got = results
            .recv()
            .await
            .expect("a result")
            .1
            .expect("stream read whole");
        assert!(got.len() >= then.len(), "{micros} µs: {} bytes", got.len());
        let k = got.len() - then.len();
        assert!(k <= first.len(), "{micros} µs: {k} bytes before");
        assert_eq!(&got[..k], &first[..k], "{micros} µs: the prefix");
        assert_eq!(&got[k..], &then[..], "{micros} µs: what followed");
    }
}

/// Adaptive streams queue runs of chunks sent as-is as one piece, between
/// chunks that go to the compressor (and into the stream's context):
/// pieces and compressed chunks must reach the peer in order. Random
/// blocks (sent as-is, runs longer than one piece) alternate with
/// compressible ones, written as one large `send` and as 256 KiB writes.
async fn mixed_blocks_arrive_exact(transport: Transport) {
    // On a 50 Mbit/s link the text blocks pay for compression.
    let (_server_ep, _client_ep, client, server) =
        connected_at_rate(transport, Some(50_000_000)).await;
    let mut results = serve(server);
    for (seed, whole) in [(1u64, true), (2, false)] {
        let mut data = Vec::new();
        for (i, blocks) in [11usize, 3, 9, 1, 12, 2].into_iter().enumerate() {
            let len = blocks * 128 * 1024;
            if i % 2 == 0 {
                data.extend_from_slice(&corpus::random(len, seed * 10 + i as u64));
            } else {
                data.extend_from_slice(&corpus::text(len, seed * 10 + i as u64));
            }
        }
        let data = Bytes::from(data);
        let mut s = client.open_stream(opts("read")).expect("open");
        if whole {
            s.send(data.clone()).await.expect("send");
        } else {
            for piece in data.chunks(256 * 1024) {
                s.send(data.slice_ref(piece)).await.expect("send");
            }
        }
        s.finish().expect("finish");
        let got = results.recv().await.expect("a result").1.expect("read");
        assert_eq!(got.len(), data.len(), "seed {seed}");
        assert!(got == data[..], "seed {seed}: the bytes differ");
    }
    // 27 random blocks and 6 of text: 1.0 with nothing compressed, about
    // 1.15 with the text compressed 4x.
    let ratio = client.stats().compression_ratio();
    assert!(
        ratio > 1.08,
        "the text blocks were compressed: ratio {ratio}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_blocks_arrive_exact_over_quic() {
    mixed_blocks_arrive_exact(Transport::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_blocks_arrive_exact_over_tcp_lanes() {
    mixed_blocks_arrive_exact(Transport::Tcp).await;
}
