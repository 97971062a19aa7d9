import { createHash } from "node:crypto";
import type { Page, Response } from "@playwright/test";
import { test, expect, hydrated, live, watchConsole } from "./helpers";

// A content hash in the name: `leadscore.<22 characters of base64url MD5>.wasm`.
const HASHED = /^\/pkg\/[^/]*\.([A-Za-z0-9_-]{22})\.(js|wasm|css)$/;
const FOR_A_YEAR = "public, max-age=31536000, immutable";

test("the bundle has content-hashed names, goes out compressed, and only names true to their content are kept a year", async ({ page }) => {
  const errors = watchConsole(page);
  const responses = new Map<string, Response>();
  const downloads: string[] = [];
  const record = (r: Response) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith("/pkg/")) responses.set(path, r);
    if (path.startsWith("/pkg/")) downloads.push(path);
  };
  page.on("response", record);
  // A page of its own WASM part (the leaderboard's code is in the main WASM: next test).
  await page.goto("/rules");
  await hydrated(page);
  page.off("response", record);
  const bundle = new Map<string, { headers: Record<string, string>; body: () => Promise<Buffer> }>();
  for (const [path, r] of responses) bundle.set(path, { headers: r.headers(), body: () => r.body() });

  // The page links the JS glue, the WASM and the CSS, each by its hashed name.
  const paths = [...bundle.keys()];
  for (const kind of ["js", "wasm", "css"]) {
    expect(paths.filter((p) => p.endsWith(`.${kind}`)).length, `a .${kind} file among ${paths}`).toBeGreaterThan(0);
  }
  let kept = 0;
  for (const [path, { headers, body }] of bundle) {
    const [, hash] = path.match(HASHED) ?? [];
    expect(hash, `${path} has a hashed name`).toBeDefined();
    expect(headers["content-encoding"], path).toBe("br");
    expect(headers["vary"] ?? "", path).toMatch(/accept-encoding/i);
    if (headers["cache-control"] === FOR_A_YEAR) {
      // Kept a year only if the name is the hash of what was sent: no other build can reuse it.
      kept += 1;
      expect(createHash("md5").update(await body()).digest("base64url"), path).toBe(hash);
    } else {
      expect(headers["cache-control"], path).toBe("no-cache");
    }
  }
  expect(paths.find((p) => p.endsWith(".css")) && bundle.get(paths.find((p) => p.endsWith(".css"))!)!.headers["cache-control"]).toBe(FOR_A_YEAR);
  // The CSS and the page's bundle of WASM parts (below): the JS glue, main WASM and split
  // loader are rewritten after cargo-leptos names them, so they are revalidated instead.
  expect(kept).toBeGreaterThanOrEqual(2);

  // A first visit takes the page's WASM parts in one download, its bundle, not part by part.
  const parts = paths.filter((p) => /^\/pkg\/(chunk_|split_)/.test(p));
  expect(parts, "no part fetched on its own").toEqual([]);
  const bundles = paths.filter((p) => p.startsWith("/pkg/page__"));
  expect(bundles).toHaveLength(1);
  expect(bundles[0]).toMatch(/^\/pkg\/page__rules_route_view/);
  expect(bundle.get(bundles[0])!.headers["cache-control"]).toBe(FOR_A_YEAR);
  expect(downloads.filter((p) => p === bundles[0]), "downloaded once: the preload is what the loader uses").toHaveLength(1);
  // The page's HTML preloads that bundle, not the parts.
  const pageHtml = await (await page.request.get("/rules")).text();
  const preloads = [...pageHtml.matchAll(/<link[^>]*rel="preload"[^>]*>/g)].map((m) => m[0]);
  expect(preloads.filter((l) => l.includes(`href="${bundles[0].replace(/\.[^.]+\.wasm$/, "")}`)), `${preloads}`).toHaveLength(1);
  expect(preloads.filter((l) => /\/pkg\/(chunk_|split_)/.test(l)), "no part preloaded").toEqual([]);

  // A second visit downloads none of it again: cached, or revalidated (304, headers only).
  await page.goto("/");
  await page.goto("/rules");
  await hydrated(page);
  const transferred = await page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .map((e) => e as PerformanceResourceTiming)
      .filter((e) => new URL(e.name).pathname.startsWith("/pkg/"))
      .map((e) => ({ path: new URL(e.name).pathname, bytes: e.transferSize })),
  );
  expect(transferred.length).toBeGreaterThan(0);
  for (const { path, bytes } of transferred) expect(bytes, `${path} was not downloaded again`).toBeLessThan(1500);

  // The server's own pages are never cached that way: they carry the session's data.
  const html = await page.request.get("/");
  expect(html.headers()["cache-control"] ?? "").not.toContain("immutable");
  expect(errors).toEqual([]);
});

/** The bundles the served split loader knows: each page's parts (name → length), in order. */
async function bundleTable(page: Page, loaderPath: string) {
  const text = await (await page.request.get(loaderPath)).text();
  const marker = "const __leadscoreTable = ";
  const start = text.indexOf(marker) + marker.length;
  const table = JSON.parse(text.slice(start, text.indexOf(";\n", start))) as [string, [string, number][]][];
  return table.map(([url, parts]) => ({
    url: `/pkg/${url.replace(/^\.\//, "")}`,
    files: new Map(parts),
    size: parts.reduce((sum, [, length]) => sum + length, 0),
  }));
}

test("the leaderboard needs no WASM part, and pages opened from it fetch what they lack: their bundle when it is most of it, else the parts", async ({ page }) => {
  const errors = watchConsole(page);
  let fetched: string[] = [];
  page.on("response", (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith("/pkg/")) fetched.push(path);
  });
  await page.goto("/");
  await live(page);
  // The leaderboard is in the main WASM: no bundle and no part.
  expect(fetched.filter((p) => /^\/pkg\/(chunk_|split_|page__)/.test(p)), `${fetched}`).toEqual([]);
  const loader = fetched.find((p) => /^\/pkg\/__wasm_split\.[^/]+\.js$/.test(p));
  expect(loader, `the split loader among ${fetched}`).toBeDefined();
  const table = await bundleTable(page, loader!);

  // Each page asks for the parts it lacks at once; the loader takes a bundle holding them
  // all when they are at least 3/4 of its bytes, else fetches them one by one.
  const tour: [string, string, string][] = [
    ["Rules", "__rules_route_view", "#rules-title"],
    ["API keys", "__keys_route_view", "#keys-title"],
    ["Webhooks", "__webhooks_route_view", "#hooks-title"],
    ["Users", "__users_route_view", "#users-title"],
    ["Dead letters", "__dead_letters_route_view", "#dead-title"],
    ["Audit log", "__audit_route_view", "#audit-title"],
  ];
  const loaded = new Set<string>();
  const ways: string[] = [];
  for (const [link, split, heading] of tour) {
    fetched = [];
    await page.getByRole("link", { name: link, exact: true }).click();
    await expect(page.locator(heading)).toBeVisible();
    const own = table.find((b) => b.url.includes(`page${split}_`));
    expect(own, `a bundle for ${split}`).toBeDefined();
    const missing = [...own!.files.keys()].filter((name) => !loaded.has(name));
    expect(missing.length, `${link} brings parts of its own`).toBeGreaterThan(0);
    const bytes = (b: (typeof table)[number]) => missing.reduce((sum, n) => sum + (b.files.get(n) ?? 0), 0);
    const chosen = table.find((b) => missing.every((n) => b.files.has(n)) && bytes(b) * 4 >= b.size * 3);
    const got = fetched.filter((p) => /^\/pkg\/(chunk_|split_|page__)/.test(p)).sort();
    const want = chosen ? [chosen.url] : missing.map((n) => `/pkg/${n}.`);
    expect(got.length, `${link}: ${got} for ${want}`).toBe(want.length);
    for (const w of want.sort()) expect(got.some((g) => g.startsWith(w)), `${link}: ${w} among ${got}`).toBe(true);
    ways.push(chosen ? "bundle" : "parts");
    for (const name of own!.files.keys()) loaded.add(name);
  }
  // Both ways were taken on the way (the first page from the leaderboard needs all its parts).
  expect(ways).toContain("bundle");
  expect(ways).toContain("parts");

  // Back on the leaderboard: nothing to fetch, and it works.
  fetched = [];
  await page.getByRole("link", { name: "Leaderboard", exact: true }).click();
  await expect(page.locator("#board-title")).toBeVisible();
  expect(fetched.filter((p) => /^\/pkg\/(chunk_|split_|page__)/.test(p))).toEqual([]);
  // Hydrated pages on the way: the rule editor answers a click.
  await page.getByRole("link", { name: "Rules", exact: true }).click();
  const form = page.locator("#rule-form");
  const before = await form.locator(".condition").count();
  await form.getByRole("button", { name: "+ Add condition" }).click();
  await expect(form.locator(".condition")).toHaveCount(before + 1);
  expect(errors).toEqual([]);
});

test("without its bundle a page takes its WASM parts one by one, and works", async ({ page }) => {
  await page.route("**/pkg/page__*", (route) => route.fulfill({ status: 503, body: "" }));
  const parts: string[] = [];
  page.on("response", (r) => {
    const path = new URL(r.url()).pathname;
    if (/^\/pkg\/(chunk_|split_)/.test(path) && r.ok()) parts.push(path);
  });
  await page.goto("/rules");
  // Hydrated (the marker is set once the page's own part has hydrated) and live.
  await live(page);
  expect(parts.filter((p) => p.startsWith("/pkg/split___rules_route_view")), `${parts}`).toHaveLength(1);
  expect(parts.length).toBeGreaterThan(1);
  const form = page.locator("#rule-form");
  const before = await form.locator(".condition").count();
  await form.getByRole("button", { name: "+ Add condition" }).click();
  await expect(form.locator(".condition")).toHaveCount(before + 1);
});
