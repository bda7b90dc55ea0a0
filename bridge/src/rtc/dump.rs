//! `--rtp-dump DIR`: every received RTP packet of a session, after SRTP, written to
//! `DIR/{stream}-{session}-{kind}.rtp` as a 2-byte big-endian length and a plain RTP packet
//! (12-byte header, no extensions, then the payload). For bug reports and for capturing test
//! vectors from real publishers; the test data in `bridge/tests/data` uses the same format.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::media::reorder::RtpPacket;

/// One open dump file.
#[derive(Debug)]
pub struct RtpDump {
    out: BufWriter<File>,
}

impl RtpDump {
    /// Creates `dir/{name}.rtp`.
    pub fn create(dir: &Path, name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            out: BufWriter::new(File::create(dir.join(format!("{name}.rtp")))?),
        })
    }

    /// Appends one packet of payload type `payload_type`; a packet too large for the 2-byte
    /// length is skipped.
    pub fn write(&mut self, payload_type: u8, packet: &RtpPacket) -> std::io::Result<()> {
        let Ok(len) = u16::try_from(12 + packet.payload.len()) else {
            return Ok(());
        };
        let mut head = [0u8; 14];
        head[..2].copy_from_slice(&len.to_be_bytes());
        head[2] = 0x80;
        head[3] = (u8::from(packet.marker) << 7) | (payload_type & 0x7f);
        head[4..6].copy_from_slice(&packet.sequence_number.to_be_bytes());
        head[6..10].copy_from_slice(&packet.timestamp.to_be_bytes());
        head[10..14].copy_from_slice(&packet.ssrc.to_be_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&packet.payload)
    }
}

impl Drop for RtpDump {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}
