//! The clip's audio: an Ogg Opus file (RFC 7845) read into packets by bridge-proto's Ogg reader
//! ([`bridge_proto::media::ogg`]), each timed by its TOC ([`bridge_proto::media::opus`]), and held
//! to what a clip must be: an `OpusHead` RTP can carry, an `OpusTags`, then audio packets of
//! [`AUDIO_FRAME_MS`](super::AUDIO_FRAME_MS) each.

use bridge_proto::media::ogg;
use bridge_proto::media::opus::OpusPacket;
use bytes::Bytes;

use super::{AUDIO_PACKET_SAMPLES, ClipError};

/// The audio packets of an Ogg Opus file: after the `OpusHead` and `OpusTags`, each checked to
/// last [`AUDIO_FRAME_MS`](super::AUDIO_FRAME_MS).
pub(super) fn opus_packets(ogg: &[u8]) -> Result<Vec<Bytes>, ClipError> {
    let mut packets = ogg::packets(ogg)?.into_iter();
    let head = packets.next().ok_or(ClipError::NoOpusHead)?;
    if !head.starts_with(b"OpusHead") {
        return Err(ClipError::NoOpusHead);
    }
    // Version (major 0), channel count, mapping family (RFC 7845 §5.1).
    match (head.get(8), head.get(9), head.get(18)) {
        (Some(version), Some(1 | 2), Some(0)) if version >> 4 == 0 => {}
        _ => return Err(ClipError::BadOpusHead),
    }
    if !packets.next().is_some_and(|p| p.starts_with(b"OpusTags")) {
        return Err(ClipError::NoOpusTags);
    }
    let audio: Vec<Bytes> = packets.collect();
    for (packet, data) in audio.iter().enumerate() {
        let samples = opus_samples(data).ok_or(ClipError::BadOpusPacket { packet })?;
        if samples != AUDIO_PACKET_SAMPLES {
            return Err(ClipError::OpusDuration { packet, samples });
        }
    }
    if audio.is_empty() {
        return Err(ClipError::NoAudio);
    }
    Ok(audio)
}

/// How long an Opus packet lasts in samples at 48 kHz (RFC 6716 §3.1); `None` if its framing is
/// malformed (RFC 6716 §3.4: empty, no frame, over 120 ms, lengths past its end).
pub(super) fn opus_samples(packet: &[u8]) -> Option<u32> {
    OpusPacket::parse(packet).ok().map(|p| p.samples())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_durations_from_toc() {
        assert_eq!(opus_samples(&[]), None);
        assert_eq!(opus_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_samples(&[0x18]), Some(2880)); // SILK NB 60 ms
        assert_eq!(opus_samples(&[0x19]), Some(5760)); // two of them
        assert_eq!(opus_samples(&[0x70]), Some(480)); // hybrid FB 10 ms
        assert_eq!(opus_samples(&[0xF8]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_samples(&[0xE3, 0x03]), Some(360)); // CELT FB 2.5 ms x 3
        assert_eq!(opus_samples(&[0xE3, 0x00]), None); // code 3 with no frame
        assert_eq!(opus_samples(&[0xE3]), None); // code 3 with no count
        assert_eq!(opus_samples(&[0xFB, 0x07]), None); // 140 ms
    }

    /// The Ogg checks themselves are bridge-proto's (and tested there); the clip's pages pass
    /// them, and its errors come through as they are.
    #[test]
    fn clip_ogg_pages() {
        let data = super::super::clip::CLIP_OGG_OPUS;
        // The known CRC of a real page: the clip's first (the OpusHead, 47 bytes).
        assert_eq!(
            ogg::crc(&data[..47]),
            u32::from_le_bytes(data[22..26].try_into().unwrap())
        );
        let page = ogg::Page::parse(data, 0).unwrap();
        assert_eq!((page.encoded_len(), page.segments), (47, &[19][..]));
        assert_eq!(
            opus_packets(&data[..47]).unwrap_err(),
            ClipError::NoOpusTags
        );
        assert_eq!(
            opus_packets(&data[47..]).unwrap_err(),
            ClipError::Ogg(ogg::OggError::NoBeginningOfStream)
        );
    }
}
