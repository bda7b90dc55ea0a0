//! One container behind one interface: the output hands a [`Part`] in and gets its bytes out,
//! whichever container the stream is in.

use bytes::{Bytes, BytesMut};

use crate::media::unit::{AudioFrame, Unit};
use crate::mux::hls::fmp4::{Fmp4Muxer, FragmentSamples};
use crate::mux::hls::segmenter::Part;
use crate::mux::hls::ts::TsMuxer;

/// The muxer of one epoch (one set of parameter sets).
#[derive(Debug)]
pub(super) enum Muxer {
    Fmp4(Fmp4Muxer),
    Ts(TsMuxer),
}

impl Muxer {
    /// The init section (fMP4 only).
    pub(super) fn init(&self) -> Option<Bytes> {
        match self {
            Muxer::Fmp4(m) => Some(m.init()),
            Muxer::Ts(_) => None,
        }
    }

    /// One part's bytes. A unit that cannot be muxed is left out (and logged) rather than
    /// losing the part: the playlist has already been promised it.
    pub(super) fn part(&mut self, part: Part, segment_start: bool) -> Vec<Bytes> {
        let (video_end, audio_end) = (part.video_end, part.audio_end);
        match self {
            Muxer::Fmp4(m) => {
                let (video, mut audio) = part.into_tracks();
                if m.audio_params().is_none() {
                    audio.clear();
                }
                let samples = FragmentSamples {
                    video: &video,
                    video_end,
                    audio: &audio,
                    audio_end,
                };
                match m.fragment(samples) {
                    Ok(chunks) => chunks,
                    Err(err) => {
                        // Nothing changed in the muxer: try again with video alone.
                        tracing::warn!(%err, "fMP4 fragment failed; retrying without audio");
                        let video_only = FragmentSamples {
                            audio: &[],
                            audio_end: None,
                            ..samples
                        };
                        m.fragment(video_only).unwrap_or_else(|err| {
                            tracing::warn!(%err, "fMP4 fragment failed; part left empty");
                            Vec::new()
                        })
                    }
                }
            }
            Muxer::Ts(m) => {
                let mut out = Vec::new();
                if segment_start {
                    out.push(m.segment_start());
                }
                // Audio frames between two pictures go in one PES: less stuffing.
                let mut run: Vec<AudioFrame> = Vec::new();
                fn flush(m: &mut TsMuxer, run: &mut Vec<AudioFrame>, out: &mut Vec<Bytes>) {
                    if !run.is_empty() {
                        match m.audio(run) {
                            Ok(bytes) => out.push(bytes),
                            Err(err) => tracing::debug!(%err, "audio not muxable"),
                        }
                        run.clear();
                    }
                }
                for unit in part.units {
                    match unit {
                        Unit::Audio(frame) => run.push(frame),
                        Unit::Video(v) => {
                            flush(m, &mut run, &mut out);
                            match m.video(&v) {
                                Ok(bytes) => out.push(bytes),
                                Err(err) => tracing::debug!(%err, "video unit not muxable"),
                            }
                        }
                    }
                }
                flush(m, &mut run, &mut out);
                out
            }
        }
    }
}

/// The chunks as one buffer (copied only if there are several).
pub(super) fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                out.extend_from_slice(&chunk);
            }
            out.freeze()
        }
    }
}
