//! Arbitrary bytes as an SPS NAL unit: errors are fine, panics and absurd sizes are not.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut nal = Vec::with_capacity(data.len() + 1);
    // An SPS header, so the fuzzer spends its time past the first check.
    nal.push(0x67);
    nal.extend_from_slice(data);
    if let Ok(sps) = bridge_proto::media::h264::sps::parse(&nal) {
        assert!(sps.width > 0 && sps.height > 0);
        assert!(sps.chroma_format_idc <= 3);
        let _ = sps.codec_string();
    }
});
