#![allow(missing_docs)] // criterion macros generate undocumented items
//! Per-frame scheduling cost with 10, 1,000 and 100,000 backlogged streams in
//! four classes: one decision (class, stream, deficits, token buckets).

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dwcp_core::scheduler::{ClassConfig, SchedState, Scheduler};

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule_frame");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 1_000, 100_000] {
        let now = Instant::now();
        let classes: Vec<ClassConfig> = (0..4)
            .map(|i| ClassConfig {
                class: i,
                weight: 1 + i as u32,
                min_rate: None,
                max_rate: if i == 3 { Some(u64::MAX / 4) } else { None },
            })
            .collect();
        let mut s = Scheduler::new(&classes, None, 256 * 1024, now);
        let mut states = vec![SchedState::default(); n];
        for (i, st) in states.iter_mut().enumerate() {
            s.push((i % 4) as u8, i as u32, st, now);
        }
        let quantum = 128 * 1024;
        let frame = 32 * 1024u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let class = match s.next_class(now, quantum, &[]) {
                    Some(Ok(c)) => c,
                    _ => return,
                };
                let Some(id) = s.front_stream(class) else {
                    return;
                };
                let st = &mut states[id as usize];
                if Scheduler::begin_turn(st, quantum, 1) <= 0 {
                    s.rotate_stream(class, st);
                    return;
                }
                st.deficit -= frame as i64;
                if st.deficit <= 0 {
                    s.rotate_stream(class, st);
                }
                s.charge(class, frame, now);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
