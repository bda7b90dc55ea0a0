//! An RTP packet as media code sees it (RFC 3550 §5.1): the fields the reorder buffer and the
//! depacketizers read, and the loss mark the reorder buffer sets for the depacketizers.

use bytes::Bytes;

/// The parts of an RTP packet media code uses; built by the RTC layer from whatever its stack
/// hands over, so that media/ names no WebRTC types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Synchronization source.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp, in the payload format's clock.
    pub timestamp: u32,
    /// Marker bit: for video, the last packet of an access unit.
    pub marker: bool,
    /// Payload with padding already removed; empty for a padding-only packet.
    pub payload: Bytes,
    /// Packets given up on just before this one (0 if none). Set by the
    /// [`ReorderBuffer`](super::reorder::ReorderBuffer) on output; ignored on input.
    pub loss: u16,
}

impl RtpPacket {
    /// A packet with no loss before it.
    pub fn new(
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    ) -> Self {
        Self {
            ssrc,
            sequence_number,
            timestamp,
            marker,
            payload,
            loss: 0,
        }
    }
}
