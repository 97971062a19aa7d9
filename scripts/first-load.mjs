// First load of a page in headless Chromium, from an empty cache to hydrated: what crosses
// the network (compressed bytes, per file) and how long it takes, on this machine's loopback
// and on an emulated slower link. Prints one JSON line. Used by scripts/bench-first-load.sh.
//   node scripts/first-load.mjs <url> [runs]
import { createRequire } from "node:module";

const require = createRequire(new URL("../end2end/package.json", import.meta.url));
const { chromium } = require("@playwright/test");

const url = process.argv[2];
const runs = Math.max(1, Math.min(50, Number(process.argv[3] ?? 10)));
if (!url) {
  console.error("usage: node scripts/first-load.mjs <url> [runs]");
  process.exit(2);
}

// The moment the app's Effect marks the page hydrated, recorded by the page itself so no
// polling delay is added.
const MARK_HYDRATED = () => {
  new MutationObserver((_, observer) => {
    if (document.querySelector("[data-hydrated=true]")) {
      window.__hydratedAt = performance.now();
      observer.disconnect();
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-hydrated"], childList: true });
};

const LINKS = {
  loopback: null,
  // A modest broadband link: 20 Mbit/s down, 5 up, 40 ms round trip.
  "20mbit-40ms": { offline: false, latency: 40, downloadThroughput: 2_500_000, uploadThroughput: 625_000 },
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"],
});

async function once(link) {
  const context = await browser.newContext(); // empty cache every time
  const page = await context.newPage();
  await page.addInitScript(MARK_HYDRATED);
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  if (LINKS[link]) await cdp.send("Network.emulateNetworkConditions", LINKS[link]);
  const files = new Map();
  const urls = new Map();
  cdp.on("Network.responseReceived", (e) => {
    urls.set(e.requestId, { path: new URL(e.response.url).pathname, encoding: e.response.headers["content-encoding"] ?? "" });
  });
  cdp.on("Network.loadingFinished", (e) => {
    const r = urls.get(e.requestId);
    if (r) files.set(r.path, { bytes: e.encodedDataLength, encoding: r.encoding });
  });
  await page.goto(url);
  await page.waitForFunction(() => window.__hydratedAt !== undefined, null, { timeout: 60_000 });
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return { hydratedMs: window.__hydratedAt, domContentLoadedMs: nav.domContentLoadedEventEnd };
  });
  const cold = new Map(files);
  // Warm: the same page again in the same browser (hashed files come from the cache).
  files.clear();
  await page.goto(url);
  await page.waitForFunction(() => window.__hydratedAt !== undefined, null, { timeout: 60_000 });
  const warmMs = await page.evaluate(() => window.__hydratedAt);
  const warmPkgBytes = [...files].filter(([p]) => p.startsWith("/pkg/")).reduce((n, [, f]) => n + f.bytes, 0);
  await context.close();
  return { ...timing, warmMs, warmPkgBytes, files: cold };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const result = { url, runs, links: {} };
for (const link of Object.keys(LINKS)) {
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(await once(link));
  const last = samples[samples.length - 1];
  const files = Object.fromEntries([...last.files].sort());
  const total = Object.values(files).reduce((n, f) => n + f.bytes, 0);
  const pkg = Object.entries(files).filter(([p]) => p.startsWith("/pkg/")).reduce((n, [, f]) => n + f.bytes, 0);
  result.links[link] = {
    hydratedMsMedian: Math.round(median(samples.map((s) => s.hydratedMs))),
    hydratedMsMax: Math.round(Math.max(...samples.map((s) => s.hydratedMs))),
    domContentLoadedMsMedian: Math.round(median(samples.map((s) => s.domContentLoadedMs))),
    warmHydratedMsMedian: Math.round(median(samples.map((s) => s.warmMs))),
    warmPkgBytes: last.warmPkgBytes,
    bytesTotal: total,
    bytesPkg: pkg,
    files,
  };
}
await browser.close();
console.log(JSON.stringify(result));
