// Plays an HLS stream in headless Chromium with a player from npm: hls.js (the one most web
// pages use) or Shaka Player.
//
// Usage: node play.mjs hlsjs|shaka PLAYLIST_URL [SECONDS] [switch]
//
// `switch`: the page goes round the levels of a multivariant playlist (hls.js page).
// A PLAYLIST_URL that is a file path (an ended HLS folder on disk, e.g. an event playlist a test
// kept) is served with everything beside it and below by the page's own server, under /media/,
// so the page reads it from its own origin.
//
// Serves the player's page and script from node_modules, waits until the page played SECONDS of
// media (or failed) and prints its outcome as one line: RESULT {json}. Exit 0 when it played.
import { createRequire } from "node:module";
import { readdirSync, statSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { runPage } from "./page.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const PLAYERS = {
  hlsjs: {
    page: join(here, "play.html"),
    script: ["/hls.js", () => require.resolve("hls.js/dist/hls.min.js")],
  },
  shaka: {
    page: join(here, "shaka.html"),
    script: ["/shaka.js", () => require.resolve("shaka-player/dist/shaka-player.compiled.js")],
  },
};

const [name, playlist, secondsArg, mode] = process.argv.slice(2);
const player = PLAYERS[name];
if (!player || !playlist) {
  console.error("usage: play.mjs hlsjs|shaka PLAYLIST_URL [SECONDS]");
  process.exit(2);
}
const seconds = Number(secondsArg || "10");
const [scriptPath, scriptFile] = player.script;
const files = {
  "/": { path: player.page, type: "text/html; charset=utf-8" },
  "/playback.js": { path: join(here, "playback.js"), type: "text/javascript" },
  [scriptPath]: { path: scriptFile(), type: "text/javascript" },
};
let src = playlist;
if (playlist.startsWith("/")) {
  const root = dirname(playlist);
  const walk = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? walk(path) : [path];
    });
  for (const path of walk(root)) {
    const type = path.endsWith(".m3u8") ? "application/vnd.apple.mpegurl" : "video/mp4";
    files[`/media/${relative(root, path)}`] = { path, type };
  }
  src = `/media/${basename(playlist)}`;
}

await runPage({
  files,
  params: { src, seconds, ...(mode === "switch" ? { switch: 1 } : {}) },
  chromiumArgs: ["--autoplay-policy=no-user-gesture-required"],
  timeoutMs: (seconds + 30) * 1000,
});
