//! Admission of incoming handshakes: a global bound and a per-source bound.
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bounds on incoming handshakes (TLS plus DWCP) in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in progress at once, from all sources (default 256); more
    /// are refused.
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

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The global bound.
    Total,
    /// The per-source bound.
    Source,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    peak: usize,
    per_source: HashMap<IpAddr, usize>,
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

    /// Admits a handshake from `ip` if both bounds allow it.
    pub(crate) fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Over> {
        let source = source_key(ip);
        let mut g = self.lock();
        if g.total >= self.limits.max_pending {
            return Err(Over::Total);
        }
        let n = g.per_source.get(&source).copied().unwrap_or(0);
        if n >= self.limits.max_pending_per_source {
            return Err(Over::Source);
        }
        g.per_source.insert(source, n + 1);
        g.total += 1;
        g.peak = g.peak.max(g.total);
        Ok(Permit {
            admission: self.clone(),
            source,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.admission.lock();
        g.total = g.total.saturating_sub(1);
        if let Some(n) = g.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.per_source.remove(&self.source);
            }
        }
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
