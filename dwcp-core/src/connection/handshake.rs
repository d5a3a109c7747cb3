//! The handshake: this side's HELLO, checking the peer's, and mapping
//! the peer's traffic classes to ours by name.

use std::time::Instant;

use tracing::{debug, warn};

use super::{Connection, Event, State, Violation};
use crate::codec::CodecId;
use crate::error::ErrorCode;
use crate::flow::SendCredit;
use crate::frame::Hello;

impl Connection {
    pub(super) fn our_hello(&self) -> Hello {
        Hello {
            min_version: self.config.min_version,
            max_version: self.config.max_version,
            capabilities: self.config.capabilities,
            required: self.config.required_capabilities,
            codecs: self.config.codecs | CodecId::None.bit(),
            max_frame_payload: self.config.max_frame_payload,
            max_decoded_frame: self.config.max_decoded_frame,
            initial_stream_window: self.config.initial_stream_window,
            initial_connection_window: self.config.initial_connection_window,
            max_streams: self.config.max_streams,
            class_names: self.config.class_names.clone(),
        }
    }

    pub(super) fn handle_hello(&mut self, now: Instant, h: Hello) -> Result<(), Violation> {
        let (lo, hi) = (self.config.min_version, self.config.max_version);
        if h.max_version < lo || h.min_version > hi {
            let older = if h.max_version < lo {
                "the peer"
            } else {
                "this side"
            };
            return Err(Violation::new(
                ErrorCode::VersionMismatch,
                format!(
                    "no common protocol version: this side speaks {lo}..={hi}, the peer speaks {}..={}; upgrade {older}",
                    h.min_version, h.max_version
                ),
            ));
        }
        let missing = self
            .config
            .required_capabilities
            .missing_from(h.capabilities);
        if missing.0 != 0 {
            return Err(Violation::new(
                ErrorCode::MissingCapability,
                format!(
                    "the peer lacks required capabilities {:?}; enable them on the peer or drop them from required_capabilities",
                    missing.names()
                ),
            ));
        }
        let missing = h.required.missing_from(self.config.capabilities);
        if missing.0 != 0 {
            return Err(Violation::new(
                ErrorCode::MissingCapability,
                format!(
                    "the peer requires capabilities {:?} that this side does not offer; enable them here",
                    missing.names()
                ),
            ));
        }
        if h.max_frame_payload < 1024 || h.initial_stream_window < 1024 {
            return Err(Violation::new(
                ErrorCode::HandshakeFailed,
                "peer's max_frame_payload or initial_stream_window is below 1 KiB",
            ));
        }
        self.version = h.max_version.min(hi);
        self.conn_credit = SendCredit::new(h.initial_connection_window);
        self.class_map = self.map_classes(&h.class_names);
        self.peer = Some(h);
        self.state = State::Open;
        self.next_ping = now;
        self.events.push_back(Event::Connected);
        Ok(())
    }

    /// Maps the peer's class ids to ours by name (see [`crate::Config::class_names`]).
    pub(super) fn map_classes(&self, peer: &[String]) -> Option<Vec<u8>> {
        let ours = &self.config.class_names;
        if ours.is_empty() || peer.is_empty() {
            return None;
        }
        let mut unknown = Vec::new();
        let map = peer
            .iter()
            .map(|n| match ours.iter().position(|o| o == n) {
                Some(i) => i as u8,
                None => {
                    unknown.push(n.as_str());
                    0
                }
            })
            .collect();
        if !unknown.is_empty() {
            warn!(
                ?unknown,
                default = %ours[0],
                "dwcp: the peer names classes this side does not have; its streams of those classes get this side's first class"
            );
        } else if peer.iter().zip(ours).any(|(p, o)| p != o) {
            debug!(
                ?peer,
                ?ours,
                "dwcp: class lists in different orders, mapped by name"
            );
        }
        Some(map)
    }

    /// This side's class id for a class id the peer used in OPEN.
    pub(super) fn local_class(&self, peer_class: u8) -> u8 {
        match &self.class_map {
            // An id past the peer's named list is a class it did not name.
            Some(map) => map.get(usize::from(peer_class)).copied().unwrap_or(0),
            None => peer_class,
        }
    }
}
