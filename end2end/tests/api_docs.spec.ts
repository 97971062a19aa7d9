import { test, expect, screenshot, watchConsole } from "./helpers";

test("the API reference page lists every route and calls the API from the page", async ({ page, request }) => {
  const errors = watchConsole(page);
  const spec = await (await request.get("/api/openapi.json")).json();
  const operations = Object.values(spec.paths as Record<string, object>).reduce(
    (n: number, item) => n + Object.keys(item).length,
    0,
  );

  // The short address leads to the page; everything it loads is ours (no CDN), under its CSP.
  await page.goto("/api/docs");
  await expect(page).toHaveURL(/\/api\/docs\/index\.html$/);
  await expect(page.locator(".information-container .title")).toContainText("Leadscore API");
  await expect(page.locator(".opblock")).toHaveCount(operations);

  // An operation shows its body, its access rule from the policy and its answers.
  const post = page.locator(".opblock-post", { has: page.locator('[data-path="/api/events"]') });
  await post.locator(".opblock-summary").click();
  await expect(post).toContainText("Access: ingest");
  await expect(post.locator(".responses-table")).toContainText("202");
  await expect(post.locator(".responses-table")).toContainText("409");

  // Try it out (on from the start): the page calls the server with the signed-in session.
  const health = page.locator(".opblock-get", { has: page.locator('[data-path="/api/health"]') });
  await health.locator(".opblock-summary").click();
  await health.getByRole("button", { name: "Execute" }).click();
  const live = health.locator(".live-responses-table");
  await expect(live.locator("td.response-col_status:not(.col_header)")).toContainText("200");
  await expect(live).toContainText('"status": "ok"');
  await screenshot(page, "api-docs");
  expect(errors).toEqual([]);
});
