import { test, expect, event, expectScore, hydrated, postEvent, screenshot, unique } from "./helpers";
import type { APIRequestContext } from "@playwright/test";

const DAY_MS = 86_400_000;

/** Waits until a pass with this half-life finished and its adjustments are scored. */
async function passed(request: APIRequestContext, halfLifeDays: number | null) {
  await expect
    .poll(async () => (await (await request.get("/api/settings/decay")).json()).lastPass?.halfLifeDays ?? null, { timeout: 15_000 })
    .toBe(halfLifeDays);
  await expect
    .poll(async () => (await (await request.get("/api/health")).json()).queue.depth, { timeout: 15_000 })
    .toBe(0);
}

test("an editor sets a half-life on the rules page: old points decay, and come back when it is cleared", async ({ page, request }) => {
  const lead = unique("decay-lead");
  const monthAgo = new Date(Date.now() - 30 * DAY_MS).toISOString();
  await postEvent(request, event(lead, "Purchase", { timestamp: monthAgo }));
  await expectScore(request, lead, 100);
  try {
    await page.goto("/rules");
    await hydrated(page);
    const form = page.locator("#decay-form");
    const input = form.getByLabel("Half-life (days)");
    await expect(input).toHaveValue("");
    await expect(page.locator("#decay-last-pass")).toBeVisible();
    // Out of range: named, nothing saved.
    await input.fill("0.5");
    await form.getByRole("button", { name: "Save decay" }).click();
    await expect(page.locator("#decay-feedback")).toContainText("Not saved");
    await expect(page.locator("#decay .field-errors")).toContainText("halfLifeDays");
    expect((await (await request.get("/api/settings/decay")).json()).halfLifeDays).toBeNull();

    await input.fill("30");
    await form.getByRole("button", { name: "Save decay" }).click();
    await expect(page.locator("#decay-feedback")).toHaveText("Saved: points halve every 30 days.");
    // A month old at a 30-day half-life: half the points.
    await expectScore(request, lead, 50);
    await passed(request, 30);
    await page.reload();
    await hydrated(page);
    await expect(input).toHaveValue("30");
    await expect(page.locator("#decay-last-pass")).toContainText("decayed with a half-life of 30 days");
    await screenshot(page, "decay-setting");

    // The lead's page says what happened and why.
    await page.goto(`/leads/${lead}`);
    await hydrated(page);
    await expect(page.locator("#history tbody tr").first()).toContainText("Decay");
    await expect(page.locator("#history tbody tr").first()).toContainText("-50");
    await expect(page.locator("#events tbody tr").first()).toContainText("Decay (half-life 30 days)");
    await screenshot(page, "decay-lead");

    // Cleared: the points come back.
    await page.goto("/rules");
    await hydrated(page);
    await input.fill("");
    await form.getByRole("button", { name: "Save decay" }).click();
    await expect(page.locator("#decay-feedback")).toHaveText("Saved: no decay.");
    await expectScore(request, lead, 100);
  } finally {
    // Leave every other test's scores as they were: no decay, and the undo pass done.
    await request.put("/api/settings/decay", { data: { halfLifeDays: null } });
    await passed(request, null);
  }
});
