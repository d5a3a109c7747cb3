//! `dwcp-daemon`: the DWCP sidecar.
//!
//! Today it offers `demo`, which runs the DWCP protocol core over a simulated
//! WAN link in virtual time and reports what it achieved.

mod demo;

use clap::{Parser, Subcommand};

/// DWCP sidecar.
#[derive(Debug, Parser)]
#[command(name = "dwcp-daemon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs bulk and interactive streams over a simulated WAN and prints the results.
    Demo(demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => match demo::run(&args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
