//! `dwcp-bench`: end-to-end scenarios comparing DWCP with the alternatives.

use clap::{Parser, Subcommand};

/// DWCP benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "dwcp-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk throughput on loopback: DWCP over QUIC vs raw quinn, DWCP over TCP
    /// lanes vs raw TCP+rustls, 1,000 streams vs 1.
    Bulk {
        /// MiB moved per run.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Runs of each side (best kept).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("runtime: {e}");
            std::process::exit(1)
        });
    match cli.command {
        Command::Bulk { mib, rounds, json } => {
            let res = rt.block_on(dwcp_bench::scenarios::bulk(mib << 20, rounds.max(1)));
            if json {
                match serde_json::to_string_pretty(&res) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("json: {e}"),
                }
            } else {
                println!(
                    "{:<34} {:>12} {:>12} {:>7}",
                    "scenario", "DWCP MB/s", "base MB/s", "ratio"
                );
                for c in &res {
                    println!(
                        "{:<34} {:>12.0} {:>12.0} {:>7.2}",
                        c.scenario, c.dwcp.value, c.baseline.value, c.ratio
                    );
                }
                for c in &res {
                    println!(
                        "  {}: {} vs {}",
                        c.scenario, c.dwcp.subject, c.baseline.subject
                    );
                }
            }
        }
    }
}
