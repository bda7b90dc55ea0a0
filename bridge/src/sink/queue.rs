//! The bounded queue in front of each output. A slow or dead output must never slow ingest or
//! another output: when its queue is full, it loses units up to the next keyframe (so what it
//! does get always decodes), and the loss is counted.

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::media::unit::Unit;

/// What happened to a pushed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped (queue full, or waiting for a keyframe after a drop).
    Dropped,
    /// The output has gone away.
    Closed,
}

/// Sending side of one output's queue.
#[derive(Debug)]
pub struct OutputQueue {
    tx: mpsc::Sender<Unit>,
    dropping: bool,
    drops: Counter,
}

impl OutputQueue {
    /// A queue of `depth` units; drops are added to `drops`.
    pub fn new(depth: usize, drops: Counter) -> (Self, mpsc::Receiver<Unit>) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (
            Self {
                tx,
                dropping: false,
                drops,
            },
            rx,
        )
    }

    /// Offers a unit (a cheap clone: the payloads are shared `Bytes`).
    pub fn push(&mut self, unit: &Unit) -> Pushed {
        if self.dropping {
            let keyframe = matches!(unit, Unit::Video(v) if v.keyframe);
            if !keyframe {
                self.drops.inc();
                return Pushed::Dropped;
            }
        }
        match self.tx.try_send(unit.clone()) {
            Ok(()) => {
                self.dropping = false;
                Pushed::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropping = true;
                self.drops.inc();
                Pushed::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::unit::{AudioFrame, VideoUnit};
    use bytes::Bytes;

    fn video(pts: i64, keyframe: bool) -> Unit {
        Unit::Video(VideoUnit {
            pts,
            dts: pts,
            keyframe,
            nalus: [Bytes::from_static(b"\x65")].into_iter().collect(),
        })
    }

    fn audio(pts: i64) -> Unit {
        Unit::Audio(AudioFrame {
            pts,
            duration: 1800,
            data: Bytes::from_static(b"\xf8"),
        })
    }

    #[test]
    fn a_full_queue_drops_until_the_next_keyframe() {
        let drops = Counter::default();
        let (mut q, mut rx) = OutputQueue::new(2, drops.clone());
        assert_eq!(q.push(&video(0, true)), Pushed::Queued);
        assert_eq!(q.push(&audio(0)), Pushed::Queued);
        assert_eq!(q.push(&video(3000, false)), Pushed::Dropped, "full");
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        // Room again, but the GOP is broken: inter frames and audio wait for a keyframe.
        assert_eq!(q.push(&video(6000, false)), Pushed::Dropped);
        assert_eq!(q.push(&audio(6000)), Pushed::Dropped);
        assert_eq!(q.push(&video(9000, true)), Pushed::Queued);
        assert_eq!(q.push(&audio(9000)), Pushed::Queued);
        assert_eq!(drops.get(), 3);
        drop(rx);
        assert_eq!(q.push(&audio(9000)), Pushed::Closed);
    }
}
