//! Sends MiB of data on a few DWCP streams (see `receiver.rs` for how to run).

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use dwcp_core::net::{Endpoint, EndpointConfig, StreamOptions, Transport};
use dwcp_core::tls::TlsConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, transport, addr, mib] = &args[..] else {
        eprintln!("usage: sender CERT_DIR quic|tcp ADDR MIB");
        std::process::exit(2)
    };
    let dir = PathBuf::from(dir);
    let tls = TlsConfig::from_pem_files(
        &dir.join("sender.pem"),
        &dir.join("sender.key"),
        &dir.join("ca.pem"),
    )?;
    let transport = if transport == "tcp" {
        Transport::Tcp
    } else {
        Transport::Quic
    };
    let mib: u64 = mib.parse()?;
    let ep = Endpoint::bind("0.0.0.0:0".parse()?, EndpointConfig::new(tls, transport)).await?;
    let conn = ep.connect(addr.parse()?, "receiver").await?;
    println!("connected to {:?}", conn.peer_identity());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut stream = conn.open_stream(StreamOptions {
            route: Bytes::from(format!("bulk-{i}")),
            weight: 1,
            ..StreamOptions::default()
        })?;
        tasks.push(tokio::spawn(async move {
            let chunk = Bytes::from(vec![i as u8; 1 << 20]);
            for _ in 0..mib {
                stream.send(chunk.clone()).await?;
            }
            stream.finish()?;
            // Wait for the receiver to finish its side too.
            while stream.recv().await?.is_some() {}
            Ok::<_, dwcp_core::StreamError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let s = start.elapsed().as_secs_f64();
    let stats = conn.stats();
    println!(
        "sent {} MiB in {s:.2} s ({:.1} MB/s); transport RTT {:?}, loss {:.4}%",
        4 * mib,
        ((4 * mib) << 20) as f64 / s / 1e6,
        stats.transport.rtt,
        stats.transport.loss_rate * 100.0
    );
    conn.goaway("done");
    let _ = conn.closed().await;
    Ok(())
}
