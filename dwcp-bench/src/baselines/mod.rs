//! The alternatives DWCP is measured against, each set up the way a user
//! would (same TLS, same windows where they apply): raw quinn, raw TCP +
//! rustls, rust-yamux.

mod raw_quinn;
mod raw_tls;
mod yamux;

pub use raw_quinn::{raw_quinn_throughput, raw_quinn_throughput_on};
pub use raw_tls::{
    loopback_tls_pair, raw_tls_setup, raw_tls_tcp_throughput, tls_bulk_over, tls_endpoints,
    tls_handshake,
};
pub use yamux::{yamux_bulk, yamux_bulk_over, yamux_latency};
