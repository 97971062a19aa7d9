import { test, expect, boardIds, event, expectScore, hydrated, live, postEvent, screenshot, unique, watchConsole } from "./helpers";

test("events POSTed to the REST API appear on an open dashboard, in order, without a reload", async ({ page, request }) => {
  const errors = watchConsole(page);
  const prefix = unique("live");
  await page.goto(`/?search=${prefix}`);
  await live(page);
  await expect(page.locator(".empty")).toBeVisible();
  // A marker that a reload or navigation would wipe out.
  await page.evaluate(() => ((window as any).__stillHere = true));

  const [a, b, c] = ["a", "b", "c"].map((s) => `${prefix}-${s}`);
  await postEvent(request, event(a, "Page View")); // 5
  await postEvent(request, event(b, "Purchase")); // 100
  await postEvent(request, event(c, "Email Open")); // 10
  await expect.poll(() => boardIds(page)).toEqual([b, c, a]);

  await postEvent(request, event(a, "Demo Request")); // a: 55, overtakes c
  await postEvent(request, event(a, "Purchase")); // a: 155, overtakes b
  await expect.poll(() => boardIds(page)).toEqual([a, b, c]);
  await expect(page.locator(`tr[data-lead="${a}"] td.score`)).toHaveText("155");
  await expect(page.locator(`tr[data-lead="${a}"] td.rank`)).toHaveText("1");

  expect(await page.evaluate(() => (window as any).__stillHere)).toBe(true);
  expect(errors).toEqual([]);
});

test("filters are evaluated on the server and kept in the URL", async ({ page, request }) => {
  const prefix = unique("filter");
  for (const [lead, type] of [["x", "Purchase"], ["y", "Email Open"], ["z", "Form Submission"]]) {
    await postEvent(request, event(`${prefix}-${lead}`, type));
  }
  await page.goto(`/`);
  await live(page);
  await page.getByLabel("Search id, email, name, company").fill(prefix);
  await page.getByLabel("Min score").fill("15");
  await page.getByRole("button", { name: "Apply" }).click();
  await expect(page).toHaveURL(new RegExp(`search=${prefix}.*minScore=15`));
  await expect.poll(() => boardIds(page)).toEqual([`${prefix}-x`, `${prefix}-z`]);
  // The URL alone reproduces the view.
  await page.goto(`/?search=${prefix}&maxScore=15&limit=10`);
  await expect.poll(() => boardIds(page)).toEqual([`${prefix}-y`]);
});

test("the test-event form validates inline and sends to the chosen lead", async ({ page, request }) => {
  const lead = unique("form");
  await page.goto(`/?search=${lead}`);
  await live(page);
  const form = page.locator("form.stack");
  await form.getByRole("button", { name: "Send event" }).click();
  await expect(form.locator(".field-errors")).toContainText("leadId is required");
  await form.getByLabel("Lead id").fill(lead);
  await form.getByLabel("Event type").selectOption("Form Submission");
  await form.getByLabel("Metadata").fill("{not json");
  await form.getByRole("button", { name: "Send event" }).click();
  await expect(form.locator(".field-errors")).toContainText("metadata is not valid JSON");
  await form.getByLabel("Metadata").fill('{"campaign": "spring"}');
  await form.getByRole("button", { name: "Send event" }).click();
  await expect(form.locator(".notice.ok")).toContainText("Accepted");
  await expect.poll(() => boardIds(page)).toEqual([lead]);
  await expect(page.locator(`tr[data-lead="${lead}"] td.score`)).toHaveText("20");
  const detail = await (await request.get(`/api/leads/${lead}`)).json();
  expect(detail.events[0].metadata).toEqual({ campaign: "spring" });
});

test("the overview counts leads and today's events, shows the live rate and the score spread", async ({ page, request }) => {
  await page.goto("/");
  await hydrated(page);
  const leadsBefore = Number(await page.locator("#ov-leads").textContent());
  const todayBefore = Number(await page.locator("#ov-events-today").textContent());
  const prefix = unique("overview");
  for (const n of [1, 2, 3]) await postEvent(request, event(`${prefix}-${n}`, "Purchase"));
  await expectScore(request, `${prefix}-3`, 100);
  // Live: the rate counts the stream's events without a reload.
  await expect(page.locator("#ov-rate")).not.toHaveText("0.0 events/s");
  // The figures refresh on their own every few seconds, to what the server counts now (with
  // our three leads and events; the page's first figures may be up to 2 s old, its cache).
  const histogram = page.locator("#score-histogram .bucket");
  await expect
    .poll(
      async () => {
        const now = await (await request.get("/api/overview")).json();
        const shown = Number(await page.locator("#ov-leads").textContent());
        const today = Number(await page.locator("#ov-events-today").textContent());
        const binned = await histogram.evaluateAll((bs) => bs.reduce((n, b) => n + Number(b.getAttribute("data-leads")), 0));
        return shown === now.leads && today === now.eventsToday && binned === shown && shown >= leadsBefore + 3 && today >= todayBefore + 3;
      },
      { timeout: 15_000 },
    )
    .toBe(true);
  expect(await histogram.count()).toBeGreaterThan(0);
  await screenshot(page, "overview");
});
