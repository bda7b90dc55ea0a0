// Drives headless Chromium (Debian's /usr/bin/chromium through playwright-core) to publish its
// fake camera and microphone to a WHIP endpoint with a third-party WHIP client library.
//
// Usage: node chromium_publish.mjs WHIP_URL [SECONDS] [TOKEN] [restart] [simulcast] [size=WxH]
//
// restart: the client restarts ICE halfway. simulcast: the video goes out in three layers (rids
// h, m, l at 1, 1/2 and 1/4 of the size). size: the fake camera's (default 640x360).
//
// Serves publish.html and the library's whip.js on 127.0.0.1 (a secure context, so
// getUserMedia works), loads the page, waits for its outcome, prints the page's log and every
// request the browser made to the endpoint (`request: ...`, see page.mjs) to stderr and the
// outcome to stdout as one line: RESULT {json}. Exit 0 when the page published and stopped.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runPage } from "./page.mjs";

const [whipUrl, secondsArg, token, ...options] = process.argv.slice(2);
const size = options.find((o) => o.startsWith("size="))?.slice("size=".length);
const unknown = options.filter((o) => !["restart", "simulcast"].includes(o) && !o.startsWith("size="));
if (!whipUrl || unknown.length) {
  console.error("usage: chromium_publish.mjs WHIP_URL [SECONDS] [TOKEN] [restart] [simulcast] [size=WxH]");
  process.exit(2);
}
const seconds = Number(secondsArg || "5");
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const files = {
  "/": { path: join(here, "publish.html"), type: "text/html; charset=utf-8" },
  "/whip.js": { path: require.resolve("@binbat/whip-whep/whip.js"), type: "text/javascript" },
};

// Simulcast wants what a camera gives: 30 fps (the fake device's default is 20), and a bandwidth
// estimate that starts high enough for every layer. Chromium's starts at 300 kb/s, which enables
// only the lowest layer (l at 150 kb/s plus a keyframe of m now and then); GoogCC then climbs,
// and took 10-15 s on a veth to turn on all three (measured with Chromium 156): a publish of a
// few seconds would carry no top layer at all. 3 Mb/s covers h (2.5 Mb/s), m and l. And below
// 1280x720 Chromium caps the number of layers by size (2 at 640x360), unless the legacy limit
// is off; every layer asked for is what a small capture wants.
const simulcast = options.includes("simulcast");
const fakeDevice = simulcast ? "--use-fake-device-for-media-stream=fps=30" : "--use-fake-device-for-media-stream";
const fieldTrials =
  "--force-fieldtrials=WebRTC-PcFactoryDefaultBitrates/start:3000kbps,max:8000kbps/"
  + "WebRTC-LegacySimulcastLayerLimit/Disabled/";

await runPage({
  files,
  params: {
    whip: whipUrl,
    seconds,
    token,
    restart: options.includes("restart") ? "1" : undefined,
    simulcast: simulcast ? "1" : undefined,
    size,
  },
  chromiumArgs: [
    fakeDevice,
    "--use-fake-ui-for-media-stream",
    "--disable-quic",
    ...(simulcast ? [fieldTrials] : []),
  ],
  timeoutMs: (seconds + 40) * 1000,
  // The page's log went to stderr already.
  select: () => ({ ok: window.result.ok, error: window.result.error, stats: window.result.stats }),
  // What the browser sent to the WHIP endpoint, redirects included.
  logRequests: true,
});
