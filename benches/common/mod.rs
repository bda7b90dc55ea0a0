//! Input the benches share: the checked-in x264 stream of `bridge/tests/data/` (its README says
//! how it was made), read with the bridge's own Annex B reader.

use bridge::media::h264::{NAL_IDR, annexb};
use bridge::media::unit::VideoUnit;
use bytes::Bytes;

/// 2 s of real x264 output: 640x360 baseline, 30 fps, two slices per picture, an IDR a second.
static H264: &[u8] = include_bytes!("../../bridge/tests/data/x264-baseline-640x360-2s.h264");

/// The stream's 60 access units, each NAL unit a slice of one buffer.
pub(crate) fn access_units() -> Vec<Vec<Bytes>> {
    annexb::access_units(annexb::split(&Bytes::from_static(H264)))
}

/// The access units as video units at 30 fps: `pts = dts = n * 3000`.
#[allow(dead_code)] // not every bench muxes
pub(crate) fn video_units() -> Vec<VideoUnit> {
    access_units()
        .into_iter()
        .enumerate()
        .map(|(n, nalus)| VideoUnit {
            pts: n as i64 * 3000,
            dts: n as i64 * 3000,
            keyframe: nalus.iter().any(|n| n[0] & 0x1f == NAL_IDR),
            nalus,
        })
        .collect()
}
