//! The parameter sets in force for one H.264 stream, and whether an access unit changes them:
//! the one change tracker the outputs share (FLV sends a new sequence header, fMP4 describes its
//! init segment by them, MPEG-TS repeats them before key frames that lack them).
//!
//! Parameter sets arrive in band, in the access units themselves (the depacketizer puts them
//! before every IDR). A unit's SPSs replace the SPSs in force, its PPSs the PPSs; a unit with a
//! new PPS alone keeps the SPS. Sets are compared byte for byte, so a publisher that repeats its
//! sets before every key frame changes nothing.
//!
//! The tracker is a value: [`ParameterSets::changed_by`] says what the sets would become without
//! changing them, so an output can first act on the new sets (write a header, which may fail)
//! and only then put them in force. How an output uses it:
//!
//! ```
//! # use bytes::Bytes;
//! use bridge_proto::media::h264::params::ParameterSets;
//!
//! let mut in_force = ParameterSets::new();
//! # let unit: Vec<Bytes> = vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e]),
//! #     Bytes::from_static(&[0x68, 0xce]), Bytes::from_static(&[0x65, 0x88])];
//! // For each access unit:
//! if let Some(next) = in_force.changed_by(&unit) {
//!     if next.is_complete() {
//!         // New decoder configuration: an FLV sequence header from `next.sps()` and
//!         // `next.pps()`, or a new fMP4 init segment (after a discontinuity when there was one
//!         // before); on failure keep the old sets by returning here.
//!     }
//!     in_force = next;
//! }
//! // Then, writing the unit's sample: leave out the sets the configuration already holds.
//! let sample: Vec<&Bytes> = unit.iter().filter(|nal| !in_force.holds(nal)).collect();
//! assert_eq!(sample.len(), 1);
//! ```

use bytes::Bytes;

use super::avcc::{self, AvccError};
use super::nal::{NAL_PPS, NAL_SPS, nal_type};

/// The SPSs and PPSs in force (NAL units, header byte included), in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterSets {
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
}

impl ParameterSets {
    /// No parameter sets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The parameter sets a unit carries itself, nothing else.
    pub fn from_nalus(nalus: &[Bytes]) -> Self {
        Self {
            sps: of_type(nalus, NAL_SPS).cloned().collect(),
            pps: of_type(nalus, NAL_PPS).cloned().collect(),
        }
    }

    /// The sets in force after `nalus`, if they differ from these: the unit's SPSs (if it has
    /// any) in place of these SPSs, its PPSs (if any) in place of these PPSs. `None` when the
    /// unit carries no parameter sets, or the same ones.
    pub fn changed_by(&self, nalus: &[Bytes]) -> Option<Self> {
        // One pass, allocating nothing: this runs for every access unit of every output, and
        // most units carry no parameter sets at all.
        let (mut sps, mut pps) = (Seen::default(), Seen::default());
        for nal in nalus {
            match nal_type(nal) {
                Some(NAL_SPS) => sps.see(nal, &self.sps),
                Some(NAL_PPS) => pps.see(nal, &self.pps),
                _ => {}
            }
        }
        let (new_sps, new_pps) = (sps.replaces(&self.sps), pps.replaces(&self.pps));
        if !new_sps && !new_pps {
            return None;
        }
        let take = |kind, changed: bool, current: &Vec<Bytes>| {
            if changed {
                of_type(nalus, kind).cloned().collect()
            } else {
                current.clone()
            }
        };
        Some(Self {
            sps: take(NAL_SPS, new_sps, &self.sps),
            pps: take(NAL_PPS, new_pps, &self.pps),
        })
    }

    /// The SPSs.
    pub fn sps(&self) -> &[Bytes] {
        &self.sps
    }

    /// The PPSs.
    pub fn pps(&self) -> &[Bytes] {
        &self.pps
    }

    /// At least one SPS and one PPS: enough to configure a decoder.
    pub fn is_complete(&self) -> bool {
        !self.sps.is_empty() && !self.pps.is_empty()
    }

    /// Whether a NAL unit is one of these sets, byte for byte (and so need not be repeated in a
    /// sample whose decoder configuration holds them).
    pub fn holds(&self, nal: &[u8]) -> bool {
        self.sps.iter().chain(&self.pps).any(|set| set[..] == *nal)
    }

    /// The AVCDecoderConfigurationRecord of these sets (see [`avcc`]).
    pub fn record(&self) -> Result<Bytes, AvccError> {
        avcc::record(&self.sps, &self.pps)
    }
}

fn of_type(nalus: &[Bytes], kind: u8) -> impl Iterator<Item = &Bytes> {
    nalus.iter().filter(move |n| nal_type(n) == Some(kind))
}

/// A unit's sets of one kind, counted and compared in order with the sets in force.
#[derive(Default)]
struct Seen {
    count: usize,
    differs: bool,
}

impl Seen {
    fn see(&mut self, nal: &Bytes, current: &[Bytes]) {
        self.differs |= current.get(self.count) != Some(nal);
        self.count += 1;
    }

    /// The unit has sets of this kind, and they are not the ones in force.
    fn replaces(&self, current: &[Bytes]) -> bool {
        self.count > 0 && (self.differs || self.count != current.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::hex;

    const SPS: &str = "6742c01eda0280bfe5c044000003000400000300f23c58ba80";
    const PPS: &str = "68ce3c80";

    fn unit(nalus: &[&str]) -> Vec<Bytes> {
        nalus.iter().map(|s| hex(s)).collect()
    }

    #[test]
    fn tracks_changes() {
        let mut sets = ParameterSets::new();
        assert!(!sets.is_complete());
        // Pictures and delimiters change nothing.
        assert_eq!(sets.changed_by(&unit(&["0910", "6588", ""])), None);
        // A PPS alone: in force, but not enough for a decoder.
        let next = sets.changed_by(&unit(&[PPS, "6588"])).unwrap();
        assert!(!next.is_complete());
        sets = next;
        // Then an SPS: complete, with the PPS from before.
        let next = sets.changed_by(&unit(&["0910", SPS, "6588"])).unwrap();
        assert!(next.is_complete());
        assert_eq!((next.sps(), next.pps()), (&[hex(SPS)][..], &[hex(PPS)][..]));
        sets = next;
        // The same sets again (a publisher that repeats them): no change.
        assert_eq!(sets.changed_by(&unit(&[SPS, PPS, "6588"])), None);
        assert_eq!(sets.changed_by(&unit(&[SPS, "6588"])), None);
        // A new PPS keeps the SPS; two PPSs replace one.
        let next = sets.changed_by(&unit(&["68ce3c81", "6588"])).unwrap();
        assert_eq!(
            (next.sps(), next.pps()),
            (&[hex(SPS)][..], &[hex("68ce3c81")][..])
        );
        let two = sets.changed_by(&unit(&[PPS, "68ce3c81"])).unwrap();
        assert_eq!(two.pps(), [hex(PPS), hex("68ce3c81")]);
        // changed_by does not change what is in force.
        assert_eq!(sets.pps(), [hex(PPS)]);
        assert_eq!(
            sets,
            ParameterSets::from_nalus(&unit(&["0910", SPS, PPS, "6588"]))
        );
    }

    #[test]
    fn holds_byte_for_byte() {
        let sets = ParameterSets::from_nalus(&unit(&[SPS, PPS]));
        assert!(sets.holds(&hex(SPS)) && sets.holds(&hex(PPS)));
        assert!(!sets.holds(&hex("68ce3c81")));
        assert!(!sets.holds(&hex("6588")));
        assert!(!sets.holds(&[]));
        assert_eq!(
            sets.record().unwrap(),
            avcc::record(&[hex(SPS)], &[hex(PPS)]).unwrap()
        );
        assert!(ParameterSets::new().record().is_err());
    }
}
