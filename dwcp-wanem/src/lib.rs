//! A user-space WAN emulator.
//!
//! The kernels DWCP is tested on often lack the netem qdisc, so delay, jitter,
//! loss, reordering and a rate limit are applied here, in user space:
//!
//! - [`Shaper`] is the link model: a sans-IO, seeded state machine that takes
//!   a packet and the time it arrived and says when (or whether) it leaves.
//!   Given the same seed and the same arrivals it makes the same decisions.
//! - [`udp::Relay`] puts one [`Shaper`] on each direction of a UDP relay, so
//!   a QUIC client and server talk through an emulated WAN.
//!
//! Both are used by the tests of `dwcp-core`, by `dwcp-bench` and by
//! `dwcp-daemon demo`.

mod shaper;
pub mod tun;
pub mod udp;

pub use shaper::{Decision, LinkProfile, Shaper, ShaperStats};
