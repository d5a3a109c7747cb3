//! The `demo` subcommand: the protocol core over a simulated WAN.

use std::time::{Duration, Instant};

use dwcp_core::sim::{expected_hash, run_traffic, LinkConfig, Pair, Traffic};
use dwcp_core::{Config, OpenParams, StreamOptions};

/// Options of `dwcp-daemon demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Link rate in Mbit/s.
    #[arg(long, default_value_t = 100)]
    mbit: u64,
    /// Round-trip time in milliseconds.
    #[arg(long, default_value_t = 100)]
    rtt_ms: u64,
    /// Segment loss probability, in percent.
    #[arg(long, default_value_t = 0.5)]
    loss_pct: f64,
    /// Number of bulk streams.
    #[arg(long, default_value_t = 8)]
    streams: u32,
    /// MiB sent on each bulk stream.
    #[arg(long, default_value_t = 32)]
    mib: u64,
    /// Seed for loss and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(crate) fn run(a: &DemoArgs) -> Result<(), String> {
    let link = LinkConfig {
        bandwidth_bps: a.mbit * 1_000_000,
        one_way_delay: Duration::from_millis(a.rtt_ms / 2),
        jitter: Duration::from_millis(1),
        loss: a.loss_pct / 100.0,
        seed: a.seed,
        ..LinkConfig::default()
    };
    println!(
        "DWCP demo: protocol core over a simulated link of {} Mbit/s, {} ms RTT, {}% segment loss (virtual time)",
        a.mbit, a.rtt_ms, a.loss_pct
    );
    let wall = Instant::now();
    let mut pair = Pair::new(Config::default(), Config::default(), link);
    let mut client = Traffic::new();
    let mut server = Traffic::new();
    let len = a.mib << 20;
    for i in 0..a.streams {
        client.add_stream(
            OpenParams {
                class: 1,
                weight: 1,
                route: bytes::Bytes::from(format!("bulk-{i}")),
                ..OpenParams::default()
            },
            len,
            i as u64,
        );
    }
    // An interactive stream: weight 8, small messages, sent beside the bulk.
    client.add_stream(
        OpenParams {
            class: 0,
            weight: 8,
            options: StreamOptions::INTERACTIVE,
            route: bytes::Bytes::from_static(b"control"),
            ..OpenParams::default()
        },
        64 * 1024,
        999,
    );
    let total = a.streams as u64 + 1;
    let ok = run_traffic(
        &mut pair,
        &mut client,
        &mut server,
        Duration::from_secs(3600),
        |_, _, s| s.finished_count() as u64 == total,
    );
    if !ok {
        return Err(format!(
            "transfer did not complete: {} of {total} streams finished",
            server.finished_count()
        ));
    }
    let elapsed = pair.elapsed();
    let mut verified = 0;
    for (n, id) in client.opened.iter().enumerate() {
        let (seed, l) = if n as u32 == a.streams {
            (999, 64 * 1024)
        } else {
            (n as u64, len)
        };
        let r = &server.received[id];
        if r.len != l || r.hash != expected_hash(seed, l, client.chunk) {
            return Err(format!("stream {id}: content mismatch"));
        }
        verified += 1;
    }
    let bytes = server.bytes_read;
    let goodput = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    let stats = pair.client.conn.stats();
    let sstats = pair.server.conn.stats();
    println!("  streams verified by hash : {verified}/{total}");
    println!(
        "  bytes delivered          : {:.1} MiB in {:.2} s virtual ({:.2} s wall)",
        bytes as f64 / 1048576.0,
        elapsed.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    println!(
        "  goodput                  : {goodput:.1} Mbit/s ({:.1}% of the link)",
        goodput / a.mbit as f64 * 100.0
    );
    println!(
        "  frames sent / received   : {} / {}",
        stats.frames_sent, sstats.frames_received
    );
    println!(
        "  segments lost (and retransmitted): {}",
        pair.client.link.lost
    );
    println!(
        "  RTT smoothed / min       : {:?} / {:?}",
        stats.smoothed_rtt.unwrap_or_default(),
        stats.min_rtt.unwrap_or_default()
    );
    println!(
        "  receive window (conn)    : {} KiB (auto-tuned from 1024 KiB)",
        sstats.connection_window / 1024
    );
    Ok(())
}
