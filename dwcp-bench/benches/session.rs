//! Session throughput over the in-memory transport: the async API, driver and
//! protocol core without sockets or encryption.
#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dwcp_core::net::mem;
use dwcp_core::Config;

async fn transfer(streams: usize, total: u64) -> u64 {
    let (c, s) = mem::pair(Config::default(), Config::default(), 4, 1 << 20)
        .await
        .expect("pair");
    dwcp_bench::scenarios::transfer(&c, s, streams, total).await
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
