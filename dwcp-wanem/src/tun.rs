//! A delay line for kernel traffic: two TUN devices joined by an emulated
//! link, one in each of two network namespaces.
//!
//! The UDP relay ([`crate::udp::Relay`]) can only shape datagrams sent to it.
//! Kernel TCP (DWCP's TCP lanes, raw TLS TCP, yamux) needs the link below the
//! IP layer: every IP packet one namespace sends to the other is read from
//! its TUN device, passed through the [`Shaper`] of its direction (rate,
//! delay, jitter, loss, queue; seeded), and written into the other device
//! when its time comes. This kernel has no netem qdisc; TUN works.
//!
//! [`NetnsPair`] builds the usual set-up (two namespaces, a point-to-point
//! address pair, the line between them) and runs code inside either
//! namespace. It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip`
//! tool; [`NetnsPair::unavailable`] says why it cannot run here.
//!
//! Three system calls have no safe wrapper in the crates used here (the
//! TUNSETIFF ioctl, geteuid, setns); each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Decision, LinkProfile, Shaper, ShaperStats};

/// Largest packet read from a device (the devices' MTU is below it).
const MAX_PACKET: usize = 65_536;
/// Packets queued or propagating per direction; more are dropped, as by a
/// full queue (the shaper's queue limit normally drops first).
const MAX_IN_FLIGHT: usize = 65_536;

const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Opens TUN device `name` (created if absent) without packet information.
fn open_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() > 15 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TUN device name has 1 to 15 bytes",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out (40
    // bytes: name, flags, padding); the pointer is valid for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

struct Pending {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
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

/// Packets of one direction waiting for their delivery time.
#[derive(Default)]
struct Queue {
    heap: Mutex<BinaryHeap<Pending>>,
    ready: Condvar,
}

/// One direction: the shaper and its queue.
struct Direction {
    shaper: Mutex<Shaper>,
    queue: Queue,
    /// While set, every packet is dropped (a partition).
    cut: AtomicBool,
    /// Packets dropped by a partition.
    cut_drops: std::sync::atomic::AtomicU64,
}

/// A running delay line between two TUN devices. Dropping it stops it (the
/// devices disappear with their file descriptors).
pub struct TunLine {
    stop: Arc<AtomicBool>,
    dirs: [Arc<Direction>; 2],
    threads: Vec<JoinHandle<()>>,
    names: [String; 2],
}

impl std::fmt::Debug for TunLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunLine")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl TunLine {
    /// Creates TUN devices `a` and `b` and joins them: packets read from `a`
    /// go through `a_to_b` and are written into `b`, and the other way round.
    ///
    /// # Errors
    /// A device cannot be created (no `/dev/net/tun`, no CAP_NET_ADMIN), or a
    /// profile is invalid.
    pub fn start(a: &str, b: &str, a_to_b: LinkProfile, b_to_a: LinkProfile) -> io::Result<Self> {
        for p in [&a_to_b, &b_to_a] {
            p.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let (fa, fb) = (open_tun(a)?, open_tun(b)?);
        let stop = Arc::new(AtomicBool::new(false));
        let dir = |p: LinkProfile| {
            Arc::new(Direction {
                shaper: Mutex::new(Shaper::new(p)),
                queue: Queue::default(),
                cut: AtomicBool::new(false),
                cut_drops: std::sync::atomic::AtomicU64::new(0),
            })
        };
        let dirs = [dir(a_to_b), dir(b_to_a)];
        let origin = Instant::now();
        let mut threads = Vec::new();
        for (from, to, d) in [
            (fa.try_clone()?, fb.try_clone()?, dirs[0].clone()),
            (fb, fa, dirs[1].clone()),
        ] {
            let (s1, s2) = (stop.clone(), stop.clone());
            let d2 = d.clone();
            threads.push(std::thread::spawn(move || read_loop(from, &d, origin, &s1)));
            threads.push(std::thread::spawn(move || write_loop(to, &d2, &s2)));
        }
        Ok(TunLine {
            stop,
            dirs,
            threads,
            names: [a.to_string(), b.to_string()],
        })
    }

    /// Counters of the `a → b` and `b → a` directions.
    pub fn stats(&self) -> (ShaperStats, ShaperStats) {
        let s = |d: &Direction| d.shaper.lock().unwrap_or_else(|p| p.into_inner()).stats();
        (s(&self.dirs[0]), s(&self.dirs[1]))
    }

    /// The device names `a` and `b`.
    pub fn names(&self) -> (&str, &str) {
        (&self.names[0], &self.names[1])
    }

    /// Cuts the line both ways (`true`: every packet, including those
    /// already propagating, is dropped) or heals it (`false`).
    pub fn partition(&self, cut: bool) {
        for d in &self.dirs {
            d.cut.store(cut, Ordering::Relaxed);
            if cut {
                let mut heap = d.queue.heap.lock().unwrap_or_else(|p| p.into_inner());
                let n = heap.len() as u64;
                heap.clear();
                d.cut_drops.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Packets dropped by partitions (`a → b`, `b → a`).
    pub fn partition_drops(&self) -> (u64, u64) {
        let n = |d: &Direction| d.cut_drops.load(Ordering::Relaxed);
        (n(&self.dirs[0]), n(&self.dirs[1]))
    }
}

impl Drop for TunLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for d in &self.dirs {
            d.queue.ready.notify_all();
        }
        // Readers block in read(2) until a packet comes or the device goes;
        // they hold only their own descriptors, so they are left to end
        // with the process or the device. Writers end now.
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn read_loop(mut dev: File, d: &Direction, origin: Instant, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = match dev.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if d.cut.load(Ordering::Relaxed) {
            d.cut_drops.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = Instant::now();
        let decision = d
            .shaper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offer(now - origin, n);
        if let Decision::Deliver(after) = decision {
            seq += 1;
            let mut heap = d.queue.heap.lock().unwrap_or_else(|p| p.into_inner());
            if heap.len() < MAX_IN_FLIGHT {
                heap.push(Pending {
                    at: now + after,
                    seq,
                    data: buf[..n].to_vec(),
                });
                drop(heap);
                d.queue.ready.notify_one();
            }
        }
    }
}

fn write_loop(mut dev: File, d: &Direction, stop: &AtomicBool) {
    let mut heap = d.queue.heap.lock().unwrap_or_else(|p| p.into_inner());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match heap.peek().map(|p| p.at) {
            Some(at) if at <= now => {
                if let Some(p) = heap.pop() {
                    drop(heap);
                    if d.cut.load(Ordering::Relaxed) {
                        d.cut_drops.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // A packet the kernel refuses is a packet lost.
                        let _ = dev.write(&p.data);
                    }
                    heap = d.queue.heap.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            Some(at) => {
                heap = d
                    .queue
                    .ready
                    .wait_timeout(heap, at - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            None => {
                heap = d
                    .queue
                    .ready
                    .wait_timeout(heap, Duration::from_millis(100))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }
}

/// Two network namespaces joined by a [`TunLine`]: namespace `a` has address
/// [`NetnsPair::A_ADDR`], `b` has [`NetnsPair::B_ADDR`]. Removed when
/// dropped.
#[derive(Debug)]
pub struct NetnsPair {
    names: [String; 2],
    line: Option<TunLine>,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetnsPair {
    /// Address of namespace `a`.
    pub const A_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 1);
    /// Address of namespace `b`.
    pub const B_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 0, 2);

    /// Why namespaces cannot be built here, if they cannot: not root, no
    /// `/dev/net/tun`, or no `ip` tool.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("needs root (network namespaces and TUN devices)".into());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("no /dev/net/tun".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Some("no `ip` tool (iproute2)".into());
        }
        None
    }

    /// Creates namespaces `<tag>a` and `<tag>b` (`tag` at most 10 bytes)
    /// joined by a delay line with the given profiles.
    ///
    /// # Errors
    /// Anything [`NetnsPair::unavailable`] reports, or an `ip` command fails.
    pub fn new(tag: &str, a_to_b: LinkProfile, b_to_a: LinkProfile) -> io::Result<Self> {
        if let Some(why) = Self::unavailable() {
            return Err(io::Error::other(why));
        }
        let names = [format!("{tag}a"), format!("{tag}b")];
        let devs = [format!("{tag}ta"), format!("{tag}tb")];
        let mut pair = NetnsPair {
            names: names.clone(),
            line: None,
        };
        for n in &names {
            let _ = ip(&["netns", "del", n]);
            ip(&["netns", "add", n])?;
        }
        pair.line = Some(TunLine::start(&devs[0], &devs[1], a_to_b, b_to_a)?);
        let addrs = [(Self::A_ADDR, Self::B_ADDR), (Self::B_ADDR, Self::A_ADDR)];
        for ((n, dev), (local, peer)) in names.iter().zip(&devs).zip(addrs) {
            ip(&["link", "set", dev, "netns", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            let (l, p) = (format!("{local}/32"), format!("{peer}/32"));
            ip(&["-n", n, "addr", "add", &l, "peer", &p, "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "mtu", "1500", "up"])?;
        }
        Ok(pair)
    }

    /// Names of namespaces `a` and `b` (for `ip netns exec`).
    pub fn names(&self) -> (&str, &str) {
        (&self.names[0], &self.names[1])
    }

    /// The delay line's counters (`a → b`, `b → a`).
    pub fn stats(&self) -> (ShaperStats, ShaperStats) {
        self.line.as_ref().map(TunLine::stats).unwrap_or_default()
    }

    /// Cuts the line between the namespaces both ways, or heals it
    /// ([`TunLine::partition`]).
    pub fn partition(&self, cut: bool) {
        if let Some(l) = &self.line {
            l.partition(cut);
        }
    }

    /// Packets dropped by partitions (`a → b`, `b → a`).
    pub fn partition_drops(&self) -> (u64, u64) {
        self.line
            .as_ref()
            .map(TunLine::partition_drops)
            .unwrap_or_default()
    }

    /// Moves the calling thread into namespace `a` (`in_b` false) or `b`.
    /// Only socket creation looks at a thread's namespace: a socket made
    /// there stays there whichever thread uses it later, so one thread (a
    /// current-thread async runtime) can create a server in `b`, a client in
    /// `a`, and drive both.
    ///
    /// # Errors
    /// The namespace cannot be entered.
    pub fn enter(&self, in_b: bool) -> io::Result<()> {
        let ns = File::open(format!("/run/netns/{}", self.names[usize::from(in_b)]))?;
        setns(&ns)
    }

    /// Runs `f` on a new thread inside namespace `a` (`in_b` false) or `b`;
    /// sockets it creates belong to that namespace.
    ///
    /// # Errors
    /// The namespace cannot be entered.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        in_b: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<JoinHandle<T>> {
        let path = format!("/run/netns/{}", self.names[usize::from(in_b)]);
        let ns = File::open(&path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let entered = setns(&ns);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            // The caller gets the error and never joins this thread; `f`
            // must not run outside the namespace.
            assert!(ok, "could not enter the network namespace");
            f()
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("namespace thread ended")),
        }
    }
}

/// Moves the calling thread into the network namespace `ns` refers to.
fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace file descriptor affects only the calling
    // thread's network namespace; the descriptor is valid for the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        drop(self.line.take());
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}
