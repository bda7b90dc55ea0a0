//! What the RTMP output writes, as a file: the FLV muxer fed real H.264 and the transcoder's AAC
//! (or Opus passed through in Enhanced RTMP tags) plays in ffmpeg. Here rather than beside the
//! muxer because the protocol crate does not link the codec libraries.

use bridge_proto::testdata::{self, ffmpeg, ffmpeg9, ffprobe, ogg_opus, video_units};

use super::{DEFAULT_BITRATE, OpusToAac};
use crate::media::unit::AudioFrame;
use crate::mux::flv::{AudioCodec, FlvMuxer, file_header, write_tag};

const PTS0: i64 = 900_000;

/// The stream as an FLV file: real H.264 units and Opus transcoded to AAC (or passed through
/// in Enhanced RTMP tags), interleaved by timestamp.
fn flv_file(opus: bool) -> Vec<u8> {
    let units = video_units(PTS0);
    let audio_in: Vec<AudioFrame> = {
        let first = ogg_opus("opus-music-stereo-96k.ogg", PTS0);
        let second = ogg_opus(
            "opus-music-stereo-96k.ogg",
            PTS0 + first.frames.len() as i64 * 1800,
        );
        first.frames.into_iter().chain(second.frames).collect()
    };
    let (codec, audio) = if opus {
        (AudioCodec::Opus { channels: 2 }, audio_in)
    } else {
        let mut t = OpusToAac::new(2, DEFAULT_BITRATE).unwrap();
        let mut out = Vec::new();
        for f in &audio_in {
            out.extend(t.push(f).unwrap());
        }
        out.extend(t.flush().unwrap());
        let codec = AudioCodec::Aac {
            audio_specific_config: t.audio_specific_config(),
        };
        (codec, out)
    };
    let mut mux = FlvMuxer::new(Some(codec));
    let mut tags = Vec::new();
    // Video first so it sets the origin, as a live output starting at a keyframe would.
    let mut audio = audio.iter().peekable();
    for u in &units {
        tags.extend(mux.video(u).unwrap());
        while let Some(a) = audio.next_if(|a| a.pts <= u.dts) {
            tags.extend(mux.audio(a));
        }
    }
    for a in audio {
        tags.extend(mux.audio(a));
    }
    assert_eq!(mux.video_muxer().stats().frames, 60);
    tags.sort_by_key(|t| (t.timestamp, !t.config));
    let mut file = file_header(true, true).to_vec();
    for t in &tags {
        write_tag(&mut file, t.kind.tag_type(), t.timestamp, &t.body).unwrap();
    }
    file
}

#[test]
fn flv_file_with_aac_plays_in_ffmpeg() {
    let (Some(ffprobe), Some(ffmpeg)) = (ffprobe(), ffmpeg()) else {
        println!("SKIPPED flv_file_with_aac_plays_in_ffmpeg: no ffprobe/ffmpeg on PATH");
        return;
    };
    let path = testdata::scratch("h264-aac.flv");
    std::fs::write(&path, flv_file(false)).unwrap();
    let p = path.to_str().unwrap();
    let (streams, _) = testdata::run(&ffprobe, &["-v", "error", "-show_streams", p]);
    for want in [
        "codec_name=h264",
        "width=640",
        "height=360",
        "codec_name=aac",
        "sample_rate=48000",
        "channels=2",
    ] {
        assert!(
            streams.lines().any(|l| l == want),
            "{want} missing in\n{streams}"
        );
    }
    let (frames, _) = testdata::run(
        &ffprobe,
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            p,
        ],
    );
    assert_eq!(frames.trim(), "60");
    let (stdout, stderr) = testdata::run(&ffmpeg, &["-v", "error", "-i", p, "-f", "null", "-"]);
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "ffmpeg complained"
    );
}

#[test]
fn flv_file_with_enhanced_rtmp_opus_plays_in_ffmpeg9() {
    let Some(ffmpeg) = ffmpeg9() else {
        println!(
            "SKIPPED flv_file_with_enhanced_rtmp_opus_plays_in_ffmpeg9: no FFmpeg 9 (set FFMPEG9 or pip install imageio-ffmpeg)"
        );
        return;
    };
    let path = testdata::scratch("h264-opus.flv");
    std::fs::write(&path, flv_file(true)).unwrap();
    let p = path.to_str().unwrap();
    let (stdout, stderr) = testdata::run(&ffmpeg, &["-v", "error", "-i", p, "-f", "null", "-"]);
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "ffmpeg complained"
    );
    let (_, info) = testdata::run(&ffmpeg, &["-hide_banner", "-i", p, "-f", "null", "-"]);
    assert!(info.contains("Video: h264"), "{info}");
    assert!(info.contains("Audio: opus, 48000 Hz, stereo"), "{info}");
}
