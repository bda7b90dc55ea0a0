//! The file names an HLS output writes, and the strict parser of them: the writer and the reader
//! of names in one place, so that a name the output makes is exactly a name the HTTP layer serves
//! (and cleans up), and nothing else is.

use std::fmt;

use super::playlist::Container;

/// The media playlist's name, as the multivariant playlist refers to it.
pub const MEDIA_PLAYLIST_URI: &str = "index.m3u8";
/// The multivariant playlist's name.
pub const MULTIVARIANT_PLAYLIST_URI: &str = "main.m3u8";

/// A file the HLS output writes. [`HlsFile::parse`] reads exactly the names `Display` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HlsFile {
    /// `index.m3u8`.
    MediaPlaylist,
    /// `main.m3u8`.
    MultivariantPlaylist,
    /// `init.mp4` (epoch 0) or `init{epoch}.mp4` (fMP4 only).
    Init {
        /// The init section's epoch (see [`super::segmenter::PartInfo::epoch`]).
        epoch: u64,
    },
    /// `seg{msn}.m4s` or `seg{msn}.ts`.
    Segment {
        /// Its container (the extension).
        container: Container,
        /// Media sequence number.
        msn: u64,
    },
    /// `part{number}.m4s` or `.ts`: parts are numbered by one running counter, not by their
    /// segment, so that the preload hint ("the next part") names a file that will exist however
    /// the segmenter cuts (see [`super::segmenter::PartInfo::number`]).
    Part {
        /// Its container (the extension).
        container: Container,
        /// Its number on the stream's running count of parts.
        number: u64,
    },
}

impl HlsFile {
    /// Recognises the names [`HlsFile`] writes; `None` for anything else (other spellings of
    /// the same numbers included).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            MEDIA_PLAYLIST_URI => return Some(Self::MediaPlaylist),
            MULTIVARIANT_PLAYLIST_URI => return Some(Self::MultivariantPlaylist),
            "init.mp4" => return Some(Self::Init { epoch: 0 }),
            _ => {}
        }
        if let Some(epoch) = name
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            // `init0.mp4` is not a name the output makes: epoch 0 is `init.mp4`.
            return number(epoch)
                .filter(|&epoch| epoch > 0)
                .map(|epoch| Self::Init { epoch });
        }
        let (stem, container) = if let Some(stem) = name.strip_suffix(".m4s") {
            (stem, Container::Fmp4)
        } else {
            (name.strip_suffix(".ts")?, Container::MpegTs)
        };
        if let Some(msn) = stem.strip_prefix("seg") {
            let msn = number(msn)?;
            return Some(Self::Segment { container, msn });
        }
        Some(Self::Part {
            container,
            number: number(stem.strip_prefix("part")?)?,
        })
    }

    /// `part{msn}.{index}.m4s` or `.ts`: how parts were named before they had one running count.
    /// Never served; recognised so that what an older version left in a folder is cleaned up.
    pub fn is_old_part_name(name: &str) -> bool {
        let Some(stem) = name
            .strip_suffix(".m4s")
            .or_else(|| name.strip_suffix(".ts"))
            .and_then(|n| n.strip_prefix("part"))
        else {
            return false;
        };
        stem.split_once('.')
            .is_some_and(|(msn, index)| number(msn).is_some() && number(index).is_some())
    }

    /// The `Content-Type` a file of this kind is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::MediaPlaylist | Self::MultivariantPlaylist => "application/vnd.apple.mpegurl",
            Self::Segment {
                container: Container::MpegTs,
                ..
            }
            | Self::Part {
                container: Container::MpegTs,
                ..
            } => "video/mp2t",
            _ => "video/mp4",
        }
    }
}

impl fmt::Display for HlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MediaPlaylist => f.write_str(MEDIA_PLAYLIST_URI),
            Self::MultivariantPlaylist => f.write_str(MULTIVARIANT_PLAYLIST_URI),
            Self::Init { epoch: 0 } => f.write_str("init.mp4"),
            Self::Init { epoch } => write!(f, "init{epoch}.mp4"),
            Self::Segment { container, msn } => write!(f, "seg{msn}.{}", container.extension()),
            Self::Part { container, number } => {
                write!(f, "part{number}.{}", container.extension())
            }
        }
    }
}

impl Container {
    fn extension(self) -> &'static str {
        match self {
            Container::Fmp4 => "m4s",
            Container::MpegTs => "ts",
        }
    }

    /// A segment's file name: `seg{msn}.m4s` or `seg{msn}.ts`.
    pub fn segment_uri(self, msn: u64) -> String {
        HlsFile::Segment {
            container: self,
            msn,
        }
        .to_string()
    }

    /// A part's file name: `part{number}.m4s` or `.ts`.
    pub fn part_uri(self, number: u64) -> String {
        HlsFile::Part {
            container: self,
            number,
        }
        .to_string()
    }

    /// The init section's file name for segments of `epoch` (see
    /// [`super::segmenter::PartInfo::epoch`]): `init.mp4`, then `init1.mp4`, `init2.mp4` after
    /// each discontinuity (a new publisher may bring new parameter sets, and a cached old init
    /// section must not be reused). None for TS.
    pub fn init_uri(self, epoch: u64) -> Option<String> {
        match self {
            Container::MpegTs => None,
            Container::Fmp4 => Some(HlsFile::Init { epoch }.to_string()),
        }
    }
}

/// A rendition of a simulcast publisher's HLS ladder: a folder of its own beside the stream's
/// files (`v0/index.m3u8`, `audio/seg....m4s`), named here and parsed strictly like the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LadderRendition {
    /// `v{layer}`: the video of one layer (layers numbered as the ingest numbers them).
    Video(usize),
    /// `audio`: the audio every video rendition plays with.
    Audio,
}

impl LadderRendition {
    /// Recognises the folder names [`LadderRendition`] writes (`v0` to `v9`, `audio`).
    pub fn parse(name: &str) -> Option<Self> {
        if name == "audio" {
            return Some(Self::Audio);
        }
        let digit = name.strip_prefix('v')?;
        (digit.len() == 1)
            .then(|| number(digit))
            .flatten()
            .and_then(|n| usize::try_from(n).ok())
            .map(Self::Video)
    }
}

impl fmt::Display for LadderRendition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Video(layer) => write!(f, "v{layer}"),
            Self::Audio => f.write_str("audio"),
        }
    }
}

/// A decimal number as the names are written: digits only, no leading zero, fits u64.
fn number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_folders_parse_as_written() {
        for r in [
            LadderRendition::Video(0),
            LadderRendition::Video(3),
            LadderRendition::Audio,
        ] {
            assert_eq!(LadderRendition::parse(&r.to_string()), Some(r));
        }
        for bad in [
            "",
            "v",
            "v10",
            "v01",
            "V1",
            "v-1",
            "audio2",
            "..",
            "v1/..",
            "index.m3u8",
        ] {
            assert_eq!(LadderRendition::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_our_file_names_parse() {
        let (fmp4, ts) = (Container::Fmp4, Container::MpegTs);
        assert_eq!(HlsFile::parse("index.m3u8"), Some(HlsFile::MediaPlaylist));
        assert_eq!(
            HlsFile::parse("main.m3u8"),
            Some(HlsFile::MultivariantPlaylist)
        );
        assert_eq!(HlsFile::parse("init.mp4"), Some(HlsFile::Init { epoch: 0 }));
        assert_eq!(
            HlsFile::parse("init17.mp4"),
            Some(HlsFile::Init { epoch: 17 })
        );
        assert_eq!(
            HlsFile::parse("seg0.m4s"),
            Some(HlsFile::Segment {
                container: fmp4,
                msn: 0
            })
        );
        assert_eq!(
            HlsFile::parse("seg1718000000000.ts"),
            Some(HlsFile::Segment {
                container: ts,
                msn: 1_718_000_000_000
            })
        );
        assert_eq!(
            HlsFile::parse("part12.m4s"),
            Some(HlsFile::Part {
                container: fmp4,
                number: 12,
            })
        );
        for bad in [
            "",
            "..",
            "../index.m3u8",
            "index.m3u8/",
            "seg.m4s",
            "seg01.m4s",
            "seg-1.m4s",
            "seg+1.m4s",
            "seg1.mp4",
            "part.m4s",
            "part01.m4s",
            "part1.2.m4s",
            "part1.2.3.m4s",
            "init0.mp4",
            "init0.mp4x",
            "init01.mp4",
            "seg123456789012345678901.ts",
            ".seg1.m4s.tmp",
            "SEG1.M4S",
        ] {
            assert_eq!(HlsFile::parse(bad), None, "{bad:?}");
        }
        assert!(HlsFile::is_old_part_name("part1718000000000.3.m4s"));
        assert!(HlsFile::is_old_part_name("part1.0.ts"));
        for not_old in [
            "part1.m4s",
            "part1..m4s",
            "part1.2.3.m4s",
            "seg1.2.m4s",
            "part1.2.mp4",
        ] {
            assert!(!HlsFile::is_old_part_name(not_old), "{not_old}");
        }
        let content_type = |name| HlsFile::parse(name).unwrap().content_type();
        assert_eq!(content_type("seg1.ts"), "video/mp2t", "TS");
        assert_eq!(content_type("part1.ts"), "video/mp2t", "TS");
        assert_eq!(content_type("seg1.m4s"), "video/mp4");
        assert_eq!(content_type("init.mp4"), "video/mp4");
        assert_eq!(content_type("main.m3u8"), "application/vnd.apple.mpegurl");
    }

    #[test]
    fn every_name_written_parses_back_to_itself() {
        let mut files = vec![HlsFile::MediaPlaylist, HlsFile::MultivariantPlaylist];
        for n in [0, 1, 9, 10, 1_718_000_000_000, u64::MAX] {
            files.push(HlsFile::Init { epoch: n });
            for container in [Container::Fmp4, Container::MpegTs] {
                files.push(HlsFile::Segment { container, msn: n });
                files.push(HlsFile::Part {
                    container,
                    number: n,
                });
            }
        }
        for file in files {
            let name = file.to_string();
            assert_eq!(HlsFile::parse(&name), Some(file), "{name}");
        }
        // And the names the playlist lists are these.
        assert_eq!(Container::Fmp4.segment_uri(5), "seg5.m4s");
        assert_eq!(Container::MpegTs.part_uri(5), "part5.ts");
        assert_eq!(Container::Fmp4.init_uri(0).as_deref(), Some("init.mp4"));
        assert_eq!(Container::Fmp4.init_uri(3).as_deref(), Some("init3.mp4"));
        assert_eq!(Container::MpegTs.init_uri(3), None);
    }
}
