//! `dwcp-daemon`: the DWCP sidecar, as a library (the binary is a thin CLI
//! over it, and `demo` runs two daemons in one process).
//!
//! | Concern | Module |
//! |---|---|
//! | TOML configuration, overrides, validation | [`config`] |
//! | Wiring, readiness, drain | [`daemon`] |
//! | Peer connections and reconnection | [`peers`] |
//! | Local listeners carried to a peer (outbound tunnels) | [`tunnel`] |
//! | Declared services reached by peers (inbound) | [`service`] |
//! | TCP ⇄ stream copying with half-close | [`pipe`] |
//! | Tunnelled-connection table | [`registry`] |
//! | Admin HTTP server | [`admin`] |
//! | Prometheus metrics | [`telemetry`] |
//! | Certificate rotation (TLS files watched) | [`reload`] |
//! | `dwcp-daemon health` probe | [`probe`] |
//! | `dwcp-daemon demo` | [`demo`] |

pub mod admin;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod peers;
pub mod pipe;
pub mod probe;
pub mod registry;
pub mod reload;
pub mod service;
pub mod telemetry;
pub mod tunnel;

/// Build facts recorded by `build.rs`.
pub mod build {
    /// Target triple.
    pub const TARGET: &str = env!("DWCP_BUILD_TARGET");
    /// Cargo profile.
    pub const PROFILE: &str = env!("DWCP_BUILD_PROFILE");
    /// Short git commit, or `unknown`.
    pub const GIT_COMMIT: &str = env!("DWCP_BUILD_COMMIT");
}

pub use config::Config;
pub use daemon::{Daemon, DrainReport, StartError};
