//! Simulcast: which of a publisher's video layers feeds the outputs that take one picture stream
//! (RTMP, the HLS media playlist `index.m3u8`).
//!
//! A simulcast publisher (OBS 32.1+, a browser with `sendEncodings`) sends the same picture as
//! several independent H.264 streams, one SSRC per layer. Neither rid names nor their order say
//! which is largest (Chrome lists its highest layer first, Firefox lowest first, OBS calls its
//! full canvas "0"), so the decoded SPS does: the layer with the most pixels wins, then the one
//! that sent more bytes.
//!
//! - **Start.** Units of every layer are held from its latest keyframe until each layer the offer
//!   announced has sent one, or [`START_WINDOW`] after the first keyframe: then the best of them
//!   is selected and its held units go out. Publishers that answer keyframe requests (browsers)
//!   and those whose encoders share a keyframe interval (OBS) send their layers' first keyframes
//!   within a frame or two of each other, so outputs start on the top layer instead of switching
//!   up a few frames in. A single-layer publisher is not held at all.
//! - **Up.** A keyframe of a larger layer than the selected one switches to it.
//! - **Fallback.** When the selected layer sends nothing for [`STALE_AFTER`] (a paused rid, a
//!   publisher that stopped encoding it), the next keyframe of any other layer takes over, and a
//!   later keyframe of a larger layer switches back up.
//!
//! Switches happen only at keyframes, which carry their SPS and PPS: outputs see new parameter
//! sets there (RTMP sends a fresh sequence header, HLS starts a discontinuity). Each layer's
//! timestamps come from its own SSRC's clock mapping; should one be placed at or before what
//! already went out, the new layer's units are shifted forward so the stream never steps back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::h264::sps;
use super::unit::{Unit, VideoUnit};

/// Layers beyond this many (by order of first packet) are ignored: three is what publishers
/// send, and every layer costs a depacketizer and a reorder buffer.
pub const MAX_LAYERS: usize = 4;
/// How long after the first keyframe the start waits for the other layers' keyframes.
pub const START_WINDOW: Duration = Duration::from_millis(500);
/// A selected layer silent this long is replaced at another layer's next keyframe.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// Units held per layer at the start; a layer with a longer GOP than this waits for its next
/// keyframe (about 3 s at 30 fps: the start window closes long before).
const MAX_HELD: usize = 90;

/// Why the selection changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// The first selection, at the start.
    Start,
    /// To a larger layer.
    Up,
    /// Away from a layer that went silent.
    Fallback,
}

/// A layer's counters and what its SPS says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// RTP packets it came in.
    pub packets: u64,
    /// Access units it produced.
    pub units: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// Bytes of its pictures (NAL units).
    pub bytes: u64,
    /// Width and height from its latest keyframe's SPS.
    pub size: Option<(u32, u32)>,
}

impl LayerStats {
    fn pixels(&self) -> u64 {
        self.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h))
    }
}

#[derive(Debug, Default)]
struct Layer {
    stats: LayerStats,
    last_unit: Option<Instant>,
    /// At the start only: its units since its latest keyframe.
    held: Vec<VideoUnit>,
}

/// Selects the layer the single-stream outputs get. See the module docs.
#[derive(Debug)]
pub struct LayerSelect {
    expected: usize,
    layers: Vec<Layer>,
    selected: Option<usize>,
    first_keyframe: Option<Instant>,
    /// Timestamp of the last unit that went out.
    last_pts: Option<i64>,
    /// Added to the selected layer's timestamps (see the module docs).
    shift: i64,
    /// The next unit out is the first of a newly selected layer.
    switched: bool,
    switches: VecDeque<(Switch, usize)>,
}

impl LayerSelect {
    /// A selection among `expected` layers (the rids the offer announced; 1 without simulcast).
    pub fn new(expected: usize) -> Self {
        Self {
            expected: expected.clamp(1, MAX_LAYERS),
            layers: Vec::new(),
            selected: None,
            first_keyframe: None,
            last_pts: None,
            shift: 0,
            switched: false,
            switches: VecDeque::new(),
        }
    }

    /// The selected layer, once there is one.
    pub fn selected(&self) -> Option<usize> {
        self.selected
    }

    /// Counters of layer `layer`.
    pub fn layer_stats(&self, layer: usize) -> Option<LayerStats> {
        self.layers.get(layer).map(|l| l.stats)
    }

    /// The layers seen so far.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// The next change of selection, oldest first: `(why, to which layer)`.
    pub fn poll_switch(&mut self) -> Option<(Switch, usize)> {
        self.switches.pop_front()
    }

    /// When the start window closes (call [`Self::handle_timeout`] then).
    pub fn deadline(&self) -> Option<Instant> {
        match self.selected {
            None => self.first_keyframe.map(|t| t + START_WINDOW),
            Some(_) => None,
        }
    }

    /// True when the selected layer went silent: keyframes of the other layers are wanted.
    pub fn wants_fallback(&self, now: Instant) -> bool {
        self.selected
            .is_some_and(|s| self.is_stale(s, now) && self.layers.len() > 1)
    }

    /// An RTP packet of layer `layer` came in (counted only).
    pub fn packet(&mut self, layer: usize) {
        if let Some(l) = self.layer_mut(layer) {
            l.stats.packets += 1;
        }
    }

    fn layer_mut(&mut self, layer: usize) -> Option<&mut Layer> {
        if layer >= MAX_LAYERS {
            return None;
        }
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, Layer::default);
        }
        self.layers.get_mut(layer)
    }

    /// A unit of layer `layer` (`< MAX_LAYERS`); what goes out is appended to `out`.
    pub fn push(&mut self, layer: usize, unit: VideoUnit, now: Instant, out: &mut VecDeque<Unit>) {
        let stale = self.selected.is_some_and(|s| self.is_stale(s, now));
        if self.layer_mut(layer).is_none() {
            return;
        }
        let l = &mut self.layers[layer];
        l.last_unit = Some(now);
        l.stats.units += 1;
        l.stats.bytes += unit.nalus.iter().map(|n| n.len() as u64).sum::<u64>();
        if unit.keyframe {
            l.stats.keyframes += 1;
            if let Some(size) = keyframe_size(&unit) {
                l.stats.size = Some(size);
            }
        }
        match self.selected {
            None => {
                if unit.keyframe {
                    l.held.clear();
                    self.first_keyframe.get_or_insert(now);
                }
                if !l.held.is_empty() || unit.keyframe {
                    if l.held.len() < MAX_HELD {
                        l.held.push(unit);
                    } else {
                        l.held.clear();
                    }
                }
                self.decide(now, out);
            }
            Some(selected) if selected == layer => self.emit(unit, out),
            Some(selected) => {
                if !unit.keyframe {
                    return;
                }
                let up = self.layers[layer].stats.pixels() > self.layers[selected].stats.pixels();
                let why = if up {
                    Switch::Up
                } else if stale {
                    Switch::Fallback
                } else {
                    return;
                };
                self.select(why, layer);
                self.emit(unit, out);
            }
        }
    }

    /// Closes the start window when it is due.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Unit>) {
        self.decide(now, out);
    }

    fn is_stale(&self, layer: usize, now: Instant) -> bool {
        self.layers[layer]
            .last_unit
            .is_none_or(|t| now.saturating_duration_since(t) >= STALE_AFTER)
    }

    /// At the start: selects the best layer holding a keyframe once every expected layer holds
    /// one or the window closed, and sends out its held units.
    fn decide(&mut self, now: Instant, out: &mut VecDeque<Unit>) {
        let Some(first) = self.first_keyframe else {
            return;
        };
        if self.selected.is_some() {
            return;
        }
        let ready = self.layers.iter().filter(|l| !l.held.is_empty()).count();
        if ready < self.expected && now < first + START_WINDOW {
            return;
        }
        let best = (0..self.layers.len())
            .filter(|&i| !self.layers[i].held.is_empty())
            .max_by_key(|&i| {
                let s = &self.layers[i].stats;
                (s.pixels(), s.bytes)
            });
        let Some(best) = best else {
            // Every held GOP overflowed: wait for the next keyframe.
            self.first_keyframe = None;
            return;
        };
        self.select(Switch::Start, best);
        let held = std::mem::take(&mut self.layers[best].held);
        for layer in &mut self.layers {
            layer.held = Vec::new();
        }
        for unit in held {
            self.emit(unit, out);
        }
    }

    fn select(&mut self, why: Switch, layer: usize) {
        self.selected = Some(layer);
        self.shift = 0;
        self.switched = true;
        self.switches.push_back((why, layer));
    }

    fn emit(&mut self, mut unit: VideoUnit, out: &mut VecDeque<Unit>) {
        if std::mem::take(&mut self.switched)
            && let Some(last) = self.last_pts
            && unit.pts <= last
        {
            self.shift = last + 1 - unit.pts;
        }
        unit.pts += self.shift;
        unit.dts += self.shift;
        self.last_pts = Some(unit.pts);
        out.push_back(Unit::Video(unit));
    }
}

/// Width and height from the SPS a keyframe carries.
fn keyframe_size(unit: &VideoUnit) -> Option<(u32, u32)> {
    unit.nalus
        .iter()
        .find(|n| n.first().is_some_and(|b| b & 0x1f == 7))
        .and_then(|n| sps::parse(n).ok())
        .map(|s| (s.width, s.height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use bytes::Bytes;

    /// SPS of three sizes: 640x360, 320x180 and 64x64 (x264 streams).
    fn sps(layer: usize) -> Bytes {
        match layer {
            0 => testdata::video_units(0)[0].nalus[0].clone(),
            // x264, constrained baseline, 320x180.
            1 => testdata::hex("6742c00cd901419f9f011000000300100000030320f142a480"),
            _ => testdata::hex(testdata::HIGH_SPS),
        }
    }

    /// A picture of `size` (0 largest, 2 smallest) at frame `n` (30 fps), carrying its size
    /// in its one slice byte so the tests can tell layers apart in the output.
    fn unit(size: usize, n: i64, keyframe: bool) -> VideoUnit {
        let slice = Bytes::from(vec![if keyframe { 0x65 } else { 0x41 }, size as u8]);
        let nalus = if keyframe {
            [sps(size), Bytes::from_static(&[0x68, 0xce]), slice]
                .into_iter()
                .collect()
        } else {
            [slice].into_iter().collect()
        };
        VideoUnit {
            pts: n * 3000,
            dts: n * 3000,
            keyframe,
            nalus,
        }
    }

    /// `(size, pts)` of what came out.
    fn out(units: &VecDeque<Unit>) -> Vec<(u8, i64)> {
        units
            .iter()
            .map(|u| match u {
                Unit::Video(v) => (v.nalus.last().unwrap()[1], v.pts),
                Unit::Audio(_) => panic!("audio out of the layer selection"),
            })
            .collect()
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_sizes_used_here_are_ordered() {
        let pixels: Vec<u64> = (0..3)
            .map(|i| {
                let s = sps::parse(&sps(i)).unwrap();
                u64::from(s.width) * u64::from(s.height)
            })
            .collect();
        assert!(pixels[0] > pixels[1] && pixels[1] > pixels[2], "{pixels:?}");
    }

    /// OBS's and Chrome's layers come in any order (rid "0" may be the largest or not): the
    /// start waits for every announced layer's keyframe, then takes the largest, with the
    /// pictures it held since that keyframe.
    #[test]
    fn the_largest_layer_is_chosen_whatever_order_the_layers_come_in() {
        for order in [[2, 1, 0], [0, 1, 2], [1, 0, 2], [2, 0, 1]] {
            let t0 = Instant::now();
            let mut select = LayerSelect::new(3);
            let mut q = VecDeque::new();
            // Layer numbers are the order of arrival; `order[layer]` is that layer's size.
            for n in 0..3 {
                for (layer, &size) in order.iter().enumerate() {
                    let keyframe = n == 0;
                    if n == 0 && layer == 2 {
                        assert!(q.is_empty(), "nothing out before the last layer's keyframe");
                    }
                    select.push(
                        layer,
                        unit(size, n, keyframe),
                        ms(t0, n as u64 * 33),
                        &mut q,
                    );
                }
            }
            let top = order.iter().position(|&s| s == 0).unwrap();
            assert_eq!(select.selected(), Some(top), "{order:?}");
            let expect: Vec<(u8, i64)> = (0..3).map(|n| (0, n * 3000)).collect();
            assert_eq!(out(&q), expect, "{order:?}");
            assert_eq!(select.poll_switch(), Some((Switch::Start, top)));
            assert_eq!(select.poll_switch(), None);
            assert_eq!(select.layer_stats(top).unwrap().size, Some((640, 360)));
        }
    }

    #[test]
    fn a_single_layer_is_not_held() {
        let t0 = Instant::now();
        let mut select = LayerSelect::new(1);
        let mut q = VecDeque::new();
        select.push(0, unit(1, 0, false), t0, &mut q);
        assert!(q.is_empty(), "nothing before the first keyframe");
        select.push(0, unit(1, 1, true), t0, &mut q);
        assert_eq!(out(&q), [(1, 3000)]);
        assert_eq!(select.deadline(), None);
    }

    /// A layer the offer announced but the publisher does not send (paused, or bandwidth too
    /// low for it) delays the start by the window only.
    #[test]
    fn the_start_window_closes_without_a_missing_layer() {
        let t0 = Instant::now();
        let mut select = LayerSelect::new(3);
        let mut q = VecDeque::new();
        select.push(0, unit(1, 0, true), t0, &mut q);
        select.push(1, unit(2, 0, true), ms(t0, 1), &mut q);
        select.push(0, unit(1, 1, false), ms(t0, 33), &mut q);
        assert!(q.is_empty());
        assert_eq!(select.deadline(), Some(t0 + START_WINDOW));
        select.handle_timeout(ms(t0, 100), &mut q);
        assert!(q.is_empty(), "not due yet");
        select.handle_timeout(t0 + START_WINDOW, &mut q);
        assert_eq!(out(&q), [(1, 0), (1, 3000)]);
        assert_eq!(select.deadline(), None);
    }

    /// The selected layer goes silent: the next keyframe of another layer takes over, later
    /// pictures of the silent layer's size are gone; when it is back, its keyframe switches up.
    /// Pictures that are not keyframes never switch.
    #[test]
    fn a_silent_layer_falls_back_and_comes_back_up() {
        let t0 = Instant::now();
        let mut select = LayerSelect::new(2);
        let mut q = VecDeque::new();
        select.push(0, unit(0, 0, true), t0, &mut q);
        select.push(1, unit(1, 0, true), t0, &mut q);
        assert_eq!(select.selected(), Some(0));
        // Layer 0 stops after frame 0; layer 1 goes on.
        let mut n = 1;
        while ms(t0, n as u64 * 33) < t0 + STALE_AFTER {
            select.push(1, unit(1, n, n % 40 == 0), ms(t0, n as u64 * 33), &mut q);
            assert!(!select.wants_fallback(ms(t0, n as u64 * 33)));
            n += 1;
        }
        assert!(select.wants_fallback(ms(t0, n as u64 * 33)));
        select.push(1, unit(1, n, false), ms(t0, n as u64 * 33), &mut q);
        assert_eq!(select.selected(), Some(0), "only a keyframe switches");
        n += 1;
        select.push(1, unit(1, n, true), ms(t0, n as u64 * 33), &mut q);
        assert_eq!(select.selected(), Some(1));
        assert!(!select.wants_fallback(ms(t0, n as u64 * 33)));
        let fell_back_at = n;
        n += 1;
        select.push(0, unit(0, n, false), ms(t0, n as u64 * 33), &mut q);
        select.push(1, unit(1, n, false), ms(t0, n as u64 * 33), &mut q);
        n += 1;
        select.push(0, unit(0, n, true), ms(t0, n as u64 * 33), &mut q);
        select.push(1, unit(1, n, false), ms(t0, n as u64 * 33), &mut q);
        assert_eq!(
            out(&q),
            [
                (0, 0),
                (1, fell_back_at * 3000),
                (1, (fell_back_at + 1) * 3000),
                (0, (fell_back_at + 2) * 3000),
            ]
        );
        let switches: Vec<_> = std::iter::from_fn(|| select.poll_switch()).collect();
        assert_eq!(
            switches,
            [(Switch::Start, 0), (Switch::Fallback, 1), (Switch::Up, 0)]
        );
    }

    /// Layers are timed by their own SSRCs' clocks: one placed a little behind the other must
    /// not step the stream back at a switch.
    #[test]
    fn a_switch_never_steps_back() {
        let t0 = Instant::now();
        let mut select = LayerSelect::new(2);
        let mut q = VecDeque::new();
        select.push(0, unit(1, 10, true), t0, &mut q);
        select.push(1, unit(2, 10, true), t0, &mut q);
        select.push(0, unit(1, 11, false), t0, &mut q);
        // A larger layer appears, its clock 2 frames behind.
        let mut late = unit(0, 10, true);
        late.pts -= 3000;
        late.dts -= 3000;
        select.push(2, late, ms(t0, 33), &mut q);
        let mut next = unit(0, 11, false);
        next.pts -= 3000;
        next.dts -= 3000;
        select.push(2, next, ms(t0, 66), &mut q);
        let pts: Vec<i64> = out(&q).into_iter().map(|(_, p)| p).collect();
        assert_eq!(pts, [30_000, 33_000, 33_001, 36_001]);
        assert_eq!(select.selected(), Some(2));
    }

    #[test]
    fn layers_past_the_limit_are_ignored() {
        let t0 = Instant::now();
        let mut select = LayerSelect::new(9);
        let mut q = VecDeque::new();
        select.push(MAX_LAYERS, unit(0, 0, true), t0, &mut q);
        assert_eq!(select.layers(), 0);
        assert_eq!(select.deadline(), None);
    }
}
