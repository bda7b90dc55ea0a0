// Plays an HLS stream with hls.js, the player most web pages use, in headless Chromium.
//
// Usage: node hlsjs_play.mjs PLAYLIST_URL [SECONDS]
//
// Serves play.html and hls.js from node_modules, waits until the page played SECONDS of media
// (or failed) and prints its outcome as one line: RESULT {json}. Exit 0 when it played.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runPage } from "./page.mjs";

const [playlist, secondsArg] = process.argv.slice(2);
if (!playlist) {
  console.error("usage: hlsjs_play.mjs PLAYLIST_URL [SECONDS]");
  process.exit(2);
}
const seconds = Number(secondsArg || "10");
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

await runPage({
  files: {
    "/": { path: join(here, "play.html"), type: "text/html; charset=utf-8" },
    "/hls.js": { path: require.resolve("hls.js/dist/hls.min.js"), type: "text/javascript" },
  },
  params: { src: playlist, seconds },
  chromiumArgs: ["--autoplay-policy=no-user-gesture-required"],
  timeoutMs: (seconds + 30) * 1000,
});
