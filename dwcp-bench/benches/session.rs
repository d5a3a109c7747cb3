//! Session throughput over the in-memory transport: the async API, driver and
//! protocol core without sockets or encryption.
#![allow(missing_docs)] // criterion macros generate undocumented items

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dwcp_core::net::{mem, Compression, StreamOptions};
use dwcp_core::Config;

const CHUNK: usize = 256 * 1024;

async fn transfer(streams: usize, total: u64) -> u64 {
    let (c, s) = mem::pair(Config::default(), Config::default(), 4, 1 << 20)
        .await
        .expect("pair");
    let per = total / streams as u64;
    let sink = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let mut st = s.accept_stream().await.expect("stream");
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(b) = st.recv().await.expect("recv") {
                    n += b.len() as u64;
                }
                let _ = st.finish();
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("reader");
        }
        n
    });
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let mut writers = Vec::new();
    for _ in 0..streams {
        let mut st = c
            .open_stream(StreamOptions {
                compression: Compression::Off,
                ..StreamOptions::default()
            })
            .expect("open");
        let chunk = chunk.clone();
        writers.push(tokio::spawn(async move {
            let mut left = per;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                st.send(chunk.slice(..n)).await.expect("send");
                left -= n as u64;
            }
            st.finish().expect("finish");
            while st.recv().await.expect("recv").is_some() {}
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    sink.await.expect("sink")
}

fn session(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("session_mem");
    g.sample_size(10);
    for streams in [1usize, 16, 256] {
        let total = 64u64 << 20;
        g.throughput(Throughput::Bytes(total));
        g.bench_with_input(BenchmarkId::new("streams", streams), &streams, |b, &n| {
            b.iter(|| rt.block_on(transfer(n, total)))
        });
    }
    g.finish();
}

criterion_group!(benches, session);
criterion_main!(benches);
