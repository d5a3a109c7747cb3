//! Who sends next: deficit round robin over streams that have data and credit.
//!
//! Each stream in the ring gets `quantum * weight` bytes of deficit when its
//! turn starts and sends frames while its deficit is positive, so over any
//! interval in which a set of streams stays backlogged each one's share is
//! proportional to its weight, and a stream is never more than one frame
//! (the largest DATA frame) ahead of its share. Every operation is O(1).

use std::collections::VecDeque;

use crate::StreamId;

/// The ring of streams eligible to send.
#[derive(Debug, Default)]
pub struct Scheduler {
    ring: VecDeque<StreamId>,
}

/// Per-stream scheduler state, kept inside the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedState {
    /// In the ring.
    pub queued: bool,
    /// Its turn has started (deficit was topped up).
    pub in_turn: bool,
    /// Bytes it may still send in this turn (may go negative by one frame).
    pub deficit: i64,
}

impl Scheduler {
    /// Adds a stream at the back of the ring if it is not already there.
    pub fn push(&mut self, id: StreamId, st: &mut SchedState) {
        if !st.queued {
            st.queued = true;
            st.in_turn = false;
            st.deficit = 0;
            self.ring.push_back(id);
        }
    }

    /// The stream at the front of the ring.
    pub fn front(&self) -> Option<StreamId> {
        self.ring.front().copied()
    }

    /// Removes the front stream (it has nothing to send).
    pub fn pop(&mut self, st: Option<&mut SchedState>) {
        self.ring.pop_front();
        if let Some(st) = st {
            st.queued = false;
            st.in_turn = false;
            st.deficit = 0;
        }
    }

    /// Ends the front stream's turn and moves it to the back.
    pub fn rotate(&mut self, st: &mut SchedState) {
        st.in_turn = false;
        self.ring.rotate_left(1.min(self.ring.len()));
    }

    /// Streams in the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True if no stream is eligible.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Starts the turn of the front stream if needed; returns the deficit available.
    pub fn begin_turn(st: &mut SchedState, quantum: u32, weight: u16) -> i64 {
        if !st.in_turn {
            st.in_turn = true;
            st.deficit += quantum as i64 * weight as i64;
        }
        st.deficit
    }
}
