//! Accounting of refused and failed incoming connections: counters by
//! reason, a bounded stream of failure events for the application, and
//! rate-limited log lines (a flood must not turn into a flood of warnings).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

/// Why an incoming connection was refused or failed before it was accepted.
/// Low-cardinality by design: usable as a metric label ([`Self::as_str`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The TLS handshake failed (unknown CA, missing, expired or rejected
    /// certificate, wrong ALPN).
    Tls,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The DWCP handshake failed (version or capability mismatch, bad HELLO).
    DwcpHandshake,
    /// Refused because too many handshakes were in progress, in total or
    /// from that source ([`HandshakeLimits`](crate::net::HandshakeLimits)).
    Limit,
    /// Established, but the application was not accepting fast enough
    /// (the accept backlog was full).
    Backlog,
    /// The peer broke the transport's protocol (not a DWCP lane, bad lane
    /// preamble, QUIC transport error).
    Protocol,
    /// A socket error, including failures of the listener's own `accept`.
    Io,
    /// Refused by the application after the handshake, because the peer's
    /// identity names no known peer ([`Endpoint::refused`](crate::net::Endpoint::refused)).
    UnknownPeer,
    /// Anything else.
    Other,
}

impl RefusalReason {
    /// Every reason, in a stable order.
    pub const ALL: [RefusalReason; 9] = [
        RefusalReason::Tls,
        RefusalReason::Timeout,
        RefusalReason::DwcpHandshake,
        RefusalReason::Limit,
        RefusalReason::Backlog,
        RefusalReason::Protocol,
        RefusalReason::Io,
        RefusalReason::UnknownPeer,
        RefusalReason::Other,
    ];

    /// The label value: `tls`, `timeout`, `dwcp_handshake`, `limit`,
    /// `backlog`, `protocol`, `io`, `unknown_peer`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Tls => "tls",
            RefusalReason::Timeout => "timeout",
            RefusalReason::DwcpHandshake => "dwcp_handshake",
            RefusalReason::Limit => "limit",
            RefusalReason::Backlog => "backlog",
            RefusalReason::Protocol => "protocol",
            RefusalReason::Io => "io",
            RefusalReason::UnknownPeer => "unknown_peer",
            RefusalReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused or failed incoming connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptFailure {
    /// Why.
    pub reason: RefusalReason,
    /// The peer's address, if known.
    pub remote: Option<SocketAddr>,
    /// A human-readable description.
    pub detail: String,
}

impl std::fmt::Display for AcceptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.remote {
            Some(a) => write!(f, "{a}: {} ({})", self.detail, self.reason),
            None => write!(f, "{} ({})", self.detail, self.reason),
        }
    }
}

/// Failure events of an endpoint, from [`Endpoint::failures`](crate::net::Endpoint::failures).
///
/// The queue is bounded ([`FAILURE_QUEUE`] events): a subscriber that falls
/// behind loses the oldest events, and [`AcceptFailures::missed`] counts
/// them; the endpoint's counters ([`EndpointStats`](crate::net::EndpointStats))
/// always count every failure.
#[derive(Debug)]
pub struct AcceptFailures {
    rx: broadcast::Receiver<AcceptFailure>,
    missed: u64,
}

/// Failure events buffered per subscriber.
pub const FAILURE_QUEUE: usize = 256;

impl AcceptFailures {
    /// The next failure; `None` once the endpoint is gone.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<AcceptFailure> {
        loop {
            match self.rx.recv().await {
                Ok(f) => return Some(f),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Events dropped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// At most this many refusal lines per [`LOG_INTERVAL`]; the rest are
/// summarised in one line.
const LOG_BURST: u32 = 10;
/// The log rate-limiting interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// First [`LOG_BURST`] lines per interval, then a count per reason.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    since: Instant,
    logged: u32,
    suppressed: [u64; RefusalReason::ALL.len()],
}

impl LogLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        LogLimiter {
            since: now,
            logged: 0,
            suppressed: [0; RefusalReason::ALL.len()],
        }
    }

    /// Ends the interval if it is over: the summary of what was suppressed
    /// in it, if anything.
    pub(crate) fn roll(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.since) < LOG_INTERVAL {
            return None;
        }
        let total: u64 = self.suppressed.iter().sum();
        let summary = (total > 0).then(|| {
            let parts: Vec<String> = RefusalReason::ALL
                .iter()
                .zip(self.suppressed)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            format!(
                "suppressed {total} refusals in the last {} s: {}",
                now.duration_since(self.since).as_secs(),
                parts.join(" ")
            )
        });
        self.since = now;
        self.logged = 0;
        self.suppressed = [0; RefusalReason::ALL.len()];
        summary
    }

    /// Whether to log a refusal now (else it is counted for the summary).
    pub(crate) fn admit(&mut self, reason: RefusalReason) -> bool {
        if self.logged < LOG_BURST {
            self.logged += 1;
            true
        } else {
            self.suppressed[reason.index()] += 1;
            false
        }
    }
}

/// Counters of an endpoint, shared with its accept tasks.
#[derive(Debug)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    retries: AtomicU64,
    by_reason: [AtomicU64; RefusalReason::ALL.len()],
    last_failure: Mutex<Option<String>>,
    events: broadcast::Sender<AcceptFailure>,
    log: Mutex<LogLimiter>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            accepted: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            by_reason: Default::default(),
            last_failure: Mutex::new(None),
            events: broadcast::channel(FAILURE_QUEUE).0,
            log: Mutex::new(LogLimiter::new(Instant::now())),
        }
    }
}

impl Counters {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accepted_count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn retry_count(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Failures by reason, every reason listed.
    pub(crate) fn by_reason(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .zip(&self.by_reason)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn subscribe(&self) -> AcceptFailures {
        AcceptFailures {
            rx: self.events.subscribe(),
            missed: 0,
        }
    }

    /// Records a refused or failed incoming connection.
    pub(crate) fn failed(
        &self,
        reason: RefusalReason,
        remote: Option<SocketAddr>,
        detail: impl Into<String>,
    ) {
        let f = AcceptFailure {
            reason,
            remote,
            detail: detail.into(),
        };
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        let (summary, log) = {
            let mut l = self.log.lock().unwrap_or_else(|p| p.into_inner());
            (l.roll(Instant::now()), l.admit(reason))
        };
        if let Some(s) = summary {
            tracing::warn!("dwcp: {s}");
        }
        if log {
            tracing::warn!(%reason, remote = ?f.remote, why = %f.detail, "dwcp: incoming connection refused");
        } else {
            tracing::debug!(%reason, remote = ?f.remote, why = %f.detail, "dwcp: incoming connection refused");
        }
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.to_string());
        // No subscriber is not an error.
        let _ = self.events.send(f);
    }

    /// Logs the summary of the interval if it is over (called periodically,
    /// so a flood that stops is still summarised).
    pub(crate) fn flush_log(&self) {
        let summary = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .roll(Instant::now());
        if let Some(s) = summary {
            tracing::warn!("dwcp: {s}");
        }
    }
}

/// Flushes the log summary every interval until aborted.
pub(crate) async fn flush_loop(counters: std::sync::Arc<Counters>) {
    let mut tick = tokio::time::interval(LOG_INTERVAL);
    loop {
        tick.tick().await;
        counters.flush_log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_limited_and_summarised() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(t0);
        let logged = (0..100)
            .filter(|i| {
                l.admit(if i % 2 == 0 {
                    RefusalReason::Tls
                } else {
                    RefusalReason::Limit
                })
            })
            .count();
        assert_eq!(logged, LOG_BURST as usize);
        assert_eq!(
            l.roll(t0 + Duration::from_secs(1)),
            None,
            "interval not over"
        );
        let s = l.roll(t0 + LOG_INTERVAL).expect("summary");
        assert!(
            s.starts_with("suppressed 90 refusals in the last 10 s"),
            "{s}"
        );
        assert!(s.contains("tls=45") && s.contains("limit=45"), "{s}");
        assert!(l.admit(RefusalReason::Tls), "a new interval logs again");
        assert_eq!(l.roll(t0 + LOG_INTERVAL * 2), None, "nothing suppressed");
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let mut labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RefusalReason::ALL.len());
    }
}
