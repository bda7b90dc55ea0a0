// Drives headless Chromium (Debian's /usr/bin/chromium through playwright-core) to publish its
// fake camera and microphone to a WHIP endpoint with a third-party WHIP client library.
//
// Usage: node chromium_publish.mjs WHIP_URL [SECONDS] [TOKEN] [restart]
//
// Serves publish.html and the library's whip.js on 127.0.0.1 (a secure context, so
// getUserMedia works), loads the page, waits for its outcome, prints the page's log to stderr
// and the outcome to stdout as one line: RESULT {json}. Exit 0 when the page published and stopped.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

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
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

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
pageUrl.searchParams.set("whip", whipUrl);
pageUrl.searchParams.set("seconds", String(seconds));
if (token) pageUrl.searchParams.set("token", token);
if (restart === "restart") pageUrl.searchParams.set("restart", "1");

let browser;
let outcome;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30000,
    args: [
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
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
    timeout: (seconds + 40) * 1000,
    polling: 200,
  });
  outcome = await page.evaluate(() => ({ ok: window.result.ok, error: window.result.error, stats: window.result.stats }));
} catch (err) {
  outcome = { ok: false, error: `driver: ${err}` };
} finally {
  if (browser) await browser.close().catch(() => {});
  server.close();
}
console.log(`RESULT ${JSON.stringify(outcome)}`);
process.exit(outcome.ok ? 0 : 1);
