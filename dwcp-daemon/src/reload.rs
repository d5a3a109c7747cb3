//! Certificate rotation without restart: the TLS files are read again every
//! `tls.reload_secs`; when their content changed, every endpoint gets the new
//! identity and CA for new connections (established ones go on).
//!
//! Paths are opened anew on every check, so a mounted Kubernetes secret,
//! updated by swapping a `..data` symlink, is followed. A file set that does
//! not load leaves the old configuration in force and is logged once per
//! distinct content.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dwcp_core::tls::TlsConfig;

use crate::daemon::State;

/// A hash of the three files' contents; `None` if one cannot be read.
fn fingerprint(paths: &[PathBuf; 3]) -> Option<u64> {
    let mut h = DefaultHasher::new();
    for p in paths {
        std::fs::read(p).ok()?.hash(&mut h);
    }
    Some(h.finish())
}

/// Watches `cert`, `key` and `ca` until aborted.
pub async fn watch(state: Arc<State>, paths: [PathBuf; 3], every: Duration) {
    let mut last = fingerprint(&paths);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = fingerprint(&paths);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let [cert, key, ca] = &paths;
        match TlsConfig::from_pem_files(cert, key, ca) {
            Ok(tls) => {
                let mut ok = true;
                for (kind, ep) in &state.endpoints {
                    if let Err(e) = ep.set_tls(tls.clone()) {
                        ok = false;
                        tracing::warn!(transport = kind, error = %e, "new TLS files rejected; the old ones stay in force");
                    }
                }
                if ok {
                    crate::telemetry::record_cert_expiry(&tls.identity);
                    tracing::info!(
                        "TLS files changed: new connections use the new certificate and CA"
                    );
                }
                metrics::counter!("dwcp_tls_reloads_total", "result" => if ok { "ok" } else { "error" })
                    .increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS files changed but do not load; the old ones stay in force");
                metrics::counter!("dwcp_tls_reloads_total", "result" => "error").increment(1);
            }
        }
    }
}
