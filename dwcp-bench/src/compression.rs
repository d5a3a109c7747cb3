//! Adaptive vs fixed compression over emulated link rates.
//!
//! The sender is a two-stage pipeline: one compressor thread (real CPU time,
//! measured here) feeding a link of the emulated rate (virtual time):
//! chunk `k` leaves the compressor at `c[k] = c[k-1] + cpu[k]` and the link at
//! `l[k] = max(l[k-1], c[k]) + wire[k] / rate`. Delivered raw rate =
//! raw bytes / `l[last]`. The adaptive selector is told the emulated rate, as
//! the link estimate would report it (estimator error is not modelled here),
//! and what the stream would have waited on: the transport when the link was
//! still busy as a chunk came out of the compressor (then the stream measures
//! the link rate), else the compressor (then it measures what it fed).

use std::time::Instant;

use bytes::Bytes;
use dwcp_core::encoder::{Encoder, Feedback, Policy};
use dwcp_core::selector::{Level, Wait};
use dwcp_core::{corpus, CodecId};
use serde::Serialize;

const CHUNK: usize = 128 * 1024;

/// Rates emulated, bits per second (0 = unlimited).
pub const RATES: [(u64, &str); 4] = [
    (10_000_000, "10 Mbit/s"),
    (100_000_000, "100 Mbit/s"),
    (1_000_000_000, "1 Gbit/s"),
    (0, "unlimited"),
];

/// Fixed policies compared: every level of the selector's ladder.
pub const FIXED: [Level; 6] = dwcp_core::selector::LADDER;

/// One table cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Corpus name.
    pub corpus: String,
    /// Link rate label.
    pub rate: String,
    /// Delivered raw MB/s per policy, in the order of [`FIXED`] then adaptive.
    pub mbps: Vec<(String, f64)>,
    /// Adaptive over the best fixed policy.
    pub adaptive_vs_best: f64,
    /// Chunks per level chosen by the adaptive policy.
    pub adaptive_levels: Vec<(String, usize)>,
}

struct Trace {
    cpu: Vec<f64>,
    wire: Vec<usize>,
    raw: usize,
    levels: std::collections::BTreeMap<String, usize>,
}

fn run(policy: Policy, data: &[u8], rate_bytes: Option<f64>) -> Trace {
    let mut enc = Encoder::new(policy, CodecId::all_bits());
    let mut t = Trace {
        cpu: Vec::new(),
        wire: Vec::new(),
        raw: 0,
        levels: Default::default(),
    };
    // The emulated pipeline's clocks (compressor done, link done) and what
    // the stream would observe around the previous chunk.
    let (mut c, mut l) = (0.0f64, 0.0f64);
    let mut fb = Feedback::default();
    for chunk in data.chunks(CHUNK) {
        let b = Bytes::copy_from_slice(chunk);
        let t0 = Instant::now();
        let out = enc.encode_with(b, rate_bytes, fb);
        let cpu = t0.elapsed().as_secs_f64();
        let wire = out.payload.len() + 15;
        // Was the link still busy with earlier chunks when this one was ready?
        c += cpu;
        let busy = l > c;
        l = l.max(c) + rate_bytes.map_or(0.0, |r| wire as f64 / r);
        fb = if busy {
            Feedback {
                wait: Wait::Transport,
                wire_rate: rate_bytes,
            }
        } else {
            Feedback {
                wait: Wait::Compressor,
                wire_rate: (cpu > 0.0).then(|| wire as f64 / cpu),
            }
        };
        t.cpu.push(cpu);
        t.wire.push(wire);
        t.raw += chunk.len();
        *t.levels.entry(out.level.label()).or_default() += 1;
    }
    t
}

/// Best of three runs (per-chunk minimum CPU time): the machine is shared,
/// and the minimum is the least disturbed measurement of the same work.
fn run3(policy: Policy, data: &[u8], rate_bytes: Option<f64>) -> Trace {
    let mut best = run(policy, data, rate_bytes);
    for _ in 0..2 {
        let t = run(policy, data, rate_bytes);
        if t.wire == best.wire {
            for (b, c) in best.cpu.iter_mut().zip(&t.cpu) {
                *b = b.min(*c);
            }
        } else if t.cpu.iter().sum::<f64>() < best.cpu.iter().sum::<f64>() {
            best = t;
        }
    }
    best
}

fn delivered(t: &Trace, rate_bytes: Option<f64>) -> f64 {
    let (mut c, mut l) = (0.0f64, 0.0f64);
    for (cpu, wire) in t.cpu.iter().zip(&t.wire) {
        c += cpu;
        let send = rate_bytes.map_or(0.0, |r| *wire as f64 / r);
        l = l.max(c) + send;
    }
    t.raw as f64 / l.max(1e-9) / 1e6
}

/// Runs the table on `mib` MiB of each corpus.
pub fn table(mib: usize) -> Vec<Cell> {
    let len = mib << 20;
    let corpora = [
        ("vm-memory (compressible)", corpus::vm_memory(len, 4)),
        ("random (incompressible)", corpus::random(len, 3)),
    ];
    let mut out = Vec::new();
    for (name, data) in &corpora {
        // Fixed policies do the same work whatever the link: measure once.
        let fixed: Vec<Trace> = FIXED
            .iter()
            .map(|l| {
                let p = if *l == Level::None {
                    Policy::Off
                } else {
                    Policy::Force(*l)
                };
                run3(p, data, None)
            })
            .collect();
        for (bps, label) in RATES {
            let rate = (bps > 0).then(|| bps as f64 / 8.0);
            let mut mbps: Vec<(String, f64)> = FIXED
                .iter()
                .zip(&fixed)
                .map(|(l, t)| (l.label(), delivered(t, rate)))
                .collect();
            let a = run3(Policy::Adaptive, data, rate);
            let ad = delivered(&a, rate);
            let best = mbps.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            mbps.push(("adaptive".into(), ad));
            out.push(Cell {
                corpus: (*name).into(),
                rate: label.into(),
                mbps,
                adaptive_vs_best: ad / best,
                adaptive_levels: a.levels.into_iter().collect(),
            });
        }
    }
    out
}
