//! Arbitrary bytes as what an HLS server answers `loadgen publish --hls`: a media playlist, an
//! init section, or a fragment after the bridge's real init section. Errors are fine (counted as
//! the output's errors), panics are not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loadgen::publish::fmp4::{Fragment, Init};
use loadgen::publish::playlist::MediaPlaylist;

/// An init section the bridge wrote (H.264 + AAC), as `loadgen/tests/data/hls/README.md` says.
static INIT: &[u8] = include_bytes!("../../loadgen/tests/data/hls/init.mp4");

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(playlist) = MediaPlaylist::parse(rest) {
                let _ = playlist.next_position().query();
            }
        }
        1 => {
            if let Ok(init) = Init::parse(rest) {
                let _ = Fragment::parse(&init, rest);
            }
        }
        _ => {
            if let Ok(init) = Init::parse(INIT) {
                let _ = Fragment::parse(&init, rest);
            }
        }
    }
});
