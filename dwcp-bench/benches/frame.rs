//! Hot paths of the protocol core: frame encode/decode and core throughput.
#![allow(missing_docs)] // criterion macros generate undocumented items

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dwcp_core::frame::{Data, Frame, FrameDecoder, Window};

fn encode_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [1024usize, 32 * 1024] {
        let payload = Bytes::from(vec![7u8; size]);
        let frame = Frame::Data(Data {
            stream: 1,
            encoding: None,
            payload,
            fin: false,
        });
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("encode_data", size), &frame, |b, f| {
            let mut head = BytesMut::with_capacity(1 << 16);
            b.iter(|| {
                let p = f.encode(&mut head);
                head.clear();
                p
            })
        });
        let wire = frame.to_bytes();
        let dec = FrameDecoder::new(256 * 1024);
        g.bench_with_input(BenchmarkId::new("decode_data", size), &wire, |b, w| {
            b.iter(|| {
                let mut buf = BytesMut::from(&w[..]);
                dec.decode(&mut buf)
            })
        });
    }
    let win = Frame::Window(Window {
        stream: 3,
        credit: 65536,
    })
    .to_bytes();
    let dec = FrameDecoder::new(256 * 1024);
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_64_window_frames", |b| {
        let many: Vec<u8> = win.iter().copied().cycle().take(win.len() * 64).collect();
        b.iter(|| {
            let mut buf = BytesMut::from(&many[..]);
            let mut n = 0;
            while let Ok(Some(_)) = dec.decode(&mut buf) {
                n += 1;
            }
            n
        })
    });
    g.finish();
}

fn core_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_transfer");
    g.sample_size(10);
    for streams in [1u32, 100] {
        let len = (64u64 << 20) / streams as u64;
        g.throughput(Throughput::Bytes(len * streams as u64));
        g.bench_with_input(BenchmarkId::new("streams", streams), &streams, |b, &n| {
            b.iter(|| dwcp_bench::core_transfer(n, len))
        });
    }
    g.finish();
}

criterion_group!(benches, encode_decode, core_throughput);
criterion_main!(benches);
