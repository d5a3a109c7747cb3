//! Admission of incoming handshakes: a global bound and a per-source bound,
//! and shedding that keeps the global bound from locking a peer out.
//!
//! A handshake in progress holds transport and TLS state on the server
//! before the peer has proved anything, so an unbounded number of them is a
//! memory amplifier: each Initial packet (or TCP connection) an attacker
//! sends would cost the server a task, a TLS session and buffers until the
//! handshake times out. [`HandshakeLimits`] bounds how many may be in
//! progress at once, in total and per source address; QUIC additionally asks
//! clients to validate their address (a Retry) once the count passes
//! [`HandshakeLimits::retry_above`], so a spoofed flood costs one stateless
//! packet each. Established connections are not counted.
//!
//! The two bounds alone let a flood from a few sources lock everyone out:
//! sources times the per-source bound at the global bound (16 sources at
//! the defaults) fill every place, and a real peer's connection is
//! refused for as long as the flood lasts (24 loopback addresses kept a
//! TCP-lanes peer out for 23.6 s of a 20 s flood). So a handshake that
//! finds the global bound full takes the place of the oldest handshake of
//! the source holding the most places, if that source holds at least two
//! more than the newcomer's (max-min fairness: a shed never makes the
//! sources' shares less even, so two sources cannot take places from each
//! other in turn) and that handshake has been in progress for
//! [`SHED_MIN_AGE`] or more. A handshake that completes does so within a
//! few round trips; a flood's are held until they time out. Without the
//! age, a storm of real peers reconnecting at once (more lanes than
//! places) would shed each other's lanes, and a lane group missing one
//! lane fails after the handshake timeout. A peer opening `n` connections
//! at once (TCP lanes) gets all of them while some source holds more than
//! `n`: against a flood from at least `max_pending / (n + 1)` sources (51
//! at the defaults with four lanes). The shed handshake ends as refused
//! ([`Permit::shed`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Bounds on incoming handshakes (TLS plus DWCP) in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in progress at once, from all sources (default 256);
    /// beyond it a newcomer takes the place of the oldest handshake of the
    /// source holding the most places, if that is at least two more than
    /// the newcomer's source holds, and is refused otherwise.
    pub max_pending: usize,
    /// Handshakes in progress at once from one source address (default 16;
    /// IPv6 sources are grouped by /64); more are refused.
    pub max_pending_per_source: usize,
    /// QUIC: above this many handshakes in progress (default 32), a client
    /// whose address is not yet validated is answered with a Retry (a
    /// stateless address-validation round trip) instead of a handshake.
    /// `0` retries every unvalidated client.
    pub retry_above: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_pending: 256,
            max_pending_per_source: 16,
            retry_above: 32,
        }
    }
}

/// How long a handshake must have been in progress before its place may be
/// shed to another source (module docs): a TLS handshake with a client
/// certificate takes one or two round trips after the TCP handshake, so a
/// second covers paths of a few hundred milliseconds.
pub(crate) const SHED_MIN_AGE: Duration = Duration::from_secs(1);

/// Why a shed handshake failed, as counted and logged.
pub(crate) const SHED: &str = "handshake shed: its place went to a source with fewer in progress";

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The global bound, with no source holding enough more places to shed one.
    Total,
    /// The per-source bound.
    Source,
}

/// Places one source holds: its handshakes in progress (the permit's shed
/// signal, which also tells the permit apart, and when it was admitted),
/// oldest first.
#[derive(Debug, Default)]
struct Source {
    held: VecDeque<(Arc<Notify>, Instant)>,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    peak: usize,
    per_source: HashMap<IpAddr, Source>,
}

/// Counts handshakes in progress against [`HandshakeLimits`].
#[derive(Debug)]
pub(crate) struct Admission {
    limits: HandshakeLimits,
    inner: Mutex<Inner>,
}

/// One admitted handshake; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    source: IpAddr,
    shed: Arc<Notify>,
}

/// The key a source is counted under: the address, or its /64 for IPv6
/// (one host usually owns a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl Admission {
    pub(crate) fn new(limits: HandshakeLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handshakes in progress.
    pub(crate) fn pending(&self) -> usize {
        self.lock().total
    }

    /// The most handshakes ever in progress at once.
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Whether an unvalidated QUIC client should get a Retry.
    pub(crate) fn under_load(&self) -> bool {
        self.pending() >= self.limits.retry_above
    }

    /// Admits a handshake from `ip` if the per-source bound allows it and
    /// the global bound has a place, or one can be shed (module docs).
    pub(crate) fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Over> {
        self.try_admit_at(ip, Instant::now())
    }

    /// [`Admission::try_admit`] at `now`.
    fn try_admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Permit, Over> {
        let source = source_key(ip);
        let mut g = self.lock();
        let n = g.per_source.get(&source).map_or(0, |s| s.held.len());
        if n >= self.limits.max_pending_per_source {
            return Err(Over::Source);
        }
        if g.total >= self.limits.max_pending && !g.shed_one(n, now) {
            return Err(Over::Total);
        }
        let shed = Arc::new(Notify::new());
        g.per_source
            .entry(source)
            .or_default()
            .held
            .push_back((shed.clone(), now));
        g.total += 1;
        g.peak = g.peak.max(g.total);
        Ok(Permit {
            admission: self.clone(),
            source,
            shed,
        })
    }
}

impl Inner {
    /// Frees the place of the oldest handshake of the source holding the
    /// most places among those holding at least two more than `newcomer`
    /// (the places the newcomer's source holds) whose oldest handshake is
    /// [`SHED_MIN_AGE`] old, and tells that handshake.
    fn shed_one(&mut self, newcomer: usize, now: Instant) -> bool {
        let Some((&key, _)) = self
            .per_source
            .iter()
            .filter(|(_, s)| {
                s.held.len() >= newcomer + 2
                    && s.held
                        .front()
                        .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= SHED_MIN_AGE)
            })
            .max_by_key(|(_, s)| s.held.len())
        else {
            return false;
        };
        let Some(source) = self.per_source.get_mut(&key) else {
            return false;
        };
        let Some((shed, _)) = source.held.pop_front() else {
            return false;
        };
        if source.held.is_empty() {
            self.per_source.remove(&key);
        }
        // Its place is free now; its permit, no longer held by the
        // source, frees nothing when dropped.
        self.total = self.total.saturating_sub(1);
        shed.notify_one();
        true
    }
}

impl Permit {
    /// Completes when this handshake's place was given to another source's
    /// (module docs); the handshake should then end as refused.
    pub(crate) async fn shed(&self) {
        self.shed.notified().await;
    }

    /// Runs `handshake` unless this place is shed first (`None`: counted
    /// as refused for [`SHED`] by the caller).
    pub(crate) async fn unless_shed<F: std::future::Future>(
        &self,
        handshake: F,
    ) -> Option<F::Output> {
        tokio::select! {
            r = handshake => Some(r),
            () = self.shed() => None,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.admission.lock();
        // A shed permit is no longer held by its source: its place was
        // freed at the shed.
        let Some(s) = g.per_source.get_mut(&self.source) else {
            return;
        };
        let held = s.held.len();
        s.held.retain(|(shed, _)| !Arc::ptr_eq(shed, &self.shed));
        let freed = held - s.held.len();
        if s.held.is_empty() {
            g.per_source.remove(&self.source);
        }
        g.total = g.total.saturating_sub(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_and_places_return() {
        let a = Admission::new(HandshakeLimits {
            max_pending: 3,
            max_pending_per_source: 2,
            retry_above: 2,
        });
        let x: IpAddr = "10.0.0.1".parse().expect("ip");
        let y: IpAddr = "10.0.0.2".parse().expect("ip");
        let p1 = a.try_admit(x).expect("first");
        let p2 = a.try_admit(x).expect("second");
        assert_eq!(a.try_admit(x).err(), Some(Over::Source));
        assert!(a.under_load());
        let p3 = a.try_admit(y).expect("other source");
        assert_eq!(a.try_admit(y).err(), Some(Over::Total));
        drop(p1);
        assert_eq!(a.pending(), 2);
        let _p4 = a.try_admit(x).expect("place returned");
        drop((p2, p3));
        assert_eq!(a.peak(), 3);
        assert_eq!(a.pending(), 1);
    }

    /// A full global bound sheds the oldest handshake of the source holding
    /// the most places to a newcomer holding at least two fewer, and never
    /// takes places back and forth between sources.
    #[test]
    fn a_full_bound_sheds_the_heaviest_sources_oldest_handshake() {
        let a = Admission::new(HandshakeLimits {
            max_pending: 6,
            max_pending_per_source: 4,
            retry_above: 2,
        });
        let x: IpAddr = "10.0.0.1".parse().expect("ip");
        let y: IpAddr = "10.0.0.2".parse().expect("ip");
        let peer: IpAddr = "10.0.0.3".parse().expect("ip");
        let t0 = Instant::now();
        let xs: Vec<Permit> = (0..4).map(|_| a.try_admit_at(x, t0).expect("x")).collect();
        let ys: Vec<Permit> = (0..2).map(|_| a.try_admit_at(y, t0).expect("y")).collect();
        // Full: x holds 4, y 2, all of them just admitted: none is shed
        // (real handshakes complete within round trips).
        let young = t0 + SHED_MIN_AGE / 2;
        assert_eq!(a.try_admit_at(peer, young).err(), Some(Over::Total));
        // A second on: the peer takes x's oldest place, then another of
        // x's (3 against 1).
        let t1 = t0 + SHED_MIN_AGE;
        let p1 = a.try_admit_at(peer, t1).expect("shed one of x's");
        assert_eq!(a.pending(), 6);
        let shed = futures_now(xs[0].shed());
        assert!(shed, "x's oldest handshake is told");
        assert!(!futures_now(xs[1].shed()), "only the oldest");
        let p2 = a.try_admit_at(peer, t1).expect("shed another of x's");
        assert!(futures_now(xs[1].shed()));
        // Now x 2, y 2, the peer 2: no source holds two more than another.
        assert_eq!(a.try_admit_at(peer, t1).err(), Some(Over::Total));
        assert_eq!(a.try_admit_at(x, t1).err(), Some(Over::Total));
        assert_eq!(a.try_admit_at(y, t1).err(), Some(Over::Total));
        assert_eq!(a.pending(), 6);
        assert_eq!(a.peak(), 6);
        // Dropping a shed permit does not free its place twice.
        let mut xs = xs.into_iter();
        drop(xs.next());
        drop(xs.next());
        assert_eq!(a.pending(), 6);
        drop((p1, p2, ys));
        assert_eq!(a.pending(), 2);
        drop(xs);
        assert_eq!(a.pending(), 0);
        let _again = a.try_admit_at(peer, t1).expect("all places back");
    }

    /// Among the sources holding enough more, one whose oldest handshake is
    /// young is passed over for one whose oldest is old enough.
    #[test]
    fn only_handshakes_in_progress_for_a_while_are_shed() {
        let a = Admission::new(HandshakeLimits {
            max_pending: 5,
            max_pending_per_source: 4,
            retry_above: 2,
        });
        let (x, y, peer): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            "10.0.0.3".parse().expect("ip"),
        );
        let t0 = Instant::now();
        let t1 = t0 + SHED_MIN_AGE;
        let ys: Vec<Permit> = (0..2).map(|_| a.try_admit_at(y, t0).expect("y")).collect();
        let xs: Vec<Permit> = (0..3).map(|_| a.try_admit_at(x, t1).expect("x")).collect();
        // x holds more, but its handshakes are young at t1; y's are not.
        let _p = a.try_admit_at(peer, t1).expect("shed one of y's");
        assert!(futures_now(ys[0].shed()));
        assert!(!futures_now(xs[0].shed()));
    }

    /// Whether `f` is ready at its first poll.
    fn futures_now(f: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            source_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }
}
