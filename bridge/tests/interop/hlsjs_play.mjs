// Drives headless Chromium (Debian's /usr/bin/chromium through playwright-core) to play an HLS
// stream with hls.js, the player most web pages use.
//
// Usage: node hlsjs_play.mjs PLAYLIST_URL [SECONDS]
//
// Serves play.html and hls.js from node_modules on 127.0.0.1, loads the page, waits until it
// played SECONDS of media (or failed), prints the page's log to stderr and its outcome to stdout
// as one line: RESULT {json}. Exit 0 when it played.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [playlist, secondsArg] = process.argv.slice(2);
if (!playlist) {
  console.error("usage: hlsjs_play.mjs PLAYLIST_URL [SECONDS]");
  process.exit(2);
}
const seconds = Number(secondsArg || "10");
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const files = {
  "/": { path: join(here, "play.html"), type: "text/html; charset=utf-8" },
  "/hls.js": { path: require.resolve("hls.js/dist/hls.min.js"), type: "text/javascript" },
};

const server = createServer(async (req, res) => {
  const file = files[new URL(req.url, "http://x").pathname];
  if (!file) {
    res.writeHead(req.url === "/favicon.ico" ? 204 : 404).end();
    return;
  }
  res.writeHead(200, { "Content-Type": file.type, "Cache-Control": "no-store" });
  res.end(await readFile(file.path));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = new URL(`http://127.0.0.1:${server.address().port}/`);
pageUrl.searchParams.set("src", playlist);
pageUrl.searchParams.set("seconds", String(seconds));

let browser;
let outcome;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--autoplay-policy=no-user-gesture-required",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  const page = await browser.newPage();
  page.on("console", (msg) => console.error(`page: ${msg.text()}`));
  page.on("pageerror", (err) => console.error(`page error: ${err}`));
  await page.goto(pageUrl.href);
  await page.waitForFunction(() => window.result !== null, null, {
    timeout: (seconds + 30) * 1000,
    polling: 200,
  });
  outcome = await page.evaluate(() => window.result);
} catch (err) {
  outcome = { ok: false, error: `driver: ${err}` };
} finally {
  if (browser) await browser.close().catch(() => {});
  server.close();
}
console.log(`RESULT ${JSON.stringify(outcome)}`);
process.exit(outcome.ok ? 0 : 1);
