//! The connection handle.

use std::sync::Arc;
use std::task::Poll;

use crate::error::{ConnectionError, ErrorCode, OpenError};
use crate::net::driver::{Phase, Shared};
use crate::net::stream::{Stream, StreamOptions};
use crate::net::transport::TransportStats;
use crate::ConnectionStats;

/// Keeps the connection open while any handle (connection or stream) lives;
/// the last one to go starts a graceful drain.
#[derive(Debug)]
pub(crate) struct ConnRef {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        self.shared
            .with_core(|inner| inner.core.goaway("all handles dropped"));
    }
}

/// A DWCP connection. Cloning gives another handle to the same connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) conn: Arc<ConnRef>,
}

/// Statistics of a connection: the protocol core's and the transport's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Counters of the protocol core (bytes, frames, streams, RTT from PINGs).
    pub core: ConnectionStats,
    /// RTT and loss as the transport measures them.
    pub transport: TransportStats,
    /// Compression per traffic class (sending side).
    pub compression: std::collections::BTreeMap<u8, crate::net::driver::ClassCompression>,
    /// Link estimate of the sending direction.
    pub link: LinkSummary,
    /// Allocation per traffic class against the link estimate (or configured cap).
    pub allocation: Vec<crate::scheduler::ClassReport>,
}

/// The link estimate, as figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSummary {
    /// Bottleneck bandwidth in bytes/s.
    pub bottleneck_bw: Option<f64>,
    /// Minimum RTT.
    pub min_rtt: Option<std::time::Duration>,
    /// Smoothed RTT.
    pub srtt: Option<std::time::Duration>,
    /// Loss rate reported by the transport.
    pub loss_rate: f64,
    /// `datacenter` or `wan`.
    pub mode: &'static str,
}

impl Stats {
    /// Raw bytes over wire bytes of DATA sent (1.0 without compression).
    pub fn compression_ratio(&self) -> f64 {
        if self.core.data_wire_sent == 0 {
            1.0
        } else {
            self.core.data_raw_sent as f64 / self.core.data_wire_sent as f64
        }
    }
}

/// Two handles are equal when they refer to the same connection.
impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }
}

impl Eq for Connection {}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>) -> Connection {
        Connection {
            conn: Arc::new(ConnRef { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.conn.shared
    }

    /// Waits for the handshake. Used by connect and accept.
    pub(crate) async fn established(&self) -> Result<(), ConnectionError> {
        let mut rx = self.shared().phase.clone();
        loop {
            match &*rx.borrow_and_update() {
                Phase::Established => return Ok(()),
                Phase::Closed(e) => {
                    return Err(e.clone().unwrap_or(ConnectionError::LocallyClosed))
                }
                Phase::Handshaking => {}
            }
            if rx.changed().await.is_err() {
                return Err(ConnectionError::Transport("driver stopped".into()));
            }
        }
    }

    /// Opens a stream. Does not wait: the OPEN frame is queued at once and data
    /// may follow immediately.
    ///
    /// # Errors
    /// The peer's stream limit is reached, the connection is draining or closed,
    /// or the route is longer than 255 bytes.
    pub fn open_stream(&self, options: StreamOptions) -> Result<Stream, OpenError> {
        let params = options.to_params();
        // The handle's route and class are the ones asked for here.
        let (route, class) = (params.route.clone(), params.class);
        // Not `with_core`: a refused open returns before dispatching.
        let mut inner = self.shared().lock();
        let id = inner.core.open_stream(params)?;
        inner.dispatch();
        drop(inner);
        self.shared().wake_driver.notify_one();
        Ok(Stream::new(
            id,
            self.conn.clone(),
            options.compression,
            route,
            class,
        ))
    }

    /// Waits for the peer to open a stream. Returns `None` once the connection
    /// is closed or draining and no opened stream is left to accept.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is only taken from the queue when it is returned.
    pub async fn accept_stream(&self) -> Option<Stream> {
        std::future::poll_fn(|cx| {
            let mut inner = self.shared().lock();
            if let Some(opened) = inner.accept.pop_front() {
                return Poll::Ready(Some(opened));
            }
            // Ended by either side, failed, or draining: no stream will come.
            if inner.core.is_closed() || inner.core.is_draining() || inner.core.error().is_some() {
                return Poll::Ready(None);
            }
            inner.register_accept(cx.waker());
            Poll::Pending
        })
        .await
        .map(|o| {
            let policy = if o.no_compression {
                crate::net::Compression::Off
            } else {
                crate::net::Compression::Adaptive
            };
            Stream::new(o.id, self.conn.clone(), policy, o.route, o.class)
        })
    }

    /// Statistics snapshot.
    pub fn stats(&self) -> Stats {
        let (core, link, allocation) = {
            let inner = self.shared().lock();
            let e = inner.core.link_estimate();
            let link = LinkSummary {
                bottleneck_bw: e.bottleneck_bw(),
                min_rtt: e.min_rtt(),
                srtt: e.srtt(),
                loss_rate: e.loss_rate(),
                mode: match e.mode() {
                    crate::estimator::LinkMode::Datacenter => "datacenter",
                    crate::estimator::LinkMode::Wan => "wan",
                },
            };
            let allocation = inner.core.allocation(e.bottleneck_bw());
            (inner.core.stats(), link, allocation)
        };
        Stats {
            core,
            link,
            allocation,
            transport: (self.shared().stats)(),
            compression: self
                .shared()
                .compression
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// The peer's certificate identity (first DNS name of its SAN), if the
    /// transport authenticates peers. Use it for authorization decisions.
    pub fn peer_identity(&self) -> Option<&str> {
        self.shared().peer_identity.as_deref()
    }

    /// The peer's network address, if the transport has one.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared().remote_addr
    }

    /// Starts a graceful drain (GOAWAY): no new streams, open ones finish.
    pub fn goaway(&self, reason: &str) {
        self.shared().with_core(|inner| inner.core.goaway(reason));
    }

    /// Closes at once with `code`; every unfinished stream fails.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        self.shared()
            .with_core(|inner| inner.core.close(code, reason));
    }

    /// Waits until the connection has ended: `Ok` after a graceful drain.
    ///
    /// # Errors
    /// Why the connection failed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> Result<(), ConnectionError> {
        let mut rx = self.shared().phase.clone();
        loop {
            if let Phase::Closed(e) = &*rx.borrow_and_update() {
                return match e {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                };
            }
            if rx.changed().await.is_err() {
                return Err(ConnectionError::Transport("driver stopped".into()));
            }
        }
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(&*self.shared().phase.borrow(), Phase::Closed(_))
    }
}
