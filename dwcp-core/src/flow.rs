//! Flow control: receive windows that auto-tune toward the bandwidth-delay product.
//!
//! A receiver allows the peer `window` bytes beyond what the application has
//! consumed. Each time the application has consumed a quarter of the window
//! ([`UPDATE_SHARE`]), it sends the difference as credit (a WINDOW frame).
//! Growth is judged over half windows: if the application consumed half a
//! window in less than [`GROWTH_RTTS`] smoothed RTTs, the window limited the
//! sender, so the window doubles, up to its ceiling (the approach of
//! Chromium's QUIC and quinn, which double within two RTTs). The first half
//! window is timed from the first byte received, so a bulk stream's window
//! doubles from its first judgement on: a window one doubling behind a TCP
//! lane's startup lets the lane's socket run dry, and the kernel then marks every rate
//! sample application-limited, which keeps BBR in its 2.89x startup (see
//! `a_first_update_soon_after_the_first_byte_doubles_the_window`). All
//! accounting is in decoded (raw) bytes, so the window is also the bound on
//! memory held for the stream.
//!
//! Why four RTTs and not two: on a lossy path every lost packet holds what
//! follows it until the retransmission arrives, a round trip or more later,
//! so the application reads in bursts and half windows are read a round
//! trip plus a hole apart, however hard the window holds the sender back.
//! With two RTTs the window of a stream on a 100 Mbit/s, 200 ms path with 5 % loss stopped
//! growing at 1–2 MiB (a tenth of the path). A reader slower than the path
//! grows its window to at most eight times what it reads per RTT, within the
//! ceiling.
//!
//! Why credit every quarter window and not every half (as Chromium does):
//! on a lossy path the sender spends its credit, then waits while the
//! reader waits behind holes. With credit at half windows, a sender on a
//! 100 Mbit/s, 200 ms path with 5 % loss sat idle for 0.2–0.5 s at a time
//! while the reader had consumed just short of half its window (traces
//! in `docs/benchmarks.md`). Growth is judged as soon as half a window
//! was read (an update is then due too), so reads of any size grow the
//! window exactly as grants at half windows did
//! (`bursty_reads_grow_the_window_as_with_grants_at_half_windows`). A
//! raise to a floor makes an update due once the window grew by a quarter.

use std::time::{Duration, Instant};

/// Half a window read in less than this many smoothed RTTs doubles the
/// window (see the module docs).
pub const GROWTH_RTTS: u32 = 4;

/// A credit update goes once the application has consumed this share of
/// the window (1/`UPDATE_SHARE`) since the last one.
pub const UPDATE_SHARE: u64 = 4;

/// Receive-side window of a stream or of the whole connection.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u64,
    max: u64,
    advertised: u64,
    received: u64,
    consumed: u64,
    /// Start of the half window over which growth is judged: when, and
    /// how much had been consumed then.
    epoch: Option<Instant>,
    epoch_consumed: u64,
    /// The next update was made due by [`RecvWindow::raise_floor`], not by
    /// the reader: it does not double the window.
    floor_raised: bool,
    /// The window of a connection, shared by its streams' data
    /// ([`RecvWindow::shared`]).
    shared: bool,
}

/// The peer sent beyond the credit it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowExceeded {
    /// Bytes received so far, including the offending frame.
    pub received: u64,
    /// Bytes the peer was allowed.
    pub allowed: u64,
}

impl RecvWindow {
    /// A window of `initial` bytes that may grow to `max`.
    pub fn new(initial: u32, max: u32) -> Self {
        RecvWindow {
            window: initial as u64,
            max: (max as u64).max(initial as u64),
            advertised: initial as u64,
            received: 0,
            consumed: 0,
            epoch: None,
            epoch_consumed: 0,
            floor_raised: false,
            shared: false,
        }
    }

    /// A window shared by several readers (a connection's, whose streams
    /// are read apart): as [`RecvWindow::new`], but data one reader leaves
    /// unread must not keep credit from what the others read
    /// ([`RecvWindow::wants_update`]).
    pub fn shared(initial: u32, max: u32) -> Self {
        RecvWindow {
            shared: true,
            ..RecvWindow::new(initial, max)
        }
    }

    /// Records `n` bytes received at `now`.
    ///
    /// # Errors
    /// The peer exceeded its credit.
    pub fn on_receive(&mut self, now: Instant, n: u64) -> Result<(), WindowExceeded> {
        let received = self.received + n;
        if received > self.advertised {
            return Err(WindowExceeded {
                received,
                allowed: self.advertised,
            });
        }
        if self.epoch.is_none() && n > 0 {
            // The first update is judged from the first byte.
            self.epoch = Some(now);
        }
        self.received = received;
        Ok(())
    }

    /// Records `n` bytes consumed (read or discarded).
    pub fn on_consume(&mut self, n: u64) {
        self.consumed = (self.consumed + n).min(self.received);
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> u64 {
        self.received - self.consumed
    }

    /// The current window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Raises the window to a floor `target` (within the ceiling). The
    /// update this makes due says nothing of the reader's pace, so it does
    /// not double the window: a reader that never reads holds the floor,
    /// not twice it. Returns true if a credit update is now due.
    pub fn raise_floor(&mut self, target: u64) -> bool {
        let target = target.min(self.max);
        if target > self.window {
            self.window = target;
            self.floor_raised = true;
        }
        self.wants_update()
    }

    /// The window credit is granted by: the window, and for a shared
    /// window at least half of it beyond the data received and not
    /// consumed, within the ceiling.
    ///
    /// Streams whose readers stall hold their windows' worth of a shared
    /// window for as long as they stall; a shared window sized by its
    /// readers' pace alone was filled by a few of them (a 32 MiB transfer
    /// through a pair of sidecars stopped beside six connections whose
    /// clients stopped reading), and every other stream waited with them.
    /// The ceiling stays the bound on memory.
    fn effective(&self) -> u64 {
        if !self.shared {
            return self.window;
        }
        let room = (self.buffered() + self.window / 2).min(self.max);
        self.window.max(room)
    }

    /// True when a credit update is due: the application consumed
    /// 1/[`UPDATE_SHARE`] of the window since the last one (or the window
    /// grew by as much), or half a window since growth was last judged, so
    /// that growth is judged when half a window was read, whatever the
    /// size of the reads. A shared window is also granted anything read
    /// while unread data holds more than half of it, and a quarter window
    /// as soon as unread data makes it due ([`RecvWindow::effective`]).
    pub fn wants_update(&self) -> bool {
        let share = (self.window / UPDATE_SHARE).max(1);
        // What a credit update would grant now.
        let grant = (self.consumed + self.effective()).saturating_sub(self.advertised);
        grant >= share || (grant > 0 && self.held_back(share)) || self.half_read()
    }

    /// In a shared window, data received and not consumed holds so much
    /// that what is read of the rest may never add up to `share`: less
    /// than two shares left. (A connection whose streams' readers stall:
    /// with three quarters held, the last quarter less the interactive
    /// reserve a bulk sender leaves never made a quarter read, and every
    /// other bulk stream waited for credit that never came.) Then any
    /// consumption is granted at once. The reserve is at most an eighth of
    /// the initial connection window, half a share, so with two shares
    /// left a bulk sender can always send the share that makes credit due.
    ///
    /// Not in a stream's window: its one reader reads what it holds, so
    /// the quarter comes; there a reader slower than the link holds most
    /// of its window for good (it grows to eight times what is read per
    /// RTT), and granting every read sent a WINDOW frame per read and
    /// shrank the sender's frames to the read's size (8 KiB reads at
    /// 50 MB/s: 6,118 WINDOW frames a second against 38).
    fn held_back(&self, share: u64) -> bool {
        self.shared && self.effective().saturating_sub(self.buffered()) < 2 * share
    }

    /// Half a window consumed since growth was last judged.
    fn half_read(&self) -> bool {
        self.consumed - self.epoch_consumed >= self.window / 2
    }

    /// Computes the credit to send now, auto-tuning the window first. Returns
    /// `None` if no update is due.
    pub fn take_update(&mut self, now: Instant, srtt: Option<Duration>) -> Option<u32> {
        self.take_update_within(now, srtt, u64::MAX)
    }

    /// As [`RecvWindow::take_update`], but auto-tuning grows the window
    /// by at most `growth` bytes (a connection's streams share a budget of
    /// growth: see `Connection::stream_window_room`).
    pub fn take_update_within(
        &mut self,
        now: Instant,
        srtt: Option<Duration>,
        growth: u64,
    ) -> Option<u32> {
        if !self.wants_update() {
            return None;
        }
        let floor_raised = std::mem::take(&mut self.floor_raised);
        if floor_raised || self.half_read() {
            let fast = match (self.epoch, srtt) {
                (Some(epoch), Some(rtt)) => {
                    now.saturating_duration_since(epoch) < rtt * GROWTH_RTTS
                }
                _ => false,
            };
            if fast && !floor_raised {
                let grown = (self.window * 2)
                    .min(self.max)
                    .min(self.window.saturating_add(growth));
                self.window = self.window.max(grown);
            }
            self.epoch = Some(now);
            self.epoch_consumed = self.consumed;
        }
        let target = self.consumed + self.effective();
        let credit = target.saturating_sub(self.advertised);
        self.advertised = self.advertised.max(target);
        u32::try_from(credit).ok()
    }
}

/// Send-side credit granted by the peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCredit {
    available: u64,
}

/// Largest credit a sender may hold (2^31 - 1).
pub const MAX_CREDIT: u64 = (1 << 31) - 1;

impl SendCredit {
    /// Credit from the peer's initial window.
    pub fn new(initial: u32) -> Self {
        SendCredit {
            available: initial as u64,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Adds credit from a WINDOW frame. Returns false if the total would exceed
    /// [`MAX_CREDIT`] (a flow-control error by the peer).
    pub fn grant(&mut self, credit: u32) -> bool {
        let total = self.available + credit as u64;
        if total > MAX_CREDIT {
            return false;
        }
        self.available = total;
        true
    }

    /// Uses `n` bytes of credit; the caller checked availability.
    pub fn consume(&mut self, n: u64) {
        self.available = self.available.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_detected() {
        let t0 = Instant::now();
        let mut w = RecvWindow::new(100, 1000);
        assert!(w.on_receive(t0, 60).is_ok());
        assert!(w.on_receive(t0, 40).is_ok());
        assert_eq!(
            w.on_receive(t0, 1),
            Err(WindowExceeded {
                received: 101,
                allowed: 100
            })
        );
    }

    #[test]
    fn credit_every_quarter_window_and_growth_judged_over_halves() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let rtt = Some(Duration::from_millis(100));
        let mut w = RecvWindow::new(1000, 4000);
        let read = |w: &mut RecvWindow, n: u64| {
            w.on_receive(t0 - Duration::from_secs(5), n)
                .expect("in window");
            w.on_consume(n);
        };
        read(&mut w, 200);
        assert!(!w.wants_update(), "less than a quarter read");
        read(&mut w, 100);
        // A quarter read, 5 s after the first byte: credit, no judgement.
        assert_eq!(w.take_update(t0, rtt), Some(300));
        assert_eq!(w.window(), 1000);
        read(&mut w, 300);
        // Half a window read, 5 s after the first byte: judged, no growth.
        assert_eq!(w.take_update(t0, rtt), Some(300));
        assert_eq!(w.window(), 1000);
        read(&mut w, 250);
        // A quarter within an RTT of the judgement: credit, not judged.
        assert_eq!(
            w.take_update(t0 + Duration::from_millis(20), rtt),
            Some(250)
        );
        assert_eq!(w.window(), 1000);
        read(&mut w, 250);
        // Half a window within 4 RTT: the window doubles.
        let c = w.take_update(t0 + Duration::from_millis(50), rtt);
        assert_eq!(w.window(), 2000);
        assert_eq!(c, Some(1250));
        // Slow consumption: no growth.
        read(&mut w, 1000);
        w.take_update(t0 + Duration::from_secs(5), rtt);
        assert_eq!(w.window(), 2000);
        assert!(w.buffered() == 0);
    }

    /// Data received and never read holds part of a window (a
    /// connection's streams whose readers stall). With three quarters
    /// held, what the others read could never reach the quarter that
    /// makes credit due: the last quarter, less the interactive reserve
    /// a bulk sender leaves, was spent and never came back.
    #[test]
    fn credit_flows_while_unread_data_holds_most_of_the_window() {
        let now = Instant::now();
        let mut w = RecvWindow::shared(1000, 1000);
        // 720 held, never read.
        w.on_receive(now, 720).expect("in window");
        // Another stream's 230 arrive and are read (50 of the window
        // stay unused: the sender's reserve).
        w.on_receive(now, 230).expect("in window");
        w.on_consume(230);
        assert!(w.wants_update(), "230 read with 720 held: credit is due");
        assert_eq!(w.take_update(now, None), Some(230));
        w.on_receive(now, 10).expect("in window");
        w.on_consume(10);
        assert_eq!(w.take_update(now, None), Some(10));
        // Under half held: the quarter rule.
        let mut w = RecvWindow::shared(1000, 1000);
        w.on_receive(now, 400).expect("in window");
        w.on_receive(now, 200).expect("in window");
        w.on_consume(200);
        assert!(!w.wants_update(), "200 read with 400 held");
        w.on_receive(now, 50).expect("in window");
        w.on_consume(50);
        assert_eq!(w.take_update(now, None), Some(250));
    }

    /// A stream's window has one reader: one slower than the link holds
    /// most of it and is granted every quarter read, not every read.
    #[test]
    fn a_slow_readers_window_is_granted_by_quarters() {
        let now = Instant::now();
        let mut w = RecvWindow::new(1000, 1000);
        w.on_receive(now, 1000).expect("in window");
        w.on_consume(100);
        assert!(!w.wants_update(), "100 read with 900 unread");
        w.on_consume(150);
        assert_eq!(w.take_update(now, None), Some(250));
    }

    /// A lost packet pauses the reader for a round trip or more, so on a
    /// lossy path a sender held back by the window sees its credit come
    /// three RTTs apart: the window must still grow. Five RTTs apart, the
    /// reader is slower than the path and it must not.
    #[test]
    fn updates_spaced_by_a_hole_still_grow_the_window() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(200);
        let mut w = RecvWindow::new(1000, 64_000);
        let mut at = t0;
        let mut step = |w: &mut RecvWindow, gap: Duration| {
            let n = w.advertised - w.received;
            w.on_receive(at, n).expect("in window");
            w.on_consume(n);
            at += gap;
            w.take_update(at, Some(rtt));
            w.window()
        };
        assert_eq!(step(&mut w, rtt * 5), 1000);
        assert_eq!(step(&mut w, rtt * 3), 2000);
        assert_eq!(step(&mut w, rtt * 3), 4000);
        assert_eq!(step(&mut w, rtt * 5), 4000);
    }

    /// A bulk stream's first half window arrives within a few RTTs of its
    /// first byte: that first update already shows the window holding the
    /// sender back, so it doubles too. Without it the window trailed a
    /// kernel BBR lane's startup by one doubling, the lane's socket ran dry,
    /// the kernel marked its rate samples application-limited and BBR's
    /// startup (which ends only on rounds that are not) paced at 2.89x into a
    /// full queue for seconds: 5-20 % retransmitted on a clean 50 ms path.
    #[test]
    fn a_first_update_soon_after_the_first_byte_doubles_the_window() {
        let t0 = Instant::now();
        let rtt = Some(Duration::from_millis(50));
        // The first update `after` the first byte: (credit, window).
        let first_update = |after: Duration| {
            let mut w = RecvWindow::new(1000, 64_000);
            w.on_receive(t0, 500).expect("in window");
            w.on_consume(500);
            (w.take_update(t0 + after, rtt), w.window())
        };
        assert_eq!(first_update(Duration::from_millis(120)), (Some(1500), 2000));
        // A stream that takes longer than that for its first half window
        // keeps the initial one.
        assert_eq!(first_update(Duration::from_secs(1)), (Some(500), 1000));
    }

    #[test]
    fn a_window_raised_to_its_floor_is_not_doubled_by_that_raise() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(200);
        let mut w = RecvWindow::new(1 << 20, 64 << 20);
        w.on_receive(t0, 1000).expect("within credit");
        // Nothing read: the raise alone makes the update due.
        assert!(w.raise_floor(2 << 20));
        assert_eq!(w.take_update(t0 + rtt, Some(rtt)), Some(1 << 20));
        assert_eq!(w.window(), 2 << 20, "the raise doubled the window");
        // An update the reader makes due still doubles it.
        w.on_receive(t0 + rtt, (2 << 20) - 1000)
            .expect("within credit");
        w.on_consume(2 << 20);
        assert!(w.take_update(t0 + 2 * rtt, Some(rtt)).is_some());
        assert_eq!(w.window(), 4 << 20);
    }

    /// Reads that come in bursts of a fifth of the window: with grants at
    /// quarter windows, growth was judged only at a grant, after 0.8 of a
    /// window instead of 0.6, and a reader fast enough to double the window
    /// at half-window grants (0.6 window in 360 ms, under four 100 ms RTTs)
    /// kept it. Growth must be judged as soon as half a window was read.
    #[test]
    fn bursty_reads_grow_the_window_as_with_grants_at_half_windows() {
        let t0 = Instant::now();
        let rtt = Some(Duration::from_millis(100));
        let mut w = RecvWindow::new(10_000, 1 << 30);
        let mut at = t0;
        for _ in 0..30 {
            let n = w.window() / 5;
            w.on_receive(at, n).expect("in window");
            w.on_consume(n);
            w.take_update(at, rtt);
            at += Duration::from_millis(120);
        }
        assert!(
            w.window() >= 160_000,
            "the window stayed at {} after 30 bursts",
            w.window()
        );
    }

    #[test]
    fn window_capped_at_max() {
        let t0 = Instant::now();
        let mut w = RecvWindow::new(1000, 1500);
        for i in 0..10u64 {
            let allowed = w.advertised - w.received;
            w.on_receive(t0, allowed).expect("in window");
            w.on_consume(allowed);
            w.take_update(t0 + Duration::from_millis(i), Some(Duration::from_secs(1)));
        }
        assert_eq!(w.window(), 1500);
    }

    #[test]
    fn send_credit_overflow() {
        let mut c = SendCredit::new(u32::MAX >> 1);
        assert!(!c.grant(1));
        c.consume(10);
        assert!(c.grant(10));
        assert_eq!(c.available(), MAX_CREDIT);
    }
}
