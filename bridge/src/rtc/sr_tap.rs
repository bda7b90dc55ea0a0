//! Lets sender reports through to the session. rtc's interceptor chain ends inbound RTCP at its
//! terminus unless an interceptor marks a packet for the application; the session needs each
//! SR's NTP <-> RTP pair to put audio and video on one timeline, so this marks exactly those.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Marks inbound RTCP compound packets that contain a sender report.
#[derive(Default)]
pub struct SenderReportTap {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl std::fmt::Debug for SenderReportTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderReportTap").finish_non_exhaustive()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReportTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let has_sr = matches!(&msg.message.packet, Packet::Rtcp(packets)
            if packets.iter().any(|p| p.as_any().downcast_ref::<SenderReport>().is_some()));
        if has_sr && !msg.message.has(&Attribute::DeliverToApplication) {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for SenderReportTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
