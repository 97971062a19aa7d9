import { test, expect, hydrated, watchConsole } from "./helpers";

// A content hash in the name: `leadscore.<22 characters of base64url MD5>.wasm`.
const HASHED = /^\/pkg\/[^/]*\.[A-Za-z0-9_-]{22}\.(js|wasm|css)$/;

test("the bundle has content-hashed names, goes out compressed and is kept for a year", async ({ page }) => {
  const errors = watchConsole(page);
  const bundle = new Map<string, Record<string, string>>();
  page.on("response", (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith("/pkg/")) bundle.set(path, r.headers());
  });

  await page.goto("/");
  await hydrated(page);

  // The page links the JS glue, the WASM and the CSS, each by its hashed name.
  const paths = [...bundle.keys()];
  for (const kind of ["js", "wasm", "css"]) {
    expect(paths.filter((p) => p.endsWith(`.${kind}`)).length, `a .${kind} file among ${paths}`).toBeGreaterThan(0);
  }
  for (const [path, headers] of bundle) {
    expect(path).toMatch(HASHED);
    expect(headers["cache-control"], path).toBe("public, max-age=31536000, immutable");
    expect(headers["content-encoding"], path).toBe("br");
  }

  // A second visit takes all of them from the browser's cache: nothing crosses the network.
  await page.goto("/rules");
  await page.goto("/");
  await hydrated(page);
  const transferred = await page.evaluate(() =>
    performance
      .getEntriesByType("resource")
      .map((e) => e as PerformanceResourceTiming)
      .filter((e) => new URL(e.name).pathname.startsWith("/pkg/"))
      .map((e) => ({ path: new URL(e.name).pathname, bytes: e.transferSize })),
  );
  expect(transferred.length).toBeGreaterThan(0);
  for (const { path, bytes } of transferred) expect(bytes, `${path} came from the cache`).toBe(0);

  // The server's own pages are never cached that way: they carry the session's data.
  const html = await page.request.get("/");
  expect(html.headers()["cache-control"] ?? "").not.toContain("immutable");
  expect(errors).toEqual([]);
});
