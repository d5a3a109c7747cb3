#![allow(missing_docs)] // criterion macros generate undocumented items
//! Each codec through DWCP's codec layer vs calling lz4_flex / zstd directly,
//! and what the adaptive policy costs a stream of incompressible data that
//! it sends as-is, against `off`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dwcp_core::codec::decompress;
use dwcp_core::encoder::{Encoder, Feedback, Policy};
use dwcp_core::frame::Encoding;
use dwcp_core::selector::Level;
use dwcp_core::{corpus, CodecId};

const CHUNK: usize = 128 * 1024;

fn compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    for (name, data) in [
        ("text", corpus::text(CHUNK, 1)),
        ("vm-memory", corpus::vm_memory(CHUNK, 4)),
    ] {
        let data = Bytes::from(data);
        g.throughput(Throughput::Bytes(CHUNK as u64));
        for level in [Level::Lz4, Level::Zstd(1), Level::Zstd(3)] {
            let id = format!("{name}/{}", level.label());
            let mut enc = Encoder::new(Policy::Force(level), CodecId::all_bits());
            g.bench_with_input(BenchmarkId::new("dwcp", &id), &data, |b, d| {
                b.iter(|| enc.encode(d.clone(), None))
            });
            match level {
                Level::Lz4 => {
                    g.bench_with_input(BenchmarkId::new("direct", &id), &data, |b, d| {
                        b.iter(|| lz4_flex::block::compress(d))
                    });
                }
                Level::Zstd(l) => {
                    let mut z = zstd::bulk::Compressor::new(l).expect("zstd");
                    g.bench_with_input(BenchmarkId::new("direct", &id), &data, |b, d| {
                        b.iter(|| z.compress(d).expect("zstd"))
                    });
                }
                Level::None => {}
            }
        }
    }
    g.finish();
}

fn decompress_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decompress");
    let data = corpus::vm_memory(CHUNK, 4);
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let lz = lz4_flex::block::compress(&data);
    let zs = zstd::bulk::compress(&data, 3).expect("zstd");
    let enc = |codec| Encoding {
        codec,
        raw_len: CHUNK as u32,
    };
    g.bench_function("dwcp/lz4", |b| {
        b.iter(|| decompress(enc(CodecId::Lz4), &lz, 1 << 20).expect("ok"))
    });
    g.bench_function("direct/lz4", |b| {
        b.iter(|| lz4_flex::block::decompress(&lz, CHUNK).expect("ok"))
    });
    g.bench_function("dwcp/zstd3", |b| {
        b.iter(|| decompress(enc(CodecId::Zstd), &zs, 1 << 20).expect("ok"))
    });
    g.bench_function("direct/zstd3", |b| {
        b.iter(|| zstd::bulk::decompress(&zs, CHUNK).expect("ok"))
    });
    g.finish();
}

/// One 64 KiB chunk of random bytes (what the daemon reads at a time)
/// through a stream's encoder that has seen many such chunks: `off` does
/// nothing, `adaptive` samples, decides and explores on schedule.
fn as_is(c: &mut Criterion) {
    const READ: usize = 64 * 1024;
    let mut g = c.benchmark_group("as-is");
    let data = Bytes::from(corpus::random(READ, 9));
    g.throughput(Throughput::Bytes(READ as u64));
    // A 100 Mbit/s link: compressing would pay on compressible data, so
    // the adaptive policy samples rather than skipping as on a fast link.
    let link = Some(12.5e6);
    let fb = Feedback {
        wire_rate: link,
        ..Feedback::default()
    };
    for (name, policy) in [("off", Policy::Off), ("adaptive", Policy::Adaptive)] {
        let mut enc = Encoder::new(policy, CodecId::all_bits());
        g.bench_with_input(BenchmarkId::new("random", name), &data, |b, d| {
            b.iter(|| {
                let out = enc.plan(d.clone(), link, fb).compress();
                enc.observe(&out);
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, compress, decompress_bench, as_is);
criterion_main!(benches);
