//! A UDP relay with an emulated link in each direction.
//!
//! Clients send to [`Relay::local_addr`]; the relay forwards each client's
//! datagrams to the upstream address from a socket of its own (so the server
//! sees one address per client) and sends the replies back. Every datagram
//! passes through the [`Shaper`] of its direction, which both directions of
//! all clients share, as they would share a real link.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Decision, LinkProfile, Shaper, ShaperStats};

/// Clients a relay serves at once; datagrams from more are dropped.
const MAX_CLIENTS: usize = 64;
/// Datagrams in flight (queued or propagating) per direction; beyond this
/// they are dropped as by a full queue.
const MAX_IN_FLIGHT: usize = 65_536;
/// Socket buffers requested from the kernel.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// The link of one direction, shared by the receiving loops.
type SharedShaper = Arc<Mutex<Shaper>>;

fn lock(s: &SharedShaper) -> MutexGuard<'_, Shaper> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    forward: SharedShaper,
    backward: SharedShaper,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: the heap pops the earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps these at rmem_max/wmem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Sends datagrams when their time comes.
fn spawn_delivery(mut rx: mpsc::Receiver<Pending>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
        loop {
            let next = heap.peek().map(|p| p.at);
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => heap.push(p),
                    None if heap.is_empty() => return,
                    None => {
                        while let Some(p) = heap.pop() {
                            tokio::time::sleep_until(p.at).await;
                            send(&p).await;
                        }
                        return;
                    }
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|p| p.at <= now) {
                        if let Some(p) = heap.pop() {
                            send(&p).await;
                        }
                    }
                }
            }
        }
    })
}

async fn send(p: &Pending) {
    // A datagram the kernel refuses is a datagram lost, as on a real link.
    let _ = match p.to {
        Some(to) => p.socket.send_to(&p.data, to).await,
        None => p.socket.send(&p.data).await,
    };
}

/// Runs one datagram through `shaper` and queues it for delivery.
fn schedule(
    shaper: &SharedShaper,
    origin: Instant,
    seq: &mut u64,
    tx: &mpsc::Sender<Pending>,
    data: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
) {
    let now = Instant::now();
    let decision = lock(shaper).offer(now - origin, data.len());
    if let Decision::Deliver(after) = decision {
        *seq += 1;
        let p = Pending {
            at: now + after,
            seq: *seq,
            data,
            socket,
            to,
        };
        // Full: more in flight than any real path holds; drop it.
        let _ = tx.try_send(p);
    }
}

impl Relay {
    /// Starts a relay listening on `listen` (port 0 picks one) and forwarding
    /// to `upstream`, with `forward` applied to client→upstream datagrams and
    /// `backward` to the replies.
    ///
    /// # Errors
    /// A profile is invalid, or a socket cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        forward: LinkProfile,
        backward: LinkProfile,
    ) -> io::Result<Relay> {
        for p in [&forward, &backward] {
            p.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let sock = Arc::new(udp_socket(listen)?);
        let addr = sock.local_addr()?;
        let forward = Arc::new(Mutex::new(Shaper::new(forward)));
        let backward = Arc::new(Mutex::new(Shaper::new(backward)));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let origin = Instant::now();
        let (fwd_tx, fwd_rx) = mpsc::channel(MAX_IN_FLIGHT);
        let (back_tx, back_rx) = mpsc::channel(MAX_IN_FLIGHT);
        let main = {
            let (sock, forward, backward, tasks) = (
                sock.clone(),
                forward.clone(),
                backward.clone(),
                tasks.clone(),
            );
            let unspecified: SocketAddr = if upstream.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let local = if upstream.ip().is_loopback() {
                SocketAddr::new(upstream.ip(), 0)
            } else {
                unspecified
            };
            tokio::spawn(async move {
                let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65_536];
                let mut seq = 0;
                loop {
                    let Ok((len, from)) = sock.recv_from(&mut buf).await else {
                        return;
                    };
                    let up = match clients.get(&from) {
                        Some(up) => up.clone(),
                        None if clients.len() >= MAX_CLIENTS => continue,
                        None => {
                            let Ok(up) = udp_socket(local) else { continue };
                            if up.connect(upstream).await.is_err() {
                                continue;
                            }
                            let up = Arc::new(up);
                            clients.insert(from, up.clone());
                            let t = spawn_replies(
                                up.clone(),
                                sock.clone(),
                                from,
                                backward.clone(),
                                origin,
                                back_tx.clone(),
                            );
                            tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
                            up
                        }
                    };
                    let data = buf[..len].to_vec();
                    schedule(&forward, origin, &mut seq, &fwd_tx, data, up, None);
                }
            })
        };
        let delivery = [spawn_delivery(fwd_rx), spawn_delivery(back_rx)];
        {
            let mut t = tasks.lock().unwrap_or_else(|p| p.into_inner());
            t.push(main);
            t.extend(delivery);
        }
        Ok(Relay {
            addr,
            forward,
            backward,
            tasks,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters of the forward (client→upstream) and backward directions.
    pub fn stats(&self) -> (ShaperStats, ShaperStats) {
        (lock(&self.forward).stats(), lock(&self.backward).stats())
    }

    /// Changes the rate of both directions from now on.
    pub fn set_rate(&self, rate_bps: Option<u64>) {
        lock(&self.forward).set_rate(rate_bps);
        lock(&self.backward).set_rate(rate_bps);
    }

    /// Drops the next `n` datagrams of at least `min_len` bytes in the
    /// forward (client→upstream) direction, or the backward one.
    pub fn drop_next(&self, forward: bool, n: u32, min_len: usize) {
        let shaper = if forward {
            &self.forward
        } else {
            &self.backward
        };
        lock(shaper).drop_next(n, min_len);
    }

    /// The profiles of the forward and backward directions.
    pub fn profiles(&self) -> (LinkProfile, LinkProfile) {
        (
            lock(&self.forward).profile().clone(),
            lock(&self.backward).profile().clone(),
        )
    }
}

fn spawn_replies(
    up: Arc<UdpSocket>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    shaper: SharedShaper,
    origin: Instant,
    tx: mpsc::Sender<Pending>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut seq = 0;
        loop {
            match up.recv(&mut buf).await {
                Ok(len) => {
                    let data = buf[..len].to_vec();
                    schedule(
                        &shaper,
                        origin,
                        &mut seq,
                        &tx,
                        data,
                        sock.clone(),
                        Some(client),
                    );
                }
                // ICMP unreachable while the server restarts: keep going.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return,
            }
        }
    })
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_and_rate_limits_an_echo() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server_addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let profile = LinkProfile {
            delay: Duration::from_millis(25),
            rate_bps: Some(10_000_000),
            ..LinkProfile::default()
        };
        let relay = Relay::start(
            "127.0.0.1:0".parse().expect("addr"),
            server_addr,
            profile.clone(),
            profile,
        )
        .await
        .expect("relay");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.connect(relay.local_addr()).await.expect("connect");
        let start = Instant::now();
        client.send(&[7u8; 100]).await.expect("send");
        let mut buf = [0u8; 2048];
        let n = client.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], &[7u8; 100]);
        let rtt = start.elapsed();
        assert!(
            rtt >= Duration::from_millis(50),
            "RTT {rtt:?} below 2 x 25 ms"
        );

        // 200 datagrams of 1250 bytes at 10 Mbit/s take at least 200 ms.
        let start = Instant::now();
        for _ in 0..200 {
            client.send(&[1u8; 1250]).await.expect("send");
        }
        for _ in 0..200 {
            client.recv(&mut buf).await.expect("recv");
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "took {took:?}");
        let (fwd, back) = relay.stats();
        assert_eq!(fwd.delivered, 201);
        assert_eq!(back.delivered, 201);
    }
}
