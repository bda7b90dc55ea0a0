// What the Chromium drivers share: a loopback HTTP server for a test page and its scripts, and
// headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM, through playwright-core) running
// that page until it sets `window.result`.
import { createHash, X509Certificate } from "node:crypto";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { chromium } from "playwright-core";

/// Flags every run wants: no sandbox (root in CI), no GPU, nothing phoning home.
const COMMON_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/// Chromium's flag trusting the certificates of the PEM file $SSL_CERT_FILE (a test CA, as
/// OpenSSL's clients take it): the SHA-256 of each one's key. Chromium accepts a chain that
/// holds one of them, so the server must send the CA after its leaf.
function trustArgs() {
  const file = process.env.SSL_CERT_FILE;
  if (!file) return [];
  const pins = readFileSync(file, "utf8")
    .split(/(?=-----BEGIN CERTIFICATE-----)/)
    .filter((pem) => pem.includes("-----BEGIN CERTIFICATE-----"))
    .map((pem) => new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }))
    .map((spki) => createHash("sha256").update(spki).digest("base64"));
  return [`--ignore-certificate-errors-spki-list=${pins.join(",")}`];
}

/// One line on stderr for `request` once its answer (or failure) is in: `request: METHOD URL ->
/// STATUS authorization=sent|none origin=ORIGIN`, the headers as the browser sent them.
async function showRequest(request) {
  const response = await request.response();
  const outcome = response ? `-> ${response.status()}` : `failed: ${request.failure()?.errorText}`;
  const headers = await request.allHeaders().catch(() => ({}));
  const authorization = "authorization" in headers ? "sent" : "none";
  console.error(
    `request: ${request.method()} ${request.url()} ${outcome} `
    + `authorization=${authorization} origin=${headers.origin}`,
  );
}

/// Serves `files` (`{ "/path": { path, type } }`) on 127.0.0.1 (a secure context), loads the
/// page at "/" with `params`, waits up to `timeoutMs` for `window.result`, prints the page's log
/// to stderr and `RESULT {json}` to stdout (what `select`, run in the page, picks of the result),
/// and exits 0 when the result says ok.
///
/// With `logRequests`, every request the page makes to another origin goes to stderr once its
/// answer is in, each hop of a redirect on its own line (see `showRequest`). The page cannot see what its browser sent on a redirect (whether it kept the
/// Authorization header, which Origin it gave); this can. Playwright reports no CORS preflight.
export async function runPage({
  files,
  params,
  chromiumArgs = [],
  timeoutMs,
  select = () => window.result,
  logRequests = false,
}) {
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
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) pageUrl.searchParams.set(name, String(value));
  }

  let browser;
  let outcome;
  // The request lines still to come: each is written once its request's answer is in.
  const shown = [];
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      timeout: 30000,
      args: [...COMMON_ARGS, ...trustArgs(), ...chromiumArgs],
    });
    const page = await browser.newPage();
    page.on("console", (msg) => console.error(`page: ${msg.text()}`));
    page.on("pageerror", (err) => console.error(`page error: ${err}`));
    if (logRequests) {
      // Taken as each request starts, so that every one the page made is waited for below.
      page.on("request", (request) => {
        if (new URL(request.url()).origin !== pageUrl.origin) shown.push(showRequest(request));
      });
    }
    await page.goto(pageUrl.href);
    await page.waitForFunction(() => window.result !== null, null, {
      timeout: timeoutMs,
      polling: 200,
    });
    outcome = await page.evaluate(select);
    // Bounded: a request that never ends must not hold the outcome back.
    await Promise.race([Promise.all(shown), new Promise((resolve) => setTimeout(resolve, 10000))]);
  } catch (err) {
    outcome = { ok: false, error: `driver: ${err}` };
  } finally {
    if (browser) await browser.close().catch(() => {});
    server.close();
  }
  console.log(`RESULT ${JSON.stringify(outcome)}`);
  process.exit(outcome.ok ? 0 : 1);
}
