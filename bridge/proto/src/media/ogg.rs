//! Ogg (RFC 3533): pages and the packets they carry, as `.opus` and `.ogg` files hold Opus.
//!
//! [`Page::parse`] reads and checks one page (capture pattern, version, length, CRC);
//! [`packets`] reads a single-stream file into its packets, checking that the pages follow on
//! (serial and sequence numbers, continuation flags). Neither panics on any input; anything
//! unexpected is an [`OggError`] that says where.

use bytes::Bytes;
use thiserror::Error;

/// Page header flag: the page's first packet continues one from the previous page.
pub const CONTINUED: u8 = 0x01;
/// Page header flag: the first page of a logical stream.
pub const BEGINNING_OF_STREAM: u8 = 0x02;
/// Page header flag: the last page of a logical stream.
pub const END_OF_STREAM: u8 = 0x04;
/// Bytes of a page header before its segment table.
pub const HEADER_LEN: usize = 27;
/// A segment this long continues its packet in the next segment; a shorter one ends it.
const FULL_SEGMENT: u8 = 255;

/// Why Ogg data cannot be read. Offsets are byte offsets in the data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OggError {
    /// No page begins where one should (no `OggS`).
    #[error("Ogg: no page at byte {offset}")]
    NoPage {
        /// Where the page should begin.
        offset: usize,
    },
    /// A page has a version other than 0.
    #[error("Ogg: the page at byte {offset} has version {version}")]
    PageVersion {
        /// Where the page begins.
        offset: usize,
        /// Its version.
        version: u8,
    },
    /// A page goes past the end of the data.
    #[error("Ogg: the page at byte {offset} is truncated")]
    TruncatedPage {
        /// Where the page begins.
        offset: usize,
    },
    /// A page's CRC does not match its bytes.
    #[error("Ogg: the page at byte {offset} fails its CRC")]
    PageCrc {
        /// Where the page begins.
        offset: usize,
    },
    /// The first page is not marked as the beginning of a stream.
    #[error("Ogg: the first page is not a beginning-of-stream page")]
    NoBeginningOfStream,
    /// A page belongs to another logical stream (only one stream is supported).
    #[error("Ogg: the page at byte {offset} is of stream {serial:#010x}, not {expected:#010x}")]
    OtherStream {
        /// Where the page begins.
        offset: usize,
        /// Its stream serial number.
        serial: u32,
        /// The serial number of the first page.
        expected: u32,
    },
    /// A page is missing or out of order.
    #[error("Ogg: the page at byte {offset} has sequence number {sequence}, not {expected}")]
    PageSequence {
        /// Where the page begins.
        offset: usize,
        /// Its sequence number.
        sequence: u32,
        /// The number that should follow the previous page's.
        expected: u32,
    },
    /// A page's continuation flag disagrees with the previous page: it says it continues a
    /// packet that the previous page finished, or does not continue one left open.
    #[error("Ogg: the page at byte {offset} {}", if *.continued {
        "continues a packet, but none is open"
    } else {
        "does not continue the packet the previous page left open"
    })]
    Continuation {
        /// Where the page begins.
        offset: usize,
        /// Whether its header says it continues a packet.
        continued: bool,
    },
    /// The data ends in the middle of a packet.
    #[error("Ogg: the last packet is unfinished")]
    UnfinishedPacket,
}

/// One page, checked, borrowing from the data it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    /// Where the page begins in the data.
    pub offset: usize,
    /// Header flags: [`CONTINUED`], [`BEGINNING_OF_STREAM`], [`END_OF_STREAM`].
    pub flags: u8,
    /// Codec-defined position (for Opus: 48 kHz samples up to the last packet that ends here).
    pub granule_position: u64,
    /// Serial number of the logical stream.
    pub serial: u32,
    /// Sequence number of the page in its stream.
    pub sequence: u32,
    /// The segment table: one length (0 to 255) per segment of the body.
    pub segments: &'a [u8],
    /// The segments, back to back.
    pub body: &'a [u8],
}

impl<'a> Page<'a> {
    /// The page at `offset` in `data`, its capture pattern, version, length and CRC checked.
    pub fn parse(data: &'a [u8], offset: usize) -> Result<Self, OggError> {
        let truncated = || OggError::TruncatedPage { offset };
        let header = data
            .get(offset..)
            .and_then(|rest| rest.get(..HEADER_LEN))
            .ok_or_else(truncated)?;
        let [b'O', b'g', b'g', b'S', version, flags, ..] = header else {
            return Err(OggError::NoPage { offset });
        };
        if *version != 0 {
            return Err(OggError::PageVersion {
                offset,
                version: *version,
            });
        }
        let table_start = offset + HEADER_LEN;
        let [segment_count] = field(header, HEADER_LEN - 1);
        let table_end = table_start + usize::from(segment_count);
        let segments = data.get(table_start..table_end).ok_or_else(truncated)?;
        let page_end = table_end + segments.iter().map(|&len| usize::from(len)).sum::<usize>();
        let page = data.get(offset..page_end).ok_or_else(truncated)?;
        if crc(page) != u32::from_le_bytes(field(header, 22)) {
            return Err(OggError::PageCrc { offset });
        }
        Ok(Self {
            offset,
            flags: *flags,
            granule_position: u64::from_le_bytes(field(header, 6)),
            serial: u32::from_le_bytes(field(header, 14)),
            sequence: u32::from_le_bytes(field(header, 18)),
            segments,
            body: data.get(table_end..page_end).ok_or_else(truncated)?,
        })
    }

    /// How many bytes the page takes, header and segment table included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.segments.len() + self.body.len()
    }

    /// Whether the page's first packet continues one from the previous page.
    pub fn continued(&self) -> bool {
        self.flags & CONTINUED != 0
    }
}

/// The `N` bytes at `at` in a page header (zeros past its end, which the header fields of a
/// [`HEADER_LEN`]-byte header never reach).
fn field<const N: usize>(header: &[u8], at: usize) -> [u8; N] {
    header
        .get(at..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

/// The packets of a single-stream Ogg file, in order. Every page's CRC is checked, the first
/// must begin the stream, and each must carry the first page's serial number and the next
/// sequence number and continue a packet exactly when the previous page left one open. A
/// packet is the run of segments up to one shorter than 255 bytes and may span pages.
pub fn packets(data: &[u8]) -> Result<Vec<Bytes>, OggError> {
    let mut packets = Vec::new();
    // The packet the previous page left unfinished.
    let mut open: Option<Vec<u8>> = None;
    // Serial number of the stream and sequence number of the next page.
    let mut stream: Option<(u32, u32)> = None;
    let mut offset = 0;
    while offset < data.len() {
        let page = Page::parse(data, offset)?;
        match stream {
            None if page.flags & BEGINNING_OF_STREAM == 0 => {
                return Err(OggError::NoBeginningOfStream);
            }
            Some((expected, _)) if page.serial != expected => {
                return Err(OggError::OtherStream {
                    offset,
                    serial: page.serial,
                    expected,
                });
            }
            Some((_, expected)) if page.sequence != expected => {
                return Err(OggError::PageSequence {
                    offset,
                    sequence: page.sequence,
                    expected,
                });
            }
            _ => stream = Some((page.serial, page.sequence.wrapping_add(1))),
        }
        let continued = page.continued();
        if continued != open.is_some() {
            return Err(OggError::Continuation { offset, continued });
        }
        let mut body = page.body;
        for &len in page.segments {
            // Page::parse checked that the body holds every segment.
            let (segment, rest) = body
                .split_at_checked(usize::from(len))
                .ok_or(OggError::TruncatedPage { offset })?;
            open.get_or_insert_with(Vec::new).extend_from_slice(segment);
            if len < FULL_SEGMENT {
                packets.extend(open.take().map(Bytes::from));
            }
            body = rest;
        }
        offset += page.encoded_len();
    }
    if open.is_some() {
        return Err(OggError::UnfinishedPacket);
    }
    Ok(packets)
}

/// The CRC-32 of an Ogg page (polynomial 0x04C11DB7, MSB first, initial value and final XOR 0),
/// computed with its own CRC field (bytes 22 to 25) taken as zero.
pub fn crc(page: &[u8]) -> u32 {
    page.iter()
        .enumerate()
        .map(|(i, &b)| if (22..26).contains(&i) { 0 } else { b })
        .fold(0u32, |mut crc, b| {
            crc ^= u32::from(b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
            }
            crc
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    /// One page of stream 0x12345678 with a correct CRC.
    fn page(flags: u8, sequence: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
        let mut page = b"OggS".to_vec();
        page.extend_from_slice(&[0, flags]);
        page.extend_from_slice(&[0; 8]); // granule position
        page.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        page.extend_from_slice(&sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(lacing);
        page.extend_from_slice(body);
        let crc = crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        page
    }

    fn vecs(packets: Vec<Bytes>) -> Vec<Vec<u8>> {
        packets.into_iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn packets_across_pages() {
        // A 300-byte packet across two pages, then a 2-byte one; an empty packet.
        let big: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let mut file = page(BEGINNING_OF_STREAM, 0, &[255], &big[..255]);
        let mut tail = big[255..].to_vec();
        tail.extend_from_slice(&[7, 8]);
        file.extend(page(CONTINUED, 1, &[45, 2, 0], &tail));
        assert_eq!(
            vecs(packets(&file).unwrap()),
            vec![big.clone(), vec![7, 8], vec![]]
        );
        let first = Page::parse(&file, 0).unwrap();
        assert_eq!(
            (
                first.encoded_len(),
                first.serial,
                first.sequence,
                first.continued()
            ),
            (283, 0x1234_5678, 0, false)
        );
        assert!(Page::parse(&file, 283).unwrap().continued());
        assert_eq!(packets(&[]), Ok(vec![]));
    }

    #[test]
    fn stream_errors() {
        let big: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let first = page(BEGINNING_OF_STREAM, 0, &[255], &big[..255]);
        let second = |flags, sequence| page(flags, sequence, &[45], &big[255..]);
        let cases = [
            (
                [first.clone(), second(0, 1)].concat(),
                OggError::Continuation {
                    offset: 283,
                    continued: false,
                },
            ),
            (
                [first.clone(), second(CONTINUED, 2)].concat(),
                OggError::PageSequence {
                    offset: 283,
                    sequence: 2,
                    expected: 1,
                },
            ),
            (first.clone(), OggError::UnfinishedPacket),
            (
                page(BEGINNING_OF_STREAM | CONTINUED, 0, &[1], &[1]),
                OggError::Continuation {
                    offset: 0,
                    continued: true,
                },
            ),
            (second(CONTINUED, 1), OggError::NoBeginningOfStream),
        ];
        for (data, error) in cases {
            assert_eq!(packets(&data).unwrap_err(), error);
        }
        let mut other = page(BEGINNING_OF_STREAM, 0, &[1], &[1]);
        let mut next = page(0, 1, &[1], &[1]);
        next[14] ^= 1;
        let crc = crc(&next);
        next[22..26].copy_from_slice(&crc.to_le_bytes());
        other.extend(next);
        assert_eq!(
            packets(&other).unwrap_err(),
            OggError::OtherStream {
                offset: 29,
                serial: 0x1234_5679,
                expected: 0x1234_5678
            }
        );
    }

    #[test]
    fn page_errors() {
        let good = page(BEGINNING_OF_STREAM, 0, &[3], &[1, 2, 3]);
        let mut v1 = good.clone();
        v1[4] = 1;
        assert_eq!(
            packets(&v1).unwrap_err(),
            OggError::PageVersion {
                offset: 0,
                version: 1
            }
        );
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        assert_eq!(
            packets(&flipped).unwrap_err(),
            OggError::PageCrc { offset: 0 }
        );
        let mut junk = good.clone();
        junk.extend_from_slice(&[0; HEADER_LEN]);
        assert_eq!(packets(&junk).unwrap_err(), OggError::NoPage { offset: 31 });
        for len in [1, 4, 26, 27, 30] {
            assert_eq!(
                packets(&good[..len]).unwrap_err(),
                OggError::TruncatedPage { offset: 0 },
                "{len}"
            );
        }
        assert_eq!(
            Page::parse(&good, 32),
            Err(OggError::TruncatedPage { offset: 32 })
        );
        assert_eq!(
            Page::parse(&good, usize::MAX),
            Err(OggError::TruncatedPage { offset: usize::MAX })
        );
    }

    /// The checked-in Ogg Opus files pass every check, and the known CRC of a real page.
    #[test]
    fn real_files() {
        for (name, channels) in [
            ("opus-music-stereo-96k.ogg", 2),
            ("opus-voice-mono-10k-silk.ogg", 1),
            ("opus-voice-mono-20k-hybrid.ogg", 1),
        ] {
            let data = testdata::read(name);
            let packets = packets(&data).unwrap();
            assert!(packets[0].starts_with(b"OpusHead"), "{name}");
            assert_eq!(packets[0][9], channels, "{name}");
            assert!(packets[1].starts_with(b"OpusTags"), "{name}");
            assert!(packets.len() > 10, "{name}");
            let first = Page::parse(&data, 0).unwrap();
            assert_eq!(first.flags, BEGINNING_OF_STREAM, "{name}");
            assert_eq!(first.granule_position, 0, "{name}");
            let second = Page::parse(&data, first.encoded_len()).unwrap();
            assert_eq!((second.serial, second.sequence), (first.serial, 1));
            assert_eq!(
                crc(&data[..first.encoded_len()]),
                u32::from_le_bytes(data[22..26].try_into().unwrap())
            );
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rand = testdata::xorshift(0x4f67_6753_0002_0000_u64);
        let base = [
            page(BEGINNING_OF_STREAM, 0, &[255], &[9; 255]),
            page(CONTINUED, 1, &[4, 0], &[1, 2, 3, 4]),
        ]
        .concat();
        for _ in 0..2_000 {
            let mut data = base.clone();
            for _ in 0..(rand() % 4) {
                let at = (rand() as usize) % data.len();
                data[at] = rand() as u8;
            }
            data.truncate((rand() as usize) % (data.len() + 1));
            let _ = packets(&data);
        }
    }
}
