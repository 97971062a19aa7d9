import { test, expect, event, expectScore, hydrated, live, postEvent, screenshot, unique } from "./helpers";

const DEFAULT_LADDER = [
  { name: "Cold", minScore: 0 },
  { name: "Warm", minScore: 50 },
  { name: "MQL", minScore: 100 },
  { name: "SQL", minScore: 200 },
];

test("leads show their stage, stage chips count and filter, and a lead's history marks its moves", async ({ page, request }) => {
  const lead = unique("stage-lead");
  await postEvent(request, event(lead, "Demo Request"));
  await expectScore(request, lead, 50);
  // The stage changes live, without a reload.
  await page.goto(`/?search=${lead}`);
  await live(page);
  const cell = page.locator(`#leaderboard tr[data-lead="${lead}"] td.stage`);
  await expect(cell).toHaveText("Warm");
  await page.evaluate(() => ((window as any).__notReloaded = true));
  await postEvent(request, event(lead, "Purchase"));
  await expect(cell).toHaveText("MQL");
  expect(await page.evaluate(() => (window as any).__notReloaded)).toBe(true);
  await expectScore(request, lead, 150);

  await page.goto("/");
  await hydrated(page);
  const chips = page.locator("#stage-counts .stage-chip");
  await expect(chips).toHaveCount(4);
  const counts = await (await request.get("/api/stages/counts")).json();
  const mql = counts.find((c: any) => c.name === "MQL");
  await expect(page.locator('#stage-counts [data-stage="MQL"] .stage-count')).toHaveText(String(mql.leads));
  await page.locator('#stage-counts [data-stage="MQL"]').click();
  await expect(page).toHaveURL(/\?stage=MQL/);
  await expect(page.locator('#stage-counts [data-stage="MQL"]')).toHaveClass(/selected/);
  // Every row shown is in the stage.
  await expect(page.locator("#leaderboard td.stage").first()).toHaveText("MQL");
  const stages = await page.locator("#leaderboard td.stage").allTextContents();
  expect(new Set(stages)).toEqual(new Set(["MQL"]));
  await screenshot(page, "stages-dashboard");
  await page.goto(`/?stage=MQL&search=${lead}`);
  await hydrated(page);
  await expect(page.locator(`#leaderboard tr[data-lead="${lead}"] td.stage`)).toHaveText("MQL");

  await page.goto(`/leads/${lead}`);
  await hydrated(page);
  await expect(page.locator("#lead-stage")).toHaveText("MQL");
  await expect(page.locator("#history .stage-move")).toHaveText(["→ MQL", "→ Warm"]);
});

test("an editor changes the stage ladder on the rules page and leads follow it at once", async ({ page, request }) => {
  const lead = unique("ladder-lead");
  await postEvent(request, event(lead, "Form Submission"));
  await expectScore(request, lead, 20);
  try {
    await page.goto("/rules");
    await hydrated(page);
    const form = page.locator("#stage-form");
    await expect(form.getByLabel("Stage name")).toHaveCount(4);
    // A bad threshold is named; nothing is saved.
    await form.getByLabel("Stage starts at score").nth(1).fill("1.5");
    await form.getByRole("button", { name: "Save stages" }).click();
    await expect(page.locator("#stages .field-errors")).toContainText("stages[1].minScore");
    // A new rung between Cold and Warm.
    await form.getByLabel("Stage starts at score").nth(1).fill("50");
    await form.getByRole("button", { name: "+ Add stage" }).click();
    await form.getByLabel("Stage name").nth(4).fill("Engaged");
    await form.getByLabel("Stage starts at score").nth(4).fill("15");
    await form.getByRole("button", { name: "Save stages" }).click();
    await expect(page.locator("#stages .field-errors")).toContainText("stages[4].minScore");
    // Thresholds must rise: move the new stage to the right place by re-typing the rows.
    await form.getByRole("button", { name: "Remove stage" }).nth(4).click();
    const names = ["Cold", "Engaged", "Warm", "MQL", "SQL"];
    const mins = ["0", "15", "50", "100", "200"];
    await form.getByRole("button", { name: "+ Add stage" }).click();
    for (let i = 0; i < 5; i++) {
      await form.getByLabel("Stage name").nth(i).fill(names[i]);
      await form.getByLabel("Stage starts at score").nth(i).fill(mins[i]);
    }
    await form.getByRole("button", { name: "Save stages" }).click();
    await expect(page.locator("#stages-feedback")).toContainText("Saved the ladder: Cold from 0, Engaged from 15");
    await screenshot(page, "stages-ladder");
    const detail = await (await request.get(`/api/leads/${lead}`)).json();
    expect(detail.lead.stage).toBe("Engaged");
    await page.goto(`/?stage=Engaged&search=${lead}`);
    await hydrated(page);
    await expect(page.locator(`#leaderboard tr[data-lead="${lead}"] td.stage`)).toHaveText("Engaged");
  } finally {
    expect((await request.put("/api/stages", { data: DEFAULT_LADDER })).status()).toBe(200);
  }
});
