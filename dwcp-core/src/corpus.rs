//! Deterministic corpora for tests and benchmarks (nothing is downloaded):
//! zeros, text, JSON, random bytes, and a VM-memory-like mix of 4 KiB pages.

use crate::sim::Rng;

const WORDS: &[&str] = &[
    "the",
    "migration",
    "of",
    "memory",
    "pages",
    "between",
    "hosts",
    "is",
    "bounded",
    "by",
    "link",
    "rate",
    "and",
    "latency",
    "replication",
    "log",
    "entry",
    "commit",
    "index",
    "term",
    "snapshot",
    "block",
    "device",
    "dirty",
    "bitmap",
    "checksum",
    "for",
    "with",
    "a",
    "to",
    "kernel",
    "buffer",
    "queue",
    "stream",
    "window",
    "credit",
    "error",
    "retry",
    "node",
    "zone",
];

/// `len` zero bytes.
pub fn zeros(len: usize) -> Vec<u8> {
    vec![0; len]
}

/// `len` bytes of uniformly random data (incompressible).
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// `len` bytes of English-like log text.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        line += 1;
        out.extend_from_slice(format!("{line:08} ").as_bytes());
        for _ in 0..(6 + rng.below(10)) {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// `len` bytes of JSON records.
pub fn json(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 256);
    let mut id = 0u64;
    out.push(b'[');
    while out.len() < len {
        id += 1;
        let rec = format!(
            "{{\"id\":{id},\"node\":\"node-{}\",\"state\":\"{}\",\"bytes\":{},\"latency_ms\":{}.{}}},\n",
            rng.below(64),
            WORDS[rng.below(WORDS.len() as u64) as usize],
            rng.below(1 << 30),
            rng.below(500),
            rng.below(1000)
        );
        out.extend_from_slice(rec.as_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes shaped like guest memory: 4 KiB pages, about 40% zero pages,
/// 25% text, 20% structured binary (small integers and pointers), 15% random.
pub fn vm_memory(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 4096);
    let mut page = 0u64;
    while out.len() < len {
        page += 1;
        let kind = rng.below(100);
        let p: Vec<u8> = if kind < 40 {
            vec![0; 4096]
        } else if kind < 65 {
            text(4096, seed ^ page)
        } else if kind < 85 {
            let mut v = Vec::with_capacity(4096);
            while v.len() < 4096 {
                let x: u64 = if rng.below(2) == 0 {
                    rng.below(256)
                } else {
                    0xffff_8880_0000_0000 | (rng.below(1 << 20) << 6)
                };
                v.extend_from_slice(&x.to_le_bytes());
            }
            v
        } else {
            random(4096, seed ^ page)
        };
        out.extend_from_slice(&p);
    }
    out.truncate(len);
    out
}

/// Every corpus by name, `len` bytes each.
pub fn all(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("zeros", zeros(len)),
        ("text", text(len, 1)),
        ("json", json(len, 2)),
        ("random", random(len, 3)),
        ("vm-memory", vm_memory(len, 4)),
    ]
}
