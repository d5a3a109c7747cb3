//! The admin HTTP server: metrics, health, readiness, status, and drain.
//!
//! It runs on its own thread with its own single-threaded runtime, so a busy
//! data plane never delays a probe and a flood of admin requests never takes
//! a worker from the data plane.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::daemon::State;
use crate::peers::PeerState;
use crate::telemetry;

/// A running admin server.
#[derive(Debug)]
pub struct Handle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

type Shared = Arc<State>;

/// Bounds of the admin server against slow or numerous clients.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Connections served at once from one source address; more are closed
    /// at once. Keeps one slow or hostile client from starving probes and
    /// scrapes that come from other addresses.
    pub max_connections_per_source: usize,
    /// Time a client has to send a request's headers, counted from the
    /// connection's start or the previous response.
    pub header_timeout: Duration,
    /// Longest a connection may stay open, whatever it does.
    pub max_connection_age: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 256,
            max_connections_per_source: 16,
            header_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(300),
        }
    }
}

/// Binds `addr` and serves on a dedicated thread.
///
/// # Errors
/// The address cannot be bound, or the thread cannot start.
pub fn start(state: Shared, addr: SocketAddr, limits: AdminLimits) -> std::io::Result<Handle> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("dwcp-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin listener");
                        return;
                    }
                };
                tokio::select! {
                    _ = serve(listener, router(state), limits) => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime ends every open admin connection.
        })?;
    Ok(Handle {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Open admin connections, in total and per source address.
#[derive(Debug, Default)]
struct Places {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// One open admin connection's place; dropping it frees the place.
#[derive(Debug)]
struct Place {
    places: Arc<Mutex<Places>>,
    source: IpAddr,
}

impl Place {
    fn take(places: &Arc<Mutex<Places>>, source: IpAddr, limits: &AdminLimits) -> Option<Place> {
        let mut p = places.lock().unwrap_or_else(|e| e.into_inner());
        let n = p.per_source.get(&source).copied().unwrap_or(0);
        if p.total >= limits.max_connections || n >= limits.max_connections_per_source {
            return None;
        }
        p.total += 1;
        p.per_source.insert(source, n + 1);
        Some(Place {
            places: places.clone(),
            source,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut p = self.places.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.per_source.remove(&self.source);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits`: a connection beyond the
/// global or per-source bound is closed at once; one whose request headers
/// take longer than `header_timeout` (slowloris), or that lives past
/// `max_connection_age`, is closed.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, limits: AdminLimits) {
    let places = Arc::new(Mutex::new(Places::default()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let mut refused = 0u64;
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(place) = Place::take(&places, from.ip(), &limits) else {
            drop(tcp);
            refused += 1;
            // One line per power of two: visible, never a flood.
            if refused.is_power_of_two() {
                tracing::warn!(%from, refused, "admin connection limit reached; closing new connections");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(from))));
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        let age = limits.max_connection_age;
        tokio::spawn(async move {
            let _place = place;
            // Errors here are the client's (timeouts, resets, bad requests).
            let _ = tokio::time::timeout(age, conn).await;
        });
    }
}

/// The routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/health/detailed", get(health_detailed))
        .route("/api/v1/dwcp/status", get(status))
        .route("/api/v1/dwcp/streams", get(streams))
        .route("/api/v1/info", get(info))
        .route("/api/v1/dwcp/drain", post(drain))
        .with_state(state)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "healthy", "timestamp": now() }))
}

async fn ready(AxState(s): AxState<Shared>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        let why = if s.is_draining() {
            "draining"
        } else {
            "starting"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": why })),
        )
            .into_response()
    }
}

async fn health_detailed(AxState(s): AxState<Shared>) -> Json<Value> {
    let mut peers = serde_json::Map::new();
    let mut degraded = false;
    for (name, p) in &s.peers {
        let st = p.status();
        if p.config.address.is_some() && st.state != PeerState::Connected {
            degraded = true;
        }
        peers.insert(name.clone(), json!(st.state.as_str()));
    }
    let transport = if s.endpoints.is_empty() {
        "unhealthy"
    } else {
        "healthy"
    };
    let status = if s.is_draining() {
        "draining"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    Json(json!({
        "status": status,
        "timestamp": now(),
        "components": {
            "transport": transport,
            "peers": peers,
            // Answering at all is what the admin server's health is.
            "admin": "healthy",
        }
    }))
}

/// Sums over live connections of what `/api/v1/dwcp/status` reports.
async fn status(AxState(s): AxState<Shared>) -> Json<Value> {
    let mut active = 0u64;
    let mut allocated = 0.0;
    let mut capacity = 0.0;
    let (mut raw, mut wire) = (0u64, 0u64);
    let mut peers = serde_json::Map::new();
    for (name, p) in &s.peers {
        let st = p.status();
        let mut entry = json!({
            "state": st.state.as_str(),
            "since_secs": st.since.elapsed().as_secs(),
            "transport": st.transport,
            "reconnects": st.reconnects,
            "last_error": st.last_error,
        });
        if let Some(c) = p.connection() {
            let stats = c.stats();
            active += stats.core.active_streams;
            let alloc: f64 = stats.allocation.iter().map(|a| a.allocated).sum();
            allocated += alloc;
            let cap = stats.link.bottleneck_bw.unwrap_or(0.0);
            capacity += cap;
            raw += stats.core.data_raw_sent;
            wire += stats.core.data_wire_sent;
            let rtt = stats.transport.rtt.or(stats.core.smoothed_rtt);
            if let Value::Object(m) = &mut entry {
                m.insert("active_streams".into(), json!(stats.core.active_streams));
                m.insert(
                    "rtt_ms".into(),
                    json!(rtt.map(|r| r.as_secs_f64() * 1000.0)),
                );
                m.insert("loss_rate".into(), json!(stats.transport.loss_rate));
                m.insert("bandwidth_allocated".into(), json!(alloc));
                m.insert("bandwidth_capacity".into(), json!(cap));
                m.insert("compression_ratio".into(), json!(stats.compression_ratio()));
                let classes: serde_json::Map<String, Value> = stats
                    .compression
                    .iter()
                    .map(|(id, c)| {
                        let cpu: serde_json::Map<String, Value> = c
                            .cpu_by_codec
                            .iter()
                            .map(|(k, d)| (k.clone(), json!(d.as_secs_f64())))
                            .collect();
                        (
                            s.class_name(*id),
                            json!({
                                "codec": c.current,
                                "ratio": c.raw as f64 / c.wire.max(1) as f64,
                                "cpu_seconds": cpu,
                            }),
                        )
                    })
                    .collect();
                m.insert("compression".into(), Value::Object(classes));
                m.insert("mode".into(), json!(stats.link.mode));
                m.insert(
                    "remote_addr".into(),
                    json!(c.remote_addr().map(|a| a.to_string())),
                );
            }
        }
        peers.insert(name.clone(), entry);
    }
    let tunnels: Vec<Value> = s
        .tunnels
        .iter()
        .map(|(t, addr)| {
            json!({
                "name": t.name, "listen": addr.to_string(), "peer": t.peer.name(),
                "service": t.service, "class": t.class.1,
            })
        })
        .collect();
    let status = if s.is_draining() {
        "draining"
    } else {
        "active"
    };
    Json(json!({
        "status": status,
        "active_streams": active,
        "tunnelled_connections": s.registry.len(),
        "bandwidth_allocated": allocated,
        "bandwidth_capacity": capacity,
        "compression_ratio": if wire == 0 { 1.0 } else { raw as f64 / wire as f64 },
        "uptime_secs": s.started.elapsed().as_secs(),
        "peers": peers,
        "tunnels": tunnels,
        "listeners": s.listeners.iter().map(|(k, v)| (k.to_string(), json!(v.to_string()))).collect::<serde_json::Map<_, _>>(),
    }))
}

/// Query of `/api/v1/dwcp/streams`.
#[derive(Debug, serde::Deserialize)]
struct Page {
    #[serde(default = "one")]
    page: usize,
    #[serde(default = "hundred")]
    per_page: usize,
}

fn one() -> usize {
    1
}

fn hundred() -> usize {
    100
}

async fn streams(AxState(s): AxState<Shared>, Query(q): Query<Page>) -> Response {
    if q.page == 0 || q.per_page == 0 || q.per_page > 1000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "page must be >= 1 and per_page from 1 to 1000" })),
        )
            .into_response();
    }
    let offset = (q.page - 1).saturating_mul(q.per_page);
    let (entries, total) = s.registry.page(offset, q.per_page);
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "stream_id": e.stream_id,
                "peer": e.peer,
                "name": e.name,
                "direction": e.direction,
                "class": e.class,
                "age_secs": e.started.elapsed().as_secs_f64(),
                "bytes_sent": e.sent.load(std::sync::atomic::Ordering::Relaxed),
                "bytes_received": e.received.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .collect();
    Json(json!({
        "page": q.page,
        "per_page": q.per_page,
        "total": total,
        "streams": rows,
    }))
    .into_response()
}

async fn info(AxState(s): AxState<Shared>) -> Json<Value> {
    Json(json!({
        "name": "dwcp-daemon",
        "version": env!("CARGO_PKG_VERSION"),
        "node": s.config.node.name,
        "protocol_version": dwcp_core::PROTOCOL_VERSION,
        "build": {
            "target": crate::build::TARGET,
            "profile": crate::build::PROFILE,
            "git_commit": crate::build::GIT_COMMIT,
        },
        "features": {
            "transports": ["quic", "tcp"],
            "codecs": ["lz4", "zstd"],
            "compression": "adaptive",
            "tls": "rustls (ring), TLS 1.3, mutual",
        },
    }))
}

/// Loopback callers, or a matching bearer token.
fn authorised(token: Option<&str>, from: SocketAddr, headers: &HeaderMap) -> bool {
    if from.ip().is_loopback() {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn drain(
    AxState(s): AxState<Shared>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !authorised(s.admin_token.as_deref(), from, &headers) {
        tracing::warn!(%from, "refused an unauthorised drain request");
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "mutating endpoints need a loopback caller or the admin bearer token" })),
        )
            .into_response();
    }
    s.begin_drain("drain requested through the admin API");
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "draining", "open_streams": s.registry.len() })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_endpoints_need_loopback_or_the_token() {
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let none = HeaderMap::new();
        let mut good = HeaderMap::new();
        good.insert(
            header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("header"),
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            header::AUTHORIZATION,
            "Bearer s3creT".parse().expect("header"),
        );
        assert!(authorised(None, local, &none));
        assert!(
            !authorised(None, remote, &good),
            "no token configured: remote refused"
        );
        assert!(authorised(Some("s3cret"), remote, &good));
        assert!(!authorised(Some("s3cret"), remote, &bad));
        assert!(!authorised(Some("s3cret"), remote, &none));
    }
}
