//! Receives DWCP streams and reports what arrived.
//!
//! ```sh
//! # Development mode: creates a throwaway CA and certificates in /tmp/dwcp-dev.
//! cargo run --release -p dwcp-core --example receiver -- --dev /tmp/dwcp-dev quic 127.0.0.1:4433
//! cargo run --release -p dwcp-core --example sender -- /tmp/dwcp-dev quic 127.0.0.1:4433 64
//! ```
//!
//! With real certificates, build a [`TlsConfig`] with `TlsConfig::from_pem_files`.

use std::path::PathBuf;
use std::time::Instant;

use dwcp_core::net::{Endpoint, EndpointConfig, Transport};
use dwcp_core::tls::{DevCa, TlsConfig};

fn usage() -> ! {
    eprintln!("usage: receiver [--dev] CERT_DIR quic|tcp ADDR");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let dev = args.first().is_some_and(|a| a == "--dev");
    if dev {
        args.remove(0);
    }
    let [dir, transport, addr] = &args[..] else {
        usage()
    };
    let dir = PathBuf::from(dir);
    if dev {
        DevCa::new()?.write_pem_files(&dir, &["receiver", "sender"])?;
        println!("development certificates written to {}", dir.display());
    }
    let tls = TlsConfig::from_pem_files(
        &dir.join("receiver.pem"),
        &dir.join("receiver.key"),
        &dir.join("ca.pem"),
    )?;
    let transport = match transport.as_str() {
        "quic" => Transport::Quic,
        "tcp" => Transport::Tcp,
        _ => usage(),
    };
    let ep = Endpoint::bind(addr.parse()?, EndpointConfig::new(tls, transport)).await?;
    println!("listening on {} ({transport:?})", ep.local_addr());
    while let Some(conn) = ep.accept().await {
        println!(
            "connection from {:?} ({:?})",
            conn.peer_identity(),
            conn.remote_addr()
        );
        tokio::spawn(async move {
            while let Some(mut stream) = conn.accept_stream().await {
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut n = 0u64;
                    loop {
                        match stream.recv().await {
                            Ok(Some(b)) => n += b.len() as u64,
                            Ok(None) => {
                                // Nothing to send back: finish our direction too.
                                let _ = stream.finish();
                                let s = start.elapsed().as_secs_f64();
                                println!(
                                    "stream {} ({}): {n} bytes in {s:.2} s, {:.1} MB/s",
                                    stream.id(),
                                    String::from_utf8_lossy(&stream.route()),
                                    n as f64 / s / 1e6
                                );
                                break;
                            }
                            Err(e) => {
                                println!("stream {} failed after {n} bytes: {e}", stream.id());
                                break;
                            }
                        }
                    }
                });
            }
        });
    }
    Ok(())
}
