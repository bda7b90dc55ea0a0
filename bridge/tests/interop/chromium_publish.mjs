// Drives headless Chromium (Debian's /usr/bin/chromium through playwright-core) to publish its
// fake camera and microphone to a WHIP endpoint with a third-party WHIP client library.
//
// Usage: node chromium_publish.mjs WHIP_URL [SECONDS] [TOKEN] [restart]
//
// Serves publish.html and the library's whip.js on 127.0.0.1 (a secure context, so
// getUserMedia works), loads the page, waits for its outcome, prints the page's log to stderr
// and the outcome to stdout as one line: RESULT {json}. Exit 0 when the page published and stopped.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runPage } from "./page.mjs";

const [whipUrl, secondsArg, token, restart] = process.argv.slice(2);
if (!whipUrl) {
  console.error("usage: chromium_publish.mjs WHIP_URL [SECONDS] [TOKEN] [restart]");
  process.exit(2);
}
const seconds = Number(secondsArg || "5");
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const files = {
  "/": { path: join(here, "publish.html"), type: "text/html; charset=utf-8" },
  "/whip.js": { path: require.resolve("@binbat/whip-whep/whip.js"), type: "text/javascript" },
};

await runPage({
  files,
  params: { whip: whipUrl, seconds, token, restart: restart === "restart" ? "1" : undefined },
  chromiumArgs: ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--disable-quic"],
  timeoutMs: (seconds + 40) * 1000,
  // The page's log went to stderr already.
  select: () => ({ ok: window.result.ok, error: window.result.error, stats: window.result.stats }),
});
