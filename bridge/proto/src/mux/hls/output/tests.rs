use std::time::UNIX_EPOCH;

use super::*;
use crate::mux::hls::names::LadderRendition;
use crate::mux::hls::playlist::{PlaylistConfig, PlaylistKind};
use crate::mux::hls::segmenter::SegmenterConfig;
use crate::testdata::video_units;

/// The bridge's clock at the first unit of every run.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn low_latency() -> OutputConfig {
    let segmenter = SegmenterConfig::low_latency(true);
    OutputConfig {
        rendition: Rendition::Main,
        segmenter,
        playlist: PlaylistConfig {
            kind: PlaylistKind::Live { window: 6 },
            ..PlaylistConfig::new(Container::Fmp4, &segmenter)
        },
        audio: AudioChoice::None,
        has_audio: false,
        has_video: true,
    }
}

/// Pushes 2 s of real video (60 frames at 30 fps, from `pts0`), arriving in real time from
/// `start` on the bridge's clock; returns every action.
fn run(output: &mut HlsOutput, pts0: i64, start: SystemTime) -> Vec<Action> {
    let now = Instant::now();
    let mut actions = Vec::new();
    for (n, unit) in video_units(pts0).into_iter().enumerate() {
        let after = Duration::from_millis(n as u64 * 1000 / 30);
        output.push(Unit::Video(unit), now + after, start + after);
        actions.extend(std::iter::from_fn(|| output.poll()));
    }
    output.finish();
    actions.extend(std::iter::from_fn(|| output.poll()));
    actions
}

fn ms(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// The bytes of the last `file` written.
fn last_written(actions: &[Action], file: &str) -> Vec<u8> {
    actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Write { name, data } if name == file => Some(data.concat()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {file} written"))
}

/// The first segment's `EXT-X-PROGRAM-DATE-TIME` in the last `index.m3u8` written, in ms.
fn first_date(actions: &[Action]) -> i64 {
    let index = last_written(actions, "index.m3u8");
    let playlist = m3u8_rs::parse_media_playlist_res(&index).unwrap();
    playlist.segments[0]
        .program_date_time
        .unwrap()
        .timestamp_millis()
}

fn dated_run(skew: i64) -> Vec<Action> {
    let mut output = HlsOutput::new(low_latency(), Handoff::new(1000), None).unwrap();
    let shift = Duration::from_secs(skew.unsigned_abs());
    let sender = if skew < 0 { t0() - shift } else { t0() + shift };
    output.handle_sender_clock(sender);
    run(&mut output, 0, t0())
}

#[test]
fn segments_are_dated_by_the_publishers_clock_when_plausible() {
    let actions = dated_run(-20);
    // The first segment starts at timeline 0, which the sender dated 20 s before it arrived.
    assert_eq!(first_date(&actions), ms(t0()) - 20_000);
    // Every one of the 60 frames was listed in a part, each once.
    let listed: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Listed(l) => Some(l),
            _ => None,
        })
        .collect();
    let parts = listed
        .iter()
        .filter(|l| matches!(l, Listed::Part { .. }))
        .count();
    let segments = listed
        .iter()
        .filter(|l| matches!(l, Listed::Segment { .. }))
        .count();
    let frames: usize = listed
        .iter()
        .map(|l| match l {
            Listed::Part { arrivals } | Listed::Segment { arrivals, .. } => arrivals.len(),
        })
        .sum();
    assert_eq!((parts, segments, frames), (10, 2, 60));

    // Two hours off: the bridge's own clock dates it.
    assert_eq!(first_date(&dated_run(-7200)), ms(t0()));
    // Within a minute the other way: the sender's.
    assert_eq!(first_date(&dated_run(59)), ms(t0()) + 59_000);
}

#[test]
fn a_clock_within_a_minute_is_plausible() {
    let t = t0();
    let secs = Duration::from_secs;
    for (sender, ok) in [
        (t, true),
        (t + secs(59), true),
        (t - secs(60), true),
        (t + secs(61), false),
        (t - secs(3600), false),
        (UNIX_EPOCH, false),
    ] {
        assert_eq!(plausible_clock(sender, t), ok, "{sender:?}");
    }
}

fn written(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

fn removed(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { name } => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_second_session_continues_the_playlist_and_a_new_presentation_replaces_it() {
    let mut first = HlsOutput::new(low_latency(), Handoff::new(1000), None).unwrap();
    assert!(matches!(first.poll(), Some(Action::KeyframeWanted)));
    let actions = run(&mut first, 0, t0());
    let names = written(&actions);
    assert_eq!(names[..2], ["init1000.mp4", "part1000.m4s"]);
    assert!(names.contains(&"seg1000.m4s") && names.contains(&"seg1001.m4s"));
    assert!(names.contains(&"main.m3u8"));
    // Media goes to disk before the playlist that lists it is published.
    let seg = actions
        .iter()
        .position(|a| matches!(a, Action::Write { name, .. } if name == "seg1000.m4s"))
        .unwrap();
    assert!(matches!(&actions[seg + 1], Action::Publish(c) if c.playlist.is_some()));
    let handoff = first.into_handoff();
    assert!(
        handoff.is_live(),
        "not ended: the next publisher takes over"
    );
    assert_eq!(handoff.next_msn(), 1002);

    // A publisher taking over: numbers run on, after a discontinuity, on a new epoch.
    let mut second = HlsOutput::new(low_latency(), handoff, None).unwrap();
    assert!(second.is_continuing());
    let actions = run(&mut second, 500_000, t0() + Duration::from_secs(5));
    assert!(removed(&actions).is_empty(), "{:?}", removed(&actions));
    let names = written(&actions);
    // Parts 1000..=1009 were the first session's: the count runs on, so the first session's
    // last preload hint names this session's first part.
    assert_eq!(names[..2], ["init1001.mp4", "part1010.m4s"]);
    second.end();
    let ended: Vec<_> = std::iter::from_fn(|| second.poll()).collect();
    assert!(matches!(&ended[0], Action::Publish(c) if c.ended));
    assert_eq!(written(&ended), ["index.m3u8"]);
    let index = match &ended[1] {
        Action::Write { data, .. } => data.concat(),
        other => panic!("{other:?}"),
    };
    let playlist = m3u8_rs::parse_media_playlist_res(&index).unwrap();
    assert!(playlist.end_list);
    assert!(playlist.segments.iter().any(|s| s.discontinuity));

    // After the end, a new presentation: the old one's files go once its first part is ready.
    let handoff = second.into_handoff();
    assert!(!handoff.is_live());
    let mut third = HlsOutput::new(low_latency(), handoff, None).unwrap();
    let actions = run(&mut third, 0, t0() + Duration::from_secs(10));
    let reset = actions
        .iter()
        .position(|a| matches!(a, Action::Publish(c) if c.reset))
        .unwrap();
    let gone = removed(&actions[reset..]);
    for name in ["seg1000.m4s", "init1001.mp4", "index.m3u8", "main.m3u8"] {
        assert!(gone.contains(&name), "{name} not removed: {gone:?}");
    }
    assert!(written(&actions).contains(&"init1002.mp4"));
}

#[test]
fn without_media_nothing_is_written_or_replaced() {
    let mut output = HlsOutput::new(low_latency(), Handoff::new(7), None).unwrap();
    output.finish();
    output.end();
    let actions: Vec<_> = std::iter::from_fn(|| output.poll()).collect();
    assert!(
        matches!(actions[..], [Action::KeyframeWanted]),
        "{actions:?}"
    );
    assert!(!output.has_media());
    assert_eq!(output.into_handoff().next_msn(), 7);
}

/// Pushes 4 s of video (the frames of [`run`] twice, 30 fps on the bridge's clock too), with
/// the publisher's clock (20 s behind the bridge's) told before frame `report_at`.
fn run_with_report_at(report_at: usize) -> Vec<Action> {
    let mut output = HlsOutput::new(low_latency(), Handoff::new(1000), None).unwrap();
    let now = Instant::now();
    let mut actions = Vec::new();
    let units = video_units(0)
        .into_iter()
        .chain(video_units(2 * crate::media::unit::TIMELINE_HZ));
    for (n, unit) in units.enumerate() {
        if n == report_at {
            output.handle_sender_clock(t0() - Duration::from_secs(20));
        }
        let after = Duration::from_millis(1000 / 30) * u32::try_from(n).unwrap();
        output.push(Unit::Video(unit), now + after, t0() + after);
        actions.extend(std::iter::from_fn(|| output.poll()));
    }
    output.finish();
    actions.extend(std::iter::from_fn(|| output.poll()));
    actions
}

/// Every segment's date follows from the first's and the durations between: one dating per
/// presentation, as players that place segments by their dates need.
fn assert_dates_continuous(actions: &[Action]) {
    let index = last_written(actions, "index.m3u8");
    let playlist = m3u8_rs::parse_media_playlist_res(&index).unwrap();
    assert!(playlist.segments.len() >= 3, "{playlist:?}");
    for pair in playlist.segments.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let step = b.program_date_time.unwrap() - a.program_date_time.unwrap();
        let step_ms = step.num_milliseconds() as f64;
        assert!(
            (step_ms - f64::from(a.duration) * 1000.0).abs() <= 1.0,
            "{} then {}: dates {step_ms} ms apart, EXTINF {}",
            a.uri,
            b.uri,
            a.duration
        );
    }
}

/// A sender report that comes after the first segment started does not re-date the segments
/// after it (Shaka Player stalled and jumped on such dates); one that comes first dates all.
#[test]
fn the_dating_of_a_presentation_never_changes_once_a_segment_started() {
    let actions = run_with_report_at(0);
    assert_eq!(first_date(&actions), ms(t0()) - 20_000);
    assert_dates_continuous(&actions);

    let actions = run_with_report_at(10);
    assert_eq!(first_date(&actions), ms(t0()));
    assert_dates_continuous(&actions);
}

/// The last `main.m3u8` written.
fn last_main(actions: &[Action]) -> String {
    String::from_utf8(last_written(actions, "main.m3u8")).unwrap()
}

/// An output measures its own variant; given a ladder, its `main.m3u8` lists the ladder's
/// renditions instead (and its own `index.m3u8` goes on being written).
#[test]
fn main_lists_the_ladder_once_there_is_one() {
    let mut output = HlsOutput::new(low_latency(), Handoff::new(1000), None).unwrap();
    assert_eq!(output.variant(), None, "nothing measured yet");
    let alone = run(&mut output, 0, t0());
    let variant = output.variant().expect("measured");
    let alone_segments = output.recent_segments();
    assert_eq!(alone_segments, [(0, 90_000), (90_000, 90_000)]);
    assert_eq!(variant.uri, "index.m3u8");
    assert_eq!(variant.resolution, Some((640, 360)));
    assert!(last_main(&alone).contains("\nindex.m3u8\n"));

    let mut output = HlsOutput::new(low_latency(), Handoff::new(2000), None).unwrap();
    let rendition = |uri: &str| Variant {
        uri: uri.to_owned(),
        ..variant.clone()
    };
    let mut ladder = Ladder::new(&low_latency().segmenter);
    for layer in [0, 1] {
        ladder.set(
            LadderRendition::Video(layer),
            rendition("index.m3u8"),
            alone_segments.clone(),
        );
    }
    output.handle_ladder(ladder);
    let actions = run(&mut output, 0, t0());
    let main = last_main(&actions);
    assert!(
        main.contains("\nv0/index.m3u8\n") && main.contains("\nv1/index.m3u8\n"),
        "{main}"
    );
    assert!(!main.contains("\nindex.m3u8\n"), "{main}");
    assert!(written(&actions).contains(&"index.m3u8"));
}

/// Outputs of one session (a ladder's renditions) given the session's timeline origin date the
/// same media time alike, however late each saw its first unit; without it, each dates from
/// its own first unit.
#[test]
fn outputs_given_the_timeline_origin_date_alike() {
    let date = |delay_ms: u64, origin: bool| {
        let mut output = HlsOutput::new(low_latency(), Handoff::new(1000), None).unwrap();
        if origin {
            output.set_timeline_origin(t0());
        }
        first_date(&run(&mut output, 0, t0() + Duration::from_millis(delay_ms)))
    };
    assert_eq!([date(0, true), date(40, true)], [ms(t0()); 2]);
    assert_eq!(date(40, false), ms(t0()) + 40);
}
