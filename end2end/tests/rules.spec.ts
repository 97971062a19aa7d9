import { test, expect, event, expectScore, hydrated, postEvent, unique } from "./helpers";

test("editing a rule's points in the form changes the points of the next event", async ({ page, request }) => {
  const type = unique("Webinar");
  expect((await request.post("/api/rules", { data: { eventType: type, points: 7 } })).status()).toBe(200);
  const lead = unique("rules-lead");
  await postEvent(request, event(lead, type));
  await expectScore(request, lead, 7);

  await page.goto("/rules");
  await hydrated(page);
  const row = page.locator(`tr[data-rule="${type}"]`);
  await expect(row.getByRole("spinbutton")).toHaveValue("7");
  await row.getByRole("spinbutton").fill("42");
  await row.getByRole("button", { name: "Save" }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Saved “${type}”: +42 points`);

  await postEvent(request, event(lead, type));
  await expectScore(request, lead, 7 + 42);

  // Switching the rule off makes the next event score 0, and says so.
  await row.getByRole("checkbox").click();
  await expect(page.locator("#rules-feedback")).toContainText("inactive");
  await postEvent(request, event(lead, type));
  await expect
    .poll(async () => (await (await request.get(`/api/leads/${lead}`)).json()).history.length)
    .toBe(3);
  await expectScore(request, lead, 49);
});

test("invalid points are reported next to the rule, and new rules can be added", async ({ page, request }) => {
  await page.goto("/rules");
  await hydrated(page);
  const type = unique("Trial Signup");
  const form = page.locator("#new-rule");
  await form.getByLabel("Event type").fill(type);
  await form.getByRole("button", { name: "Add rule" }).click();
  await expect(page.locator(".field-errors")).toContainText("points is required");
  await form.getByLabel("Points").fill("-15");
  await form.getByRole("button", { name: "Add rule" }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Saved “${type}”: -15 points, active`);
  await expect(page.locator(`tr[data-rule="${type}"] input[type=number]`)).toHaveValue("-15");
  const rules = await (await request.get("/api/rules")).json();
  expect(rules.find((r: any) => r.eventType === type)).toMatchObject({ points: -15, isActive: true });
});
