//! Input the benches share: the checked-in x264 stream of `bridge/tests/data/` (its README says
//! how it was made), from the protocol crate's test data (read with its own Annex B reader).

use bridge_proto::media::h264::annexb;
use bridge_proto::media::unit::VideoUnit;
use bridge_proto::testdata;
use bytes::Bytes;

/// The stream's 60 access units, each NAL unit a slice of one buffer.
#[allow(dead_code)] // only the depacketizer bench packetizes access units
pub(crate) fn access_units() -> Vec<Vec<Bytes>> {
    annexb::access_units(annexb::split(&Bytes::from_static(testdata::H264)))
}

/// The access units as video units at 30 fps: `pts = dts = n * 3000`.
#[allow(dead_code)] // not every bench muxes
pub(crate) fn video_units() -> Vec<VideoUnit> {
    testdata::video_units(0)
}
