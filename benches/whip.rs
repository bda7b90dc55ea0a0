//! Signalling parsers on real client shapes: what a POST and a PATCH cost before any IO.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use bridge::whip::offer::Offer;
use bridge_proto::whip::sdpfrag::SdpFrag;

const OFFER: &str = include_str!("../bridge/tests/data/ffmpeg9-whip-offer.sdp");

/// The fragment shape browser WHIP clients PATCH (credentials at session level, one m-line per
/// mid, a few candidates).
const FRAG: &str = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
a=candidate:1387637174 1 udp 2122260223 10.77.0.2 58779 typ host generation 0 ufrag EsAw\r\n\
a=candidate:1387637175 1 udp 1686052607 198.51.100.7 58779 typ srflx raddr 10.77.0.2 rport 58779\r\n\
a=candidate:1387637176 1 tcp 1518280447 10.77.0.2 9 typ host tcptype active\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\na=end-of-candidates\r\n";

fn parsers(c: &mut Criterion) {
    let mut group = c.benchmark_group("whip");
    group.throughput(Throughput::Bytes(FRAG.len() as u64));
    group.bench_function("sdpfrag_parse", |b| {
        b.iter(|| SdpFrag::parse(std::hint::black_box(FRAG.as_bytes())))
    });
    group.throughput(Throughput::Bytes(OFFER.len() as u64));
    group.bench_function("offer_parse_ffmpeg", |b| {
        b.iter(|| Offer::parse(std::hint::black_box(OFFER.as_bytes())))
    });
    group.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
