//! `dwcp-daemon health` and `dwcp-daemon drain`: HTTP requests to the local
//! admin server, for container HEALTHCHECKs, exec probes and preStop hooks in
//! images without curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Fetches `path` from `addr` and returns the status code and body.
///
/// # Errors
/// Connection failure, timeout, or a response that is not HTTP.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    request(addr, "GET", path, timeout)
}

/// Sends an empty `POST` to `path` and returns the status code and body.
///
/// # Errors
/// As [`get`].
pub fn post(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    request(addr, "POST", path, timeout)
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let mut s =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("{target}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    // The body of a probe is small; refuse to buffer more than 1 MiB.
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP response".to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
