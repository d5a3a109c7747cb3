//! In-memory transport: two connections joined by `tokio::io::duplex` lanes,
//! with the same API as the network transports. For tests and benchmarks.

use std::time::Instant;

use crate::net::connection::Connection;
use crate::net::lanes::spawn_lanes;
use crate::net::transport::{StatsFn, TransportStats};
use crate::{Config, ConfigError, Connection as Core, Side};

/// Two connected DWCP connections over `lanes` in-memory pipes of
/// `pipe_bytes` capacity each. Must be called inside a tokio runtime.
///
/// # Errors
/// Either configuration is invalid.
pub async fn pair(
    client: Config,
    server: Config,
    lanes: usize,
    pipe_bytes: usize,
) -> Result<(Connection, Connection), crate::net::Error> {
    let now = Instant::now();
    let cc = Core::new(client, Side::Client, now)
        .map_err(|e: ConfigError| crate::net::Error::Config(e.0))?;
    let sc = Core::new(server, Side::Server, now)
        .map_err(|e: ConfigError| crate::net::Error::Config(e.0))?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..lanes.max(1) {
        let (x, y) = tokio::io::duplex(pipe_bytes);
        let (xr, xw) = tokio::io::split(x);
        let (yr, yw) = tokio::io::split(y);
        a.push((xr, xw));
        b.push((yr, yw));
    }
    let stats = |n: usize| -> StatsFn {
        Box::new(move || TransportStats {
            kind: "memory",
            lanes: n,
            ..TransportStats::default()
        })
    };
    let n = a.len();
    let c = spawn_lanes(cc, a, stats(n), None, None, None);
    let s = spawn_lanes(sc, b, stats(n), None, None, None);
    let timeout = std::time::Duration::from_secs(10);
    let c = crate::net::endpoint::establish(c, timeout).await?;
    let s = crate::net::endpoint::establish(s, timeout).await?;
    Ok((c, s))
}
