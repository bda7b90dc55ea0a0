//! Media that arrives while an ICE restart is under way.
//!
//! `rtc` 0.21 forgets the selected candidate pair the moment a restart is applied and drops
//! every non-STUN datagram until the new ICE session selects one. A publisher does what RFC 8445
//! §9 asks: it keeps sending on the old pair until the new one is nominated. So without a hold,
//! every packet of the restart's round trips is lost (a Chromium publisher, debug build, busy
//! machine: 23 video packets, most of a keyframe). The DTLS association and its SRTP keys outlive
//! the restart, so those datagrams are still good: they are held here and handed to the peer
//! connection once it is connected again, in arrival order.

use std::collections::VecDeque;

use super::udp::Datagram;

/// At most this many datagrams are held: a few seconds of a 1 Mb/s publisher, a bounded amount
/// of memory (≈ 1.5 MB) for a restart that never completes.
pub const MAX_HELD: usize = 1024;

/// Holds SRTP/SRTCP while a restart is under way.
#[derive(Debug, Default)]
pub struct RestartHold {
    restarting: bool,
    held: VecDeque<Datagram>,
    /// Datagrams refused because the hold was full, since the restart began.
    overflow: u64,
}

impl RestartHold {
    /// A restart was applied: media is held from now on.
    pub fn begin(&mut self) {
        self.restarting = true;
    }

    /// Takes `d` if it must wait for the restart to complete; gives it back otherwise. STUN and
    /// DTLS always go through (the restart itself is made of STUN; DTLS retransmits on its own).
    pub fn hold(&mut self, d: Datagram) -> Option<Datagram> {
        // RFC 7983: RTP and RTCP start with 128..=191.
        if !self.restarting || !matches!(d.data.first(), Some(128..=191)) {
            return Some(d);
        }
        if self.held.len() < MAX_HELD {
            self.held.push_back(d);
        } else {
            self.overflow += 1;
        }
        None
    }

    /// The restart completed (the peer connection is connected again): what was held, oldest
    /// first, and how many datagrams did not fit.
    pub fn release(&mut self) -> (VecDeque<Datagram>, u64) {
        self.restarting = false;
        (
            std::mem::take(&mut self.held),
            std::mem::take(&mut self.overflow),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;

    use super::*;

    fn datagram(first: u8, n: u8) -> Datagram {
        Datagram {
            now: Instant::now(),
            from: "127.0.0.1:5000".parse().unwrap(),
            data: BytesMut::from(&[first, n][..]),
        }
    }

    #[test]
    fn media_waits_for_the_restart_and_the_rest_goes_through() {
        let mut hold = RestartHold::default();
        // No restart: everything goes through.
        assert!(hold.hold(datagram(0x80, 0)).is_some());

        hold.begin();
        // (first byte, held?) STUN 0..=3, DTLS 20..=63, RTP/RTCP 128..=191, anything else.
        let table = [
            (0x00, false),
            (0x01, false),
            (22, false),
            (128, true),
            (0x90, true),
            (200, false),
            (191, true),
            (192, false),
        ];
        for (n, (first, held)) in table.into_iter().enumerate() {
            assert_eq!(
                hold.hold(datagram(first, n as u8)).is_none(),
                held,
                "first byte {first}"
            );
        }
        let (released, overflow) = hold.release();
        assert_eq!(overflow, 0);
        let order: Vec<u8> = released.iter().map(|d| d.data[1]).collect();
        assert_eq!(order, [3, 4, 6], "oldest first, only media");
        // Released: media goes through again.
        assert!(hold.hold(datagram(0x80, 9)).is_some());
        assert!(hold.release().0.is_empty());
    }

    #[test]
    fn a_restart_that_never_completes_holds_a_bounded_amount() {
        let mut hold = RestartHold::default();
        hold.begin();
        for n in 0..MAX_HELD + 10 {
            assert!(hold.hold(datagram(0x80, n as u8)).is_none());
        }
        let (released, overflow) = hold.release();
        assert_eq!(released.len(), MAX_HELD);
        assert_eq!(overflow, 10);
        assert_eq!(released[0].data[1], 0, "the first ones are kept");
    }
}
