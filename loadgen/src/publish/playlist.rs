//! The media playlist as an LL-HLS client needs it: segments with their parts, the init section
//! each one needs, the preload hint, whether the server blocks reloads, and where the next
//! blocking reload should wait (RFC 8216bis §4.4.4.9, §4.4.5.2, §6.2.5.2).
//!
//! m3u8-rs reads the standard tags (media sequence, target duration, segments, end list). It
//! knows no LL-HLS tag, and drops the tags after the last segment, which is where the parts of
//! the segment in progress and the preload hint are. So the LL-HLS tags (`EXT-X-PART`,
//! `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL`, `EXT-X-SKIP`) and `EXT-X-MAP` are read from
//! the lines here, each assigned to the segment whose URI line follows it; the two readings must
//! agree on the number of segments.
//!
//! The multivariant playlist (`main.m3u8`) is read too, for the ladder a simulcast publisher
//! gets: its variants (`EXT-X-STREAM-INF`) and audio renditions (`EXT-X-MEDIA:TYPE=AUDIO`).

use std::time::Duration;

/// Why a playlist could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// Not a media playlist m3u8-rs can read.
    #[error("not an HLS media playlist: {0}")]
    Syntax(String),
    /// An LL-HLS tag lacks an attribute it must have.
    #[error("#EXT-X-{tag} without {attribute}")]
    MissingAttribute {
        /// The tag, after `#EXT-X-`.
        tag: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute's value cannot be read.
    #[error("#EXT-X-{tag}: bad {attribute}={value:?}")]
    BadAttribute {
        /// The tag, after `#EXT-X-`.
        tag: &'static str,
        /// The attribute.
        attribute: &'static str,
        /// The value as written.
        value: String,
    },
    /// The line scan and m3u8-rs disagree on the segments.
    #[error("{lines} segment URIs in the text, {parsed} segments parsed")]
    Inconsistent {
        /// URI lines counted here.
        lines: usize,
        /// Segments m3u8-rs returned.
        parsed: usize,
    },
}

/// A partial segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// As written (relative to the playlist).
    pub uri: String,
    /// `DURATION`, seconds.
    pub duration: f64,
    /// `INDEPENDENT=YES`: starts with a key frame.
    pub independent: bool,
}

/// A media segment: complete (with a URI) or in progress (only parts so far).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// The whole segment's URI; `None` while it is in progress.
    pub uri: Option<String>,
    /// `EXTINF` duration, seconds (0 in progress).
    pub duration: f64,
    /// Its parts, in order (none in plain HLS, or once they left the playlist).
    pub parts: Vec<Part>,
    /// The URI of the init section (`EXT-X-MAP`) it needs.
    pub map: Option<String>,
    /// `EXT-X-DISCONTINUITY` before it.
    pub discontinuity: bool,
}

/// `EXT-X-PRELOAD-HINT` of `TYPE=PART`: the part the server will publish next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadHint {
    /// As written.
    pub uri: String,
    /// `BYTERANGE-START`, when the hint is a range of a larger resource.
    pub byterange_start: Option<u64>,
}

/// A parsed media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`.
    pub target_duration: Duration,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-ENDLIST`: no more segments will come.
    pub end_list: bool,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
    /// Segments in order, the one in progress (if any) last.
    pub segments: Vec<Segment>,
    /// The part hint, if any.
    pub preload_hint: Option<PreloadHint>,
}

/// A variant of a multivariant playlist (`EXT-X-STREAM-INF`; I-frame-only ones are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Its media playlist, as written (relative to the multivariant playlist).
    pub uri: String,
    /// `BANDWIDTH`, bits per second.
    pub bandwidth: u64,
    /// `RESOLUTION`: width, height.
    pub resolution: Option<(u32, u32)>,
    /// `AUDIO`: the group of audio renditions played with it.
    pub audio_group: Option<String>,
}

/// An audio rendition with its own media playlist (`EXT-X-MEDIA:TYPE=AUDIO` with a `URI`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRendition {
    /// Its media playlist, as written.
    pub uri: String,
    /// `GROUP-ID`.
    pub group_id: String,
}

/// A parsed multivariant playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultivariantPlaylist {
    /// The variants, in the playlist's order.
    pub variants: Vec<Variant>,
    /// The audio renditions that have a URI, in order.
    pub audio: Vec<AudioRendition>,
}

impl MultivariantPlaylist {
    /// Reads a multivariant playlist.
    pub fn parse(text: &[u8]) -> Result<MultivariantPlaylist, PlaylistError> {
        if !String::from_utf8_lossy(text)
            .trim_start()
            .starts_with("#EXTM3U")
        {
            return Err(PlaylistError::Syntax("no #EXTM3U".into()));
        }
        let parsed = m3u8_rs::parse_master_playlist_res(text)
            .map_err(|e| PlaylistError::Syntax(format!("{e:?}").chars().take(200).collect()))?;
        let variants = parsed
            .variants
            .into_iter()
            .filter(|v| !v.is_i_frame)
            .map(|v| {
                let resolution = v
                    .resolution
                    .map(
                        |r| match (u32::try_from(r.width), u32::try_from(r.height)) {
                            (Ok(w), Ok(h)) => Ok((w, h)),
                            _ => Err(PlaylistError::BadAttribute {
                                tag: "STREAM-INF",
                                attribute: "RESOLUTION",
                                value: format!("{}x{}", r.width, r.height),
                            }),
                        },
                    )
                    .transpose()?;
                Ok(Variant {
                    uri: v.uri,
                    bandwidth: v.bandwidth,
                    resolution,
                    audio_group: v.audio,
                })
            })
            .collect::<Result<_, PlaylistError>>()?;
        let audio = parsed
            .alternatives
            .into_iter()
            .filter(|m| m.media_type == m3u8_rs::AlternativeMediaType::Audio)
            .filter_map(|m| {
                Some(AudioRendition {
                    uri: m.uri?,
                    group_id: m.group_id,
                })
            })
            .collect();
        Ok(MultivariantPlaylist { variants, audio })
    }

    /// The audio rendition played with `variant`: the first of its group that has a URI.
    pub fn audio_of(&self, variant: &Variant) -> Option<&AudioRendition> {
        let group = variant.audio_group.as_deref()?;
        self.audio.iter().find(|a| a.group_id == group)
    }
}

/// Where a blocking reload asks the server to wait (`_HLS_msn`, `_HLS_part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// `_HLS_msn`.
    pub msn: u64,
    /// `_HLS_part`; `None` to wait for the whole segment.
    pub part: Option<u32>,
}

impl Position {
    /// The query that asks for this position.
    pub fn query(&self) -> String {
        match self.part {
            Some(part) => format!("_HLS_msn={}&_HLS_part={part}", self.msn),
            None => format!("_HLS_msn={}", self.msn),
        }
    }
}

impl MediaPlaylist {
    /// Reads a media playlist.
    pub fn parse(text: &[u8]) -> Result<MediaPlaylist, PlaylistError> {
        let parsed = m3u8_rs::parse_media_playlist_res(text)
            .map_err(|e| PlaylistError::Syntax(format!("{e:?}").chars().take(200).collect()))?;
        let text = String::from_utf8_lossy(text);
        if !text.trim_start().starts_with("#EXTM3U") {
            return Err(PlaylistError::Syntax("no #EXTM3U".into()));
        }
        let scan = scan_ll_tags(&text)?;
        if scan.segments.len() != parsed.segments.len() {
            return Err(PlaylistError::Inconsistent {
                lines: scan.segments.len(),
                parsed: parsed.segments.len(),
            });
        }
        // Saturating: a forged sequence number near u64::MAX must not overflow.
        let first_msn = parsed.media_sequence.saturating_add(scan.skipped);
        let msn = |index: usize| first_msn.saturating_add(index as u64);
        let mut segments: Vec<Segment> = parsed
            .segments
            .iter()
            .zip(scan.segments)
            .enumerate()
            .map(|(index, (seg, (parts, map)))| Segment {
                msn: msn(index),
                uri: Some(seg.uri.clone()),
                duration: f64::from(seg.duration),
                parts,
                map,
                discontinuity: seg.discontinuity,
            })
            .collect();
        if !scan.trailing_parts.is_empty() {
            segments.push(Segment {
                msn: msn(segments.len()),
                uri: None,
                duration: 0.0,
                parts: scan.trailing_parts,
                map: scan.trailing_map,
                discontinuity: scan.trailing_discontinuity,
            });
        }
        Ok(MediaPlaylist {
            target_duration: Duration::from_secs(parsed.target_duration),
            media_sequence: parsed.media_sequence,
            end_list: parsed.end_list,
            can_block_reload: scan.can_block_reload,
            segments,
            preload_hint: scan.preload_hint,
        })
    }

    /// Whether any segment lists parts (Low-Latency HLS).
    pub fn has_parts(&self) -> bool {
        self.segments.iter().any(|s| !s.parts.is_empty())
    }

    /// Where a blocking reload should wait for the next thing this playlist does not list yet:
    /// the part after the last one listed, or (without parts) the segment after the last.
    pub fn next_position(&self) -> Position {
        let Some(last) = self.segments.last() else {
            return Position {
                msn: self.media_sequence,
                part: (self.preload_hint.is_some()).then_some(0),
            };
        };
        if !self.has_parts() {
            return Position {
                msn: last.msn.saturating_add(1),
                part: None,
            };
        }
        match last.uri {
            // In progress: the next part of the same segment.
            None => Position {
                msn: last.msn,
                part: Some(u32::try_from(last.parts.len()).unwrap_or(u32::MAX)),
            },
            // Complete: the first part of the next one.
            Some(_) => Position {
                msn: last.msn.saturating_add(1),
                part: Some(0),
            },
        }
    }
}

/// What the line scan found.
#[derive(Debug, Default)]
struct Scan {
    /// Per complete segment: its parts and its map.
    segments: Vec<(Vec<Part>, Option<String>)>,
    trailing_parts: Vec<Part>,
    trailing_map: Option<String>,
    trailing_discontinuity: bool,
    preload_hint: Option<PreloadHint>,
    can_block_reload: bool,
    skipped: u64,
}

fn scan_ll_tags(text: &str) -> Result<Scan, PlaylistError> {
    let mut scan = Scan::default();
    let mut parts = Vec::new();
    let mut map: Option<String> = None;
    let mut discontinuity = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let Some(tag) = line.strip_prefix('#') else {
            // A segment URI: the parts and the map so far are this segment's.
            scan.segments
                .push((std::mem::take(&mut parts), map.clone()));
            discontinuity = false;
            continue;
        };
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        match name {
            "EXT-X-PART" => {
                let attrs = Attributes::parse(value);
                let duration = attrs.required("PART", "DURATION")?;
                parts.push(Part {
                    uri: attrs.required("PART", "URI")?.to_owned(),
                    duration: duration.parse().map_err(|_| PlaylistError::BadAttribute {
                        tag: "PART",
                        attribute: "DURATION",
                        value: duration.to_owned(),
                    })?,
                    independent: attrs.get("INDEPENDENT") == Some("YES"),
                });
            }
            "EXT-X-MAP" => map = Some(Attributes::parse(value).required("MAP", "URI")?.into()),
            "EXT-X-DISCONTINUITY" => discontinuity = true,
            "EXT-X-PRELOAD-HINT" => {
                let attrs = Attributes::parse(value);
                if attrs.required("PRELOAD-HINT", "TYPE")? == "PART" {
                    let start = attrs.get("BYTERANGE-START");
                    scan.preload_hint = Some(PreloadHint {
                        uri: attrs.required("PRELOAD-HINT", "URI")?.to_owned(),
                        byterange_start: start
                            .map(|v| {
                                v.parse().map_err(|_| PlaylistError::BadAttribute {
                                    tag: "PRELOAD-HINT",
                                    attribute: "BYTERANGE-START",
                                    value: v.to_owned(),
                                })
                            })
                            .transpose()?,
                    });
                }
            }
            "EXT-X-SERVER-CONTROL" => {
                scan.can_block_reload =
                    Attributes::parse(value).get("CAN-BLOCK-RELOAD") == Some("YES");
            }
            "EXT-X-SKIP" => {
                let attrs = Attributes::parse(value);
                let n = attrs.required("SKIP", "SKIPPED-SEGMENTS")?;
                scan.skipped = n.parse().map_err(|_| PlaylistError::BadAttribute {
                    tag: "SKIP",
                    attribute: "SKIPPED-SEGMENTS",
                    value: n.to_owned(),
                })?;
            }
            _ => {}
        }
    }
    scan.trailing_parts = parts;
    scan.trailing_map = map;
    scan.trailing_discontinuity = discontinuity;
    Ok(scan)
}

/// An attribute list (RFC 8216 §4.2): `NAME=value` pairs separated by commas, values quoted or
/// not; quotes removed.
#[derive(Debug)]
struct Attributes<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Attributes<'a> {
    fn parse(text: &'a str) -> Self {
        let mut out = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let Some((name, after)) = rest.split_once('=') else {
                break;
            };
            let (value, tail) = match after.strip_prefix('"') {
                Some(quoted) => match quoted.split_once('"') {
                    Some((value, tail)) => (value, tail),
                    None => (quoted, ""),
                },
                None => after.split_once(',').map_or((after, ""), |(v, t)| (v, t)),
            };
            out.push((name.trim(), value));
            rest = tail.trim_start_matches([',', ' ']);
        }
        Attributes(out)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn required(
        &self,
        tag: &'static str,
        attribute: &'static str,
    ) -> Result<&'a str, PlaylistError> {
        self.get(attribute)
            .ok_or(PlaylistError::MissingAttribute { tag, attribute })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// What the bridge serves mid-stream (captured, trimmed to two segments).
    const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1795473002426
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.60141,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.20047
#EXT-X-MAP:URI=\"init1795473002426.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-23T22:30:02.635Z
#EXT-X-PART:DURATION=0.2,URI=\"part1795473002426.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part1795473002426.1.m4s\"
#EXTINF:0.4,
seg1795473002426.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-23T22:30:03.035Z
#EXT-X-PART:DURATION=0.20019,URI=\"part1795473002427.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI=\"part1795473002427.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part1795473002427.2.m4s\"
";

    #[test]
    fn reads_parts_of_complete_and_in_progress_segments() {
        let p = MediaPlaylist::parse(LIVE.as_bytes()).unwrap();
        assert!(p.can_block_reload && !p.end_list && p.has_parts());
        assert_eq!(p.target_duration, Duration::from_secs(2));
        assert_eq!(p.segments.len(), 2);
        let (done, open) = (&p.segments[0], &p.segments[1]);
        assert_eq!(done.msn, 1795473002426);
        assert_eq!(done.uri.as_deref(), Some("seg1795473002426.m4s"));
        assert_eq!(done.duration, 0.4_f32 as f64);
        assert_eq!(done.map.as_deref(), Some("init1795473002426.mp4"));
        assert_eq!(
            done.parts[0],
            Part {
                uri: "part1795473002426.0.m4s".into(),
                duration: 0.2,
                independent: true
            }
        );
        assert!(!done.parts[1].independent);
        assert_eq!((open.msn, open.uri.as_deref()), (1795473002427, None));
        assert_eq!(open.parts.len(), 2);
        assert_eq!(open.map.as_deref(), Some("init1795473002426.mp4"));
        assert_eq!(
            p.preload_hint,
            Some(PreloadHint {
                uri: "part1795473002427.2.m4s".into(),
                byterange_start: None
            })
        );
        let next = p.next_position();
        assert_eq!(
            next,
            Position {
                msn: 1795473002427,
                part: Some(2)
            }
        );
        assert_eq!(next.query(), "_HLS_msn=1795473002427&_HLS_part=2");
    }

    #[test]
    fn after_a_complete_segment_waits_for_the_next_ones_first_part() {
        let text = LIVE.replace(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part1795473002427.2.m4s\"\n",
            "#EXTINF:0.4,\nseg1795473002427.m4s\n#EXT-X-ENDLIST\n",
        );
        let p = MediaPlaylist::parse(text.as_bytes()).unwrap();
        assert!(p.end_list);
        assert_eq!(p.segments.len(), 2);
        assert!(p.segments.iter().all(|s| s.uri.is_some()));
        assert_eq!(p.preload_hint, None);
        assert_eq!(
            p.next_position(),
            Position {
                msn: 1795473002428,
                part: Some(0)
            }
        );
    }

    #[test]
    fn plain_hls_has_segments_only() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nseg7.m4s\n#EXT-X-DISCONTINUITY\n\
            #EXT-X-MAP:URI=\"init2.mp4\"\n#EXTINF:2.0,\nseg8.m4s\n";
        let p = MediaPlaylist::parse(text.as_bytes()).unwrap();
        assert!(!p.can_block_reload && !p.has_parts());
        assert_eq!(p.segments[0].map.as_deref(), Some("init.mp4"));
        assert_eq!(p.segments[1].map.as_deref(), Some("init2.mp4"));
        assert!(p.segments[1].discontinuity && !p.segments[0].discontinuity);
        assert_eq!(p.next_position(), Position { msn: 9, part: None });
        assert_eq!(p.next_position().query(), "_HLS_msn=9");
    }

    #[test]
    fn a_first_playlist_may_hold_parts_only() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n#EXT-X-MAP:URI=\"init5.mp4\"\n\
            #EXT-X-PART:DURATION=0.2,URI=\"part5.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part5.1.m4s\"\n";
        let p = MediaPlaylist::parse(text.as_bytes()).unwrap();
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].msn, 5);
        assert_eq!(p.segments[0].map.as_deref(), Some("init5.mp4"));
        assert_eq!(
            p.next_position(),
            Position {
                msn: 5,
                part: Some(1)
            }
        );
    }

    #[test]
    fn skipped_segments_shift_the_sequence_numbers() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:10\n\
            #EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXTINF:1,\nseg13.m4s\n";
        let p = MediaPlaylist::parse(text.as_bytes()).unwrap();
        assert_eq!(p.segments[0].msn, 13);
    }

    #[test]
    fn bad_playlists_are_errors() {
        assert!(matches!(
            MediaPlaylist::parse(b"<html>not found</html>"),
            Err(PlaylistError::Syntax(_))
        ));
        let no_uri = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=0.2\n";
        assert_eq!(
            MediaPlaylist::parse(no_uri.as_bytes()),
            Err(PlaylistError::MissingAttribute {
                tag: "PART",
                attribute: "URI"
            })
        );
        let bad = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=x,URI=\"a\"\n";
        assert!(matches!(
            MediaPlaylist::parse(bad.as_bytes()),
            Err(PlaylistError::BadAttribute { .. })
        ));
        // Arbitrary bytes never panic.
        for cut in 0..LIVE.len() {
            let _ = MediaPlaylist::parse(&LIVE.as_bytes()[..cut]);
        }
    }

    #[test]
    fn mutated_playlists_never_panic() {
        use rand::rngs::SmallRng;
        use rand::{RngExt as _, SeedableRng as _};
        let mut rng = SmallRng::seed_from_u64(7);
        let alphabet = b"#:=,\"\n-.0123456789AEINPRSTUXYZ";
        // Sequence numbers at the edge of u64 too.
        let edge = LIVE.replace("1795473002426", "18446744073709551614");
        for round in 0..5_000 {
            let base = if round % 2 == 0 { LIVE } else { edge.as_str() };
            let mut text = base.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..text.len());
                text[at] = alphabet[rng.random_range(0..alphabet.len())];
            }
            if let Ok(p) = MediaPlaylist::parse(&text) {
                let _ = p.next_position();
            }
        }
    }

    /// What the bridge serves for a simulcast publisher of three layers (its ladder test's
    /// shape: the audio group first, the variants highest first).
    const LADDER: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES
#EXT-X-STREAM-INF:BANDWIDTH=1130000,AVERAGE-BANDWIDTH=900000,CODECS=\"avc1.42c01f,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30,AUDIO=\"audio\"
v0/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=630000,AVERAGE-BANDWIDTH=500000,CODECS=\"avc1.42c01e,mp4a.40.2\",RESOLUTION=426x240,FRAME-RATE=30,AUDIO=\"audio\"
v1/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=330000,AVERAGE-BANDWIDTH=250000,CODECS=\"avc1.42c00d,mp4a.40.2\",RESOLUTION=212x120,FRAME-RATE=30,AUDIO=\"audio\"
v2/index.m3u8
";

    #[test]
    fn reads_the_ladder_of_a_multivariant_playlist() {
        let p = MultivariantPlaylist::parse(LADDER.as_bytes()).unwrap();
        let listed: Vec<_> = p
            .variants
            .iter()
            .map(|v| (v.uri.as_str(), v.resolution))
            .collect();
        assert_eq!(
            listed,
            [
                ("v0/index.m3u8", Some((640, 360))),
                ("v1/index.m3u8", Some((426, 240))),
                ("v2/index.m3u8", Some((212, 120))),
            ]
        );
        assert_eq!(p.variants[0].bandwidth, 1_130_000);
        let audio = p.audio_of(&p.variants[2]).unwrap();
        assert_eq!(audio.uri, "audio/index.m3u8");
        // A single-layer publisher's: the stream's own playlist, no audio group.
        let single = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.42e01f,mp4a.40.2\",\
            RESOLUTION=640x360\nindex.m3u8\n";
        let p = MultivariantPlaylist::parse(single.as_bytes()).unwrap();
        assert_eq!(p.variants.len(), 1);
        assert_eq!(p.variants[0].uri, "index.m3u8");
        assert!(p.audio.is_empty() && p.audio_of(&p.variants[0]).is_none());
        assert!(matches!(
            MultivariantPlaylist::parse(b"<html>"),
            Err(PlaylistError::Syntax(_))
        ));
        // A media playlist is not a multivariant one.
        assert!(
            MultivariantPlaylist::parse(LIVE.as_bytes()).map_or(true, |p| p.variants.is_empty()),
        );
        for cut in 0..LADDER.len() {
            let _ = MultivariantPlaylist::parse(&LADDER.as_bytes()[..cut]);
        }
    }

    #[test]
    fn attribute_lists() {
        let a = Attributes::parse("TYPE=PART,URI=\"a,b=c.m4s\",BYTERANGE-START=10");
        assert_eq!(a.get("TYPE"), Some("PART"));
        assert_eq!(a.get("URI"), Some("a,b=c.m4s"));
        assert_eq!(a.get("BYTERANGE-START"), Some("10"));
        assert_eq!(a.get("X"), None);
        assert!(Attributes::parse("").0.is_empty());
        assert_eq!(
            Attributes::parse("A=\"unterminated").get("A"),
            Some("unterminated")
        );
    }
}
