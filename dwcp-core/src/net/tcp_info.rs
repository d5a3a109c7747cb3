//! RTT and retransmission figures from the kernel's `TCP_INFO` (Linux's
//! `struct tcp_info`).
//!
//! No safe API in socket2 exposes `TCP_INFO`, so this module holds the crate's
//! only `unsafe`: one `getsockopt` into a plain-old-data buffer.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::time::Duration;

/// The prefix of Linux's `struct tcp_info` (include/uapi/linux/tcp.h) that we read.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    delivery_bits: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
}

/// What DWCP uses of `TCP_INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Congestion window in bytes.
    pub cwnd_bytes: u64,
    /// Bytes acknowledged by the peer.
    pub bytes_acked: u64,
}

/// Reads `TCP_INFO` of a TCP socket; `None` where the platform does not
/// provide it or `sock` is not a TCP socket.
pub fn read(sock: &impl AsRawFd) -> Option<TcpInfo> {
    let mut raw = RawTcpInfo::default();
    let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: `raw` is a valid, writable repr(C) plain-old-data buffer of `len`
    // bytes; the kernel writes at most `len` bytes and updates `len`. An invalid
    // or non-TCP fd makes the call fail, which is handled.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < 104 {
        return None;
    }
    let has_segs = len as usize >= std::mem::size_of::<RawTcpInfo>();
    Some(TcpInfo {
        rtt: Duration::from_micros(raw.rtt as u64),
        total_retrans: raw.total_retrans as u64,
        segs_out: if has_segs { raw.segs_out as u64 } else { 0 },
        cwnd_bytes: raw.snd_cwnd as u64 * raw.snd_mss as u64,
        bytes_acked: if has_segs { raw.bytes_acked } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let info = super::read(&c).expect("TCP_INFO on Linux");
        assert!(info.cwnd_bytes > 0);
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(super::read(&u).is_none());
    }
}
