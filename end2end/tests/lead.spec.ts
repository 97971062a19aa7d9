import { readFile } from "node:fs/promises";
import { test, expect, event, expectScore, hydrated, postEvent, screenshot, unique } from "./helpers";

test("the lead page chart has one step per history entry and the table matches", async ({ page, request }) => {
  const lead = unique("lead page/ü"); // a slash and unicode must survive the URL
  const types = ["Page View", "Email Open", "Purchase", "Form Submission"];
  for (const t of types) await postEvent(request, event(lead, t, { metadata: { source: t } }));
  await expectScore(request, lead, 5 + 10 + 100 + 20);

  await page.goto("/");
  await hydrated(page);
  await page.goto(`/?search=${encodeURIComponent(lead)}`);
  await page.getByRole("link", { name: lead }).click();
  await expect(page.locator("h1.lead-title")).toHaveText(lead);
  await hydrated(page);
  await expect(page.locator("#lead-score")).toHaveText("135");

  const points = page.locator("svg.chart circle.step-point");
  const rows = page.locator("#history tbody tr");
  await expect(points).toHaveCount(4);
  await expect(rows).toHaveCount(4);
  // The chart is chronological; the table is newest first.
  const tips = await points.locator("title").allTextContents();
  const newScores = (await rows.locator("td.new-score").allTextContents()).reverse();
  expect(tips.map((t) => t.split(" → ")[1].split(" ")[0])).toEqual(newScores);
  expect(newScores).toEqual(["5", "15", "115", "135"]);
  expect(await page.locator("svg.chart path.step-line").getAttribute("d")).toMatch(/^M[\d.]+,[\d.]+( H[\d.]+ V[\d.]+){4}$/);
  await expect(page.locator("#events tbody tr")).toHaveCount(4);
  await expect(page.locator("#events")).toContainText('{"source":"Purchase"}');

  // Live: a new event for this lead adds a step without a reload.
  await postEvent(request, event(lead, "Demo Request"));
  await expect(points).toHaveCount(5);
  await expect(page.locator("#lead-score")).toHaveText("185");
});

test("an unknown lead says so", async ({ page }) => {
  await page.goto("/leads/nobody-at-all");
  await expect(page.locator("h1")).toHaveText("Lead not found");
});

test("the leaderboard and a lead's page download their CSV exports with the filters applied", async ({ page, request }) => {
  const prefix = unique("csv-lead");
  const warm = `${prefix}-warm`;
  await postEvent(request, event(warm, "Demo Request"));
  await postEvent(request, event(`${prefix}-cold`, "Page View"));
  await expectScore(request, warm, 50);
  await expectScore(request, `${prefix}-cold`, 5);

  await page.goto(`/?search=${encodeURIComponent(prefix)}&stage=Warm`);
  await hydrated(page);
  const [leads] = await Promise.all([page.waitForEvent("download"), page.locator("#export-leads").click()]);
  expect(leads.suggestedFilename()).toBe("leads.csv");
  const rows = (await readFile((await leads.path())!, "utf8")).trim().split("\r\n");
  expect(rows[0]).toBe("id,score,stage,eventCount,lastEventId,lastEventAt,updatedAt");
  expect(rows.slice(1).map((r) => r.split(",").slice(0, 3).join(","))).toEqual([`${warm},50,Warm`]);

  await page.goto(`/leads/${warm}`);
  await hydrated(page);
  const [history] = await Promise.all([page.waitForEvent("download"), page.locator("#export-history").click()]);
  const lines = (await readFile((await history.path())!, "utf8")).trim().split("\r\n");
  expect(lines[0]).toBe("timestamp,eventId,eventType,delta,oldScore,newScore,stageFrom,stageTo");
  expect(lines[1]).toMatch(/,Demo Request,50,0,50,Cold,Warm$/);
  await screenshot(page, "lead-export");
});

test("identify traits show as the lead's profile, on the leaderboard and in search", async ({ page, request }) => {
  const lead = unique("profile-lead");
  const email = `${unique("ada")}@example.com`;
  const r = await request.post("/v1/identify", {
    data: { userId: lead, traits: { email, firstName: "Ada", lastName: "Lovelace", company: "Analytical Engines", title: "CTO" } },
  });
  expect(r.status()).toBe(200);
  await postEvent(request, event(lead, "Demo Request"));
  await expectScore(request, lead, 50);

  // Search by the email finds the lead, and its row says who it is.
  await page.goto(`/?search=${encodeURIComponent(email.toUpperCase())}`);
  await hydrated(page);
  const row = page.locator(`#leaderboard tr[data-lead="${lead}"]`);
  await expect(row.locator(".person")).toHaveText("Ada Lovelace · Analytical Engines");
  await expect(page.locator("#leaderboard tbody tr")).toHaveCount(1);

  await row.locator("a").click();
  await hydrated(page);
  const profile = page.locator("#profile");
  await expect(profile).toContainText(email);
  await expect(profile).toContainText("CTO");
  await screenshot(page, "lead-profile");
});

test("an identify with both ids merges the anonymous lead: the open leaderboard drops it live, its page shows the known lead", async ({ page, request }) => {
  const prefix = unique("merge");
  const anon = `${prefix}-anon`;
  const user = `${prefix}-user`;
  expect((await request.post("/v1/page", { data: { anonymousId: anon, name: "Pricing" } })).status()).toBe(200);
  await expectScore(request, anon, 5);

  await page.goto(`/?search=${encodeURIComponent(prefix)}`);
  await hydrated(page);
  await expect(page.locator(`#leaderboard tr[data-lead="${anon}"]`)).toBeVisible();

  const r = await request.post("/v1/identify", { data: { userId: user, anonymousId: anon, traits: { name: "Ada" } } });
  expect(r.status()).toBe(200);
  // No reload: the stream's leadMerged makes the page refetch.
  await expect(page.locator(`#leaderboard tr[data-lead="${user}"] .score`)).toHaveText("5");
  await expect(page.locator(`#leaderboard tr[data-lead="${anon}"]`)).toHaveCount(0);

  await page.goto(`/leads/${anon}`);
  await hydrated(page);
  await expect(page.locator(".lead-title")).toHaveText(user);
  await expect(page.locator("#merged-notice")).toContainText(`${anon} was merged into this lead`);
  await expect(page.locator("#history tbody tr").first()).toContainText("Identify");
  await screenshot(page, "lead-merged");
});

test("the leaderboard pages through every match and says how many there are", async ({ page, request }) => {
  const prefix = unique("pager");
  for (const n of [1, 2, 3]) await postEvent(request, event(`${prefix}-${n}`, "Page View"));
  await expectScore(request, `${prefix}-3`, 5);
  await page.goto(`/?search=${encodeURIComponent(prefix)}&limit=2`);
  await hydrated(page);
  const pager = page.locator("#leaderboard-pager");
  await expect(pager).toContainText("1–2 of 3");
  await expect(page.locator("#leaderboard tbody tr")).toHaveCount(2);
  await pager.getByRole("link", { name: "Next →" }).click();
  await expect(pager).toContainText("3–3 of 3");
  await expect(page.locator("#leaderboard tbody tr")).toHaveCount(1);
  await expect(page.locator("#leaderboard tbody tr .rank")).toHaveText("3");
  await expect(pager.getByRole("link", { name: "Next →" })).toHaveCount(0);
  await pager.getByRole("link", { name: "← Previous" }).click();
  await expect(pager).toContainText("1–2 of 3");
});

test("the lead chart places each change at its event's own time", async ({ page, request }) => {
  const lead = unique("timeline");
  const day = 86_400_000;
  // Uploaded now, happened 10, 9 and 1 days ago: the gaps are 1 and 8 days.
  for (const ago of [10, 9, 1]) {
    await postEvent(request, event(lead, "Page View", { timestamp: new Date(Date.now() - ago * day).toISOString() }));
  }
  await expectScore(request, lead, 15);
  await page.goto(`/leads/${lead}`);
  await hydrated(page);
  const xs = await page.locator("svg.chart circle.step-point").evaluateAll((cs) => cs.map((c) => Number(c.getAttribute("cx"))));
  expect(xs).toHaveLength(3);
  const ratio = (xs[2] - xs[1]) / (xs[1] - xs[0]);
  expect(ratio).toBeGreaterThan(7.5);
  expect(ratio).toBeLessThan(8.5);
  const ticks = await page.locator("svg.chart text.tick").allTextContents();
  expect(new Set(ticks.slice(-2)).size).toBe(2); // first and last event times differ
  await screenshot(page, "lead-timeline");
});
