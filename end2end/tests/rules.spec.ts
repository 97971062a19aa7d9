import { test, expect, event, expectScore, hydrated, postEvent, screenshot, unique } from "./helpers";

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
  const form = page.locator("#rule-form");
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

test("a rule with a condition and a limit, made in the editor, scores, explains, changes and goes", async ({ page, request }) => {
  const type = unique("Page Seen");
  const name = unique("Pricing");
  await page.goto("/rules");
  await hydrated(page);
  const form = page.locator("#rule-form");
  await form.getByLabel("Name").fill(name);
  await form.getByLabel("Event type").fill(type);
  await form.getByLabel("Points").fill("20");
  await form.getByRole("button", { name: "+ Add condition" }).click();
  const condition = form.locator(".condition").first();
  await condition.getByLabel("Condition field").fill("page");
  await condition.getByLabel("Condition operator").selectOption("startsWith");
  await condition.getByLabel("Condition value").fill("/pricing");
  await form.locator("input[name=limitCount]").fill("1");
  await form.locator("select[name=limitPer]").selectOption("lead");
  await form.getByRole("button", { name: "Add rule" }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Saved “${name}”: +20 points, active`);
  const row = page.locator(`tr[data-rule="${type}"]`);
  await expect(row).toContainText('page startsWith "/pricing"');
  await expect(row).toContainText("1 per lead, ever");
  await screenshot(page, "rules-editor");

  // From the dashboard's test-event form: two matching events (the limit lets the first
  // count) and one that matches nothing.
  const lead = unique("pricing-lead");
  await page.goto("/");
  await hydrated(page);
  const sender = page.locator("form.stack");
  await sender.getByLabel("Lead id").fill(lead);
  await sender.getByLabel("Event type").selectOption(type);
  for (const pageViewed of ["/pricing/teams", "/Pricing", "/blog"]) {
    await sender.getByLabel("Metadata").fill(JSON.stringify({ page: pageViewed }));
    await sender.getByRole("button", { name: "Send event" }).click();
    await expect(sender.locator(".notice.ok")).toContainText("Accepted");
    await expect
      .poll(async () => (await (await request.get(`/api/leads/${lead}`)).json()).events?.map((e: any) => e.metadata.page) ?? [])
      .toContain(pageViewed);
  }
  await expect
    .poll(async () => (await (await request.get(`/api/leads/${lead}`)).json()).history?.length ?? 0)
    .toBe(3);
  await expectScore(request, lead, 20);
  await page.goto(`/leads/${lead}`);
  await hydrated(page);
  const why = page.locator("#events td.why");
  await expect(why).toHaveText(["no rule matched", `${name} 0 (limit reached)`, `${name} +20`]);
  await screenshot(page, "lead-explained");

  // Edit: new points, no condition, no limit.
  await page.goto("/rules");
  await hydrated(page);
  await row.getByRole("button", { name: `Edit ${name}` }).click();
  await expect(page.locator("#rule-editor-title")).toHaveText(`Edit “${name}”`);
  await expect(form.getByLabel("Condition value")).toHaveValue("/pricing");
  await form.getByLabel("Points").fill("30");
  await form.getByRole("button", { name: "Remove condition" }).click();
  await form.locator("input[name=limitCount]").fill("");
  await form.getByRole("button", { name: "Save changes" }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Saved “${name}”: +30 points`);
  const saved = (await (await request.get("/api/rules")).json()).find((r: any) => r.name === name);
  expect(saved).toMatchObject({ eventType: type, points: 30, conditions: [], limit: null });
  await postEvent(request, event(lead, type, { metadata: { page: "/blog" } }));
  await expectScore(request, lead, 50);

  // Delete, after a confirmation.
  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: `Delete ${name}` }).click();
  await expect(page.locator("#rules-feedback")).toContainText(`Deleted “${name}”`);
  await expect(row).toHaveCount(0);
  const left = await (await request.get("/api/rules")).json();
  expect(left.some((r: any) => r.name === name)).toBe(false);
});
