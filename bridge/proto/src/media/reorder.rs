//! A bounded jitter/reorder buffer for one RTP stream (one SSRC).
//!
//! Packets go in with [`ReorderBuffer::push`] in arrival order and come out of
//! [`ReorderBuffer::pop`] in sequence order. A missing packet holds the ones after it back until
//! the longest-waiting of them has waited `max_delay` (or the buffer holds `max_packets`); then the
//! gap is given up on and the next packet released carries the number of packets skipped in
//! [`RtpPacket::loss`], which is how the depacketizer learns it must drop the access unit.
//!
//! The buffer never reads the clock: every call takes `now`, and [`ReorderBuffer::deadline`] says
//! when to call [`ReorderBuffer::pop`] again, so the caller can arm one timer.
//!
//! Sequence numbers are 16 bits and wrap; all arithmetic is on differences to the next expected
//! number, read as `i16`. A jump of more than [`MAX_DROPOUT`] ahead or [`MAX_MISORDER`] behind is
//! held on probation as RFC 3550 (appendix A.1) does: if the packet after it follows it, the sender
//! restarted its numbering and the buffer follows; otherwise it is dropped as a stray.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use thiserror::Error;

// Re-exported: the bridge's RTC layer names the packet by this path.
pub use super::rtp::RtpPacket;

/// A packet further ahead than this is a possible sequence restart, not loss (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// A packet further behind than this is a possible sequence restart, not a late one (RFC 3550 A.1).
pub const MAX_MISORDER: u16 = 100;

/// How long and how much to wait for a missing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Longest a packet waits behind a gap before the gap is given up on.
    pub max_delay: Duration,
    /// Most packets held (a gap is given up on early rather than exceed it); clamped to
    /// `1..=MAX_DROPOUT`.
    pub max_packets: u16,
}

impl Default for ReorderConfig {
    /// 100 ms covers the reordering of real paths without adding much latency; 1000 packets is
    /// about 100 ms of a 10 Mbit/s stream of 1200-byte packets.
    fn default() -> Self {
        Self {
            max_delay: Duration::from_millis(100),
            max_packets: 1000,
        }
    }
}

/// Counters since the buffer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Packets pushed (all of them, including dropped ones).
    pub received: u64,
    /// Packets popped.
    pub released: u64,
    /// Sequence numbers given up on.
    pub lost: u64,
    /// Packets seen twice (dropped).
    pub duplicates: u64,
    /// Packets that arrived after a later one but in time to be released in order.
    pub reordered: u64,
    /// Packets that arrived after their gap was given up on (dropped).
    pub late: u64,
    /// Padding-only packets (they fill their sequence number and are never released).
    pub padding: u64,
    /// Sequence restarts followed.
    pub resyncs: u64,
    /// Packets far outside the window that nothing followed (dropped).
    pub stray: u64,
}

/// What [`ReorderBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Held for release in order (or, for padding, noted).
    Buffered,
    /// Already seen: dropped.
    Duplicate,
    /// Its gap was already given up on: dropped.
    Late,
    /// Far outside the window: held on probation until the next packet says whether the sender
    /// restarted its numbering.
    Probation,
}

/// Errors from [`ReorderBuffer::push`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReorderError {
    /// One buffer serves one SSRC; a packet of another is not mixed in.
    #[error("packet of ssrc {got:08x} (seq {seq}) in the buffer of ssrc {expected:08x}")]
    SsrcMismatch {
        /// The SSRC of the buffer's first packet.
        expected: u32,
        /// The SSRC of this packet.
        got: u32,
        /// This packet's sequence number.
        seq: u16,
    },
}

#[derive(Debug)]
struct Slot {
    packet: RtpPacket,
    arrival: Instant,
}

/// A jitter/reorder buffer for one SSRC. See the module docs.
#[derive(Debug)]
pub struct ReorderBuffer {
    config: ReorderConfig,
    /// Set by the first packet.
    ssrc: Option<u32>,
    /// The sequence number `slots[0]` stands for.
    next: u16,
    /// The highest sequence number pushed, to tell reordering.
    highest: u16,
    /// Index `i` holds sequence number `next + i`; `None` is a gap.
    slots: VecDeque<Option<Slot>>,
    /// Occupied slots.
    held: usize,
    /// Released in order but not yet popped (a jump or resync moved past them at once).
    ready: VecDeque<RtpPacket>,
    /// Gaps given up on since the last packet released: that packet's `loss`.
    pending_loss: u16,
    /// Bit `k` set: sequence number `next - 1 - k` was received, so a copy is a duplicate.
    history: u64,
    /// The earliest arrival among held packets while the front is a gap (`None`: not computed).
    waiting_since: Option<Instant>,
    probation: Option<Slot>,
    /// The latest `now` given: what [`Self::deadline`] returns when something is due already.
    last_now: Option<Instant>,
    stats: ReorderStats,
}

impl ReorderBuffer {
    /// An empty buffer; it takes the SSRC and the starting sequence number from its first packet.
    pub fn new(config: ReorderConfig) -> Self {
        let config = ReorderConfig {
            max_packets: config.max_packets.clamp(1, MAX_DROPOUT),
            ..config
        };
        Self {
            config,
            ssrc: None,
            next: 0,
            highest: 0,
            slots: VecDeque::new(),
            held: 0,
            ready: VecDeque::new(),
            pending_loss: 0,
            history: 0,
            waiting_since: None,
            probation: None,
            last_now: None,
            stats: ReorderStats::default(),
        }
    }

    /// The SSRC this buffer serves, once a packet has arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Counters so far.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Packets held (waiting behind a gap or not yet popped).
    pub fn len(&self) -> usize {
        self.held + self.ready.len()
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When [`Self::pop`] will next release something without another push: `None` if nothing is
    /// held, an instant already past if something is due now.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.ready.is_empty() || matches!(self.slots.front(), Some(Some(_))) {
            return self.last_now;
        }
        if self.held == 0 {
            return None;
        }
        let since = self.waiting_since?;
        Some(since.checked_add(self.config.max_delay).unwrap_or(since))
    }

    /// Takes a packet in arrival order. Pop until `None` afterwards.
    pub fn push(&mut self, packet: RtpPacket, now: Instant) -> Result<Pushed, ReorderError> {
        let seq = packet.sequence_number;
        match self.ssrc {
            Some(expected) if expected != packet.ssrc => {
                return Err(ReorderError::SsrcMismatch {
                    expected,
                    got: packet.ssrc,
                    seq,
                });
            }
            Some(_) => {}
            None => {
                self.ssrc = Some(packet.ssrc);
                self.next = seq;
                self.highest = seq;
            }
        }
        self.stats.received += 1;
        self.last_now = Some(now);
        let offset = seq.wrapping_sub(self.next) as i16;

        if offset >= MAX_DROPOUT as i16 || offset < -(MAX_MISORDER as i16) {
            let follows = self
                .probation
                .as_ref()
                .is_some_and(|p| p.packet.sequence_number.wrapping_add(1) == seq);
            let slot = Slot {
                packet,
                arrival: now,
            };
            if follows {
                if let Some(first) = self.probation.take() {
                    self.resync(first, slot);
                }
                return Ok(Pushed::Buffered);
            }
            if self.probation.replace(slot).is_some() {
                self.stats.stray += 1;
            }
            return Ok(Pushed::Probation);
        }
        if self.probation.take().is_some() {
            self.stats.stray += 1;
        }

        if offset < 0 {
            let back = u32::from(offset.unsigned_abs()) - 1;
            if back < 64 && self.history >> back & 1 == 1 {
                self.stats.duplicates += 1;
                return Ok(Pushed::Duplicate);
            }
            self.stats.late += 1;
            return Ok(Pushed::Late);
        }

        // Past the count bound: give up on the oldest gaps to make room.
        let mut index = offset as usize;
        while index >= usize::from(self.config.max_packets) {
            if let Some(released) = self.step() {
                self.ready.push_back(released);
            }
            index -= 1;
        }
        self.insert(index, packet, now)
    }

    /// The next packet in sequence order, if it is due: the next in sequence is here, or the gap
    /// before it has been waited on long enough.
    pub fn pop(&mut self, now: Instant) -> Option<RtpPacket> {
        self.last_now = Some(now);
        loop {
            if let Some(packet) = self.ready.pop_front() {
                return self.released(packet);
            }
            if self.held == 0 {
                return None;
            }
            if !matches!(self.slots.front(), Some(Some(_))) {
                self.refresh_waiting();
                let due = self.deadline().is_some_and(|deadline| deadline <= now);
                if !due {
                    return None;
                }
            }
            if let Some(packet) = self.step() {
                return self.released(packet);
            }
        }
    }

    /// Releases everything held, in order, whatever the deadlines (at the end of a stream).
    pub fn flush(&mut self) -> Option<RtpPacket> {
        loop {
            if let Some(packet) = self.ready.pop_front() {
                return self.released(packet);
            }
            if self.held == 0 {
                return None;
            }
            if let Some(packet) = self.step() {
                return self.released(packet);
            }
        }
    }

    fn released(&mut self, packet: RtpPacket) -> Option<RtpPacket> {
        self.stats.released += 1;
        self.refresh_waiting();
        Some(packet)
    }

    fn insert(
        &mut self,
        index: usize,
        packet: RtpPacket,
        now: Instant,
    ) -> Result<Pushed, ReorderError> {
        let seq = packet.sequence_number;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let Some(slot) = self.slots.get_mut(index) else {
            // resize_with above made the index valid.
            return Ok(Pushed::Buffered);
        };
        if slot.is_some() {
            self.stats.duplicates += 1;
            return Ok(Pushed::Duplicate);
        }
        if (seq.wrapping_sub(self.highest) as i16) < 0 {
            self.stats.reordered += 1;
        } else {
            self.highest = seq;
        }
        if packet.payload.is_empty() {
            self.stats.padding += 1;
        }
        *slot = Some(Slot {
            packet,
            arrival: now,
        });
        self.held += 1;
        if let Some(since) = self.waiting_since {
            self.waiting_since = Some(since.min(now));
        }
        self.refresh_waiting();
        Ok(Pushed::Buffered)
    }

    /// Moves past the front sequence number: returns its packet (carrying the loss before it), or
    /// counts it lost. Padding fills its number and returns nothing.
    fn step(&mut self) -> Option<RtpPacket> {
        let slot = self.slots.pop_front().flatten();
        self.next = self.next.wrapping_add(1);
        self.history = self.history << 1 | u64::from(slot.is_some());
        let Some(slot) = slot else {
            self.pending_loss = self.pending_loss.saturating_add(1);
            self.stats.lost += 1;
            return None;
        };
        self.held -= 1;
        if self
            .waiting_since
            .is_some_and(|since| slot.arrival <= since)
        {
            // The earliest arrival just left: find the next earliest when it is needed.
            self.waiting_since = None;
        }
        if slot.packet.payload.is_empty() {
            return None;
        }
        let mut packet = slot.packet;
        packet.loss = std::mem::take(&mut self.pending_loss);
        Some(packet)
    }

    /// Keeps `waiting_since` right for a gap at the front. The scan runs once per gap (and again
    /// only if the earliest waiter leaves while another gap is in front); without loss there is
    /// never a gap in front, and nothing to scan.
    fn refresh_waiting(&mut self) {
        if self.held == 0 || matches!(self.slots.front(), Some(Some(_))) {
            self.waiting_since = None;
        } else if self.waiting_since.is_none() {
            self.waiting_since = self.slots.iter().flatten().map(|s| s.arrival).min();
        }
    }

    /// The sender restarted its numbering at `first`: what is held goes out in order, then the
    /// buffer starts again from `first`, marked as following a loss.
    fn resync(&mut self, first: Slot, second: Slot) {
        while self.held > 0 {
            if let Some(packet) = self.step() {
                self.ready.push_back(packet);
            }
        }
        self.slots.clear();
        self.stats.resyncs += 1;
        self.pending_loss = self.pending_loss.saturating_add(1);
        self.next = first.packet.sequence_number;
        self.highest = self.next;
        self.history = 0;
        self.waiting_since = None;
        // Both fit: offsets 0 and 1.
        let _ = self.insert(0, first.packet, first.arrival);
        let _ = self.insert(1, second.packet, second.arrival);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn pkt(seq: u16) -> RtpPacket {
        RtpPacket::new(
            0x1234,
            seq,
            u32::from(seq) * 10,
            false,
            Bytes::from_static(b"x"),
        )
    }

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// Pushes `(seq, at_ms)` and pops after each push at that time; returns `(seq, loss)` out.
    fn run(buf: &mut ReorderBuffer, base: Instant, input: &[(u16, u64)]) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        for &(seq, at) in input {
            buf.push(pkt(seq), ms(base, at)).unwrap();
            while let Some(p) = buf.pop(ms(base, at)) {
                out.push((p.sequence_number, p.loss));
            }
        }
        out
    }

    #[test]
    fn in_order_passes_straight_through() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        let out = run(&mut buf, base, &[(10, 0), (11, 1), (12, 2)]);
        assert_eq!(out, [(10, 0), (11, 0), (12, 0)]);
        assert_eq!(buf.deadline(), None);
        assert!(buf.is_empty());
        assert_eq!(buf.stats().released, 3);
    }

    #[test]
    fn reordering_within_the_delay_is_repaired() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        let out = run(&mut buf, base, &[(1, 0), (3, 1), (4, 2), (2, 30), (5, 31)]);
        assert_eq!(out, [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]);
        let stats = buf.stats();
        assert_eq!((stats.reordered, stats.lost, stats.late), (1, 0, 0));
    }

    #[test]
    fn a_gap_is_given_up_after_max_delay_measured_from_the_first_waiter() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        assert_eq!(run(&mut buf, base, &[(1, 0), (3, 10), (4, 20)]), [(1, 0)]);
        assert_eq!(buf.deadline(), Some(ms(base, 110)));
        assert_eq!(buf.pop(ms(base, 109)), None);
        let p = buf.pop(ms(base, 110)).unwrap();
        assert_eq!((p.sequence_number, p.loss), (3, 1));
        let p = buf.pop(ms(base, 110)).unwrap();
        assert_eq!((p.sequence_number, p.loss), (4, 0));
        assert_eq!(buf.pop(ms(base, 110)), None);
        // The lost one turns up after all: late.
        assert_eq!(buf.push(pkt(2), ms(base, 111)), Ok(Pushed::Late));
        assert_eq!(buf.stats().lost, 1);
        assert_eq!(buf.stats().late, 1);
    }

    #[test]
    fn a_second_gap_waits_from_its_own_first_waiter() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        // 2 and 5 missing; 3 and 4 arrive at 0 ms, 6 at 90 ms.
        run(&mut buf, base, &[(1, 0), (3, 0), (4, 0), (6, 90)]);
        let out: Vec<_> = std::iter::from_fn(|| buf.pop(ms(base, 100)))
            .map(|p| (p.sequence_number, p.loss))
            .collect();
        assert_eq!(out, [(3, 1), (4, 0)]);
        assert_eq!(buf.deadline(), Some(ms(base, 190)));
        let p = buf.pop(ms(base, 190)).unwrap();
        assert_eq!((p.sequence_number, p.loss), (6, 1));
    }

    #[test]
    fn reordered_arrivals_wait_from_the_earliest() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        // 1, then 2 missing; 4 arrives before 3.
        run(&mut buf, base, &[(1, 0), (4, 5), (3, 50)]);
        assert_eq!(buf.deadline(), Some(ms(base, 105)));
    }

    #[test]
    fn duplicates_are_dropped_before_and_after_release() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        let out = run(&mut buf, base, &[(1, 0), (3, 1), (3, 2), (1, 3), (2, 4)]);
        assert_eq!(out, [(1, 0), (2, 0), (3, 0)]);
        assert_eq!(buf.stats().duplicates, 2);
        assert_eq!(buf.push(pkt(2), ms(base, 5)), Ok(Pushed::Duplicate));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        let out = run(
            &mut buf,
            base,
            &[(65534, 0), (0, 1), (65535, 2), (1, 3), (3, 4)],
        );
        assert_eq!(out, [(65534, 0), (65535, 0), (0, 0), (1, 0)]);
        let p = buf.pop(ms(base, 104)).unwrap();
        assert_eq!((p.sequence_number, p.loss), (3, 1));
        assert_eq!(buf.stats().reordered, 1);
    }

    #[test]
    fn padding_fills_its_number_and_is_not_released() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        buf.push(pkt(1), base).unwrap();
        let mut padding = pkt(2);
        padding.payload = Bytes::new();
        buf.push(padding, base).unwrap();
        buf.push(pkt(3), base).unwrap();
        let out: Vec<_> = std::iter::from_fn(|| buf.pop(base))
            .map(|p| (p.sequence_number, p.loss))
            .collect();
        assert_eq!(out, [(1, 0), (3, 0)]);
        assert_eq!(buf.stats().padding, 1);
        assert_eq!(buf.stats().lost, 0);
    }

    #[test]
    fn the_count_bound_gives_up_on_gaps_early() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig {
            max_packets: 4,
            ..ReorderConfig::default()
        });
        let out = run(&mut buf, base, &[(1, 0), (3, 0), (4, 0), (5, 0), (6, 0)]);
        assert_eq!(out, [(1, 0), (3, 1), (4, 0), (5, 0), (6, 0)]);
        assert_eq!(buf.stats().lost, 1);
    }

    #[test]
    fn a_sequence_restart_is_followed_after_one_packet_of_probation() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        run(&mut buf, base, &[(100, 0), (102, 1)]);
        assert_eq!(buf.push(pkt(40_000), ms(base, 2)), Ok(Pushed::Probation));
        assert_eq!(buf.push(pkt(40_001), ms(base, 3)), Ok(Pushed::Buffered));
        let out: Vec<_> = std::iter::from_fn(|| buf.pop(ms(base, 3)))
            .map(|p| (p.sequence_number, p.loss))
            .collect();
        // 102 goes out (after the gap at 101), then the new numbering, marked as a loss.
        assert_eq!(out, [(102, 1), (40_000, 1), (40_001, 0)]);
        assert_eq!(buf.stats().resyncs, 1);
        // A single stray is dropped when the stream goes on.
        assert_eq!(buf.push(pkt(7), ms(base, 4)), Ok(Pushed::Probation));
        assert_eq!(buf.push(pkt(40_002), ms(base, 4)), Ok(Pushed::Buffered));
        assert_eq!(buf.pop(ms(base, 4)).unwrap().sequence_number, 40_002);
        assert_eq!(buf.stats().stray, 1);
    }

    #[test]
    fn other_ssrcs_are_refused() {
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        buf.push(pkt(1), Instant::now()).unwrap();
        let mut other = pkt(2);
        other.ssrc = 99;
        assert_eq!(
            buf.push(other, Instant::now()),
            Err(ReorderError::SsrcMismatch {
                expected: 0x1234,
                got: 99,
                seq: 2
            })
        );
    }

    #[test]
    fn flush_releases_across_gaps() {
        let base = Instant::now();
        let mut buf = ReorderBuffer::new(ReorderConfig::default());
        run(&mut buf, base, &[(1, 0), (4, 0), (3, 0)]);
        let out: Vec<_> = std::iter::from_fn(|| buf.flush())
            .map(|p| (p.sequence_number, p.loss))
            .collect();
        assert_eq!(out, [(3, 1), (4, 0)]);
    }

    #[test]
    fn random_input_keeps_order_and_bounds() {
        let base = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = ReorderBuffer::new(ReorderConfig {
            max_packets: 64,
            ..ReorderConfig::default()
        });
        let mut seq = 0u16;
        let mut last: Option<u16> = None;
        let mut out_count = 0u64;
        for i in 0..20_000u64 {
            let r = rand();
            let s = match r % 16 {
                0 => rand() as u16,                              // anywhere
                1..=3 => seq.wrapping_sub((r >> 8) as u16 % 40), // late or duplicate
                4 => seq.wrapping_add((r >> 8) as u16 % 80),     // ahead
                _ => {
                    seq = seq.wrapping_add(1);
                    seq
                }
            };
            let mut p = pkt(s);
            if r % 29 == 0 {
                p.payload = Bytes::new();
            }
            let now = ms(base, i / 4);
            buf.push(p, now).unwrap();
            assert!(buf.len() <= 64 + 2);
            while let Some(p) = buf.pop(now) {
                if let Some(prev) = last {
                    let step = p.sequence_number.wrapping_sub(prev) as i16;
                    // In order, except right after a followed restart (marked as loss).
                    assert!(step > 0 || p.loss > 0, "{prev} then {}", p.sequence_number);
                }
                last = Some(p.sequence_number);
                out_count += 1;
            }
            if let Some(deadline) = buf.deadline() {
                assert!(deadline <= ms(base, i / 4 + 100));
            }
        }
        while buf.flush().is_some() {
            out_count += 1;
        }
        let stats = buf.stats();
        assert_eq!(stats.released, out_count);
        assert!(stats.duplicates > 0 && stats.late > 0 && stats.lost > 0);
    }
}
