import { test, expect, event, expectScore, hydrated, postEvent, screenshot, unique } from "./helpers";

test("after a rule edit, an editor rescores every lead from the rules page and the progress stays after a reload", async ({ page, request }) => {
  const type = unique("Rescored Webinar");
  expect((await request.post("/api/rules", { data: { eventType: type, points: 10 } })).status()).toBe(200);
  const lead = unique("rescore-lead");
  await postEvent(request, event(lead, type));
  await postEvent(request, event(lead, type));
  await expectScore(request, lead, 20);

  await page.goto("/rules");
  await hydrated(page);
  const row = page.locator(`tr[data-rule="${type}"]`);
  await row.getByRole("spinbutton").fill("25");
  await row.getByRole("button", { name: "Save" }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Saved “${type}”: +25 points`);
  // The edit alone changes no past score; the page says so and offers the rescore.
  await expect(page.locator("#rescore-hint")).toBeVisible();
  await expectScore(request, lead, 20);

  await page.locator("#rescore-start").click();
  const progress = page.locator("#rescore-progress");
  await expect(progress).toHaveAttribute("data-state", "done", { timeout: 30_000 });
  await expectScore(request, lead, 50);
  await expect(page.locator("#rescore-summary")).toContainText(/^Done .*: \d+ of \d+ leads changed, at [\d,]+ events\/s\.$/);
  await expect(page.locator("#rescore-hint")).toHaveCount(0);
  // The bar is full and counts what the job replayed, as the API reports it.
  const bar = progress.locator("progress");
  expect(await bar.getAttribute("value")).toBe(await bar.getAttribute("max"));
  const processed = Number(await progress.getAttribute("data-processed"));
  expect(processed).toBeGreaterThanOrEqual(2);
  await screenshot(page, "rescore-done");

  // A reload shows the same job: its progress lives on the server.
  await page.reload();
  await hydrated(page);
  await expect(progress).toHaveAttribute("data-state", "done");
  await expect(progress).toHaveAttribute("data-processed", String(processed));
  await expect(page.locator("#rescore-count")).toContainText(" events");

  // The lead's history explains the change: one Rescore entry for the difference.
  await page.goto(`/leads/${lead}`);
  await hydrated(page);
  await expect(page.locator("#history tbody tr").first()).toContainText("Rescore");
  await expect(page.locator("#history tbody tr").first()).toContainText("+30");
  await expect(page.locator("#events tbody tr").first()).toContainText("Rescore with the current rules");
  await expect(page.locator("#events tbody tr").nth(1)).toContainText("+25");
  await screenshot(page, "rescore-lead");
});
