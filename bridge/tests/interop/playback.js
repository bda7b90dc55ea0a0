// What the player pages share: how playback is watched and reported. A page calls
// `watchPlayback(video, sample, extra)`: it counts stalls and seeks after the first frame, takes
// `sample()` every 250 ms while playing, and once ?seconds= of playback have passed (or
// `fail(error)` was called) leaves the outcome in window.result for the driver (page.mjs).
"use strict";
const playbackParams = new URLSearchParams(location.search);

function watchPlayback(video, sample, extra) {
  const seconds = Number(playbackParams.get("seconds") || "10");
  const loaded = performance.now();
  const samples = [];
  const errors = [];
  let firstPlaying = null;
  let stalls = 0;
  let seeks = 0;
  window.result = null;

  function finish(ok, error) {
    if (window.result !== null) return;
    const quality = video.getVideoPlaybackQuality();
    window.result = {
      ok,
      error: error || null,
      secondsToFirstFrame: firstPlaying === null ? null : (firstPlaying - loaded) / 1000,
      samples,
      stalls,
      seeks,
      errors,
      framesDecoded: quality.totalVideoFrames,
      framesDropped: quality.droppedVideoFrames,
      ...extra(),
    };
  }

  video.addEventListener("playing", () => {
    if (firstPlaying === null) firstPlaying = performance.now();
  });
  video.addEventListener("waiting", () => {
    if (firstPlaying !== null) stalls += 1;
  });
  video.addEventListener("seeking", () => {
    if (firstPlaying !== null) seeks += 1;
  });
  setInterval(() => {
    if (window.result !== null || firstPlaying === null) return;
    const s = sample();
    if (s === null) return;
    samples.push({ wallMs: Date.now(), currentTime: video.currentTime, ...s });
    if ((performance.now() - firstPlaying) / 1000 >= seconds) finish(true);
  }, 250);

  return {
    src: playbackParams.get("src"),
    errors,
    finish,
    fail: (error) => finish(false, error),
  };
}
