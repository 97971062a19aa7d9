import { test, expect, event, hydrated, screenshot, unique, watchConsole } from "./helpers";

test("an admin creates an ingest key in the UI, sees it once, and it works only for ingest", async ({ page, playwright, baseURL }) => {
  const errors = watchConsole(page);
  await page.goto("/keys");
  await hydrated(page);
  const name = unique("site");
  await page.fill("#new-key-form input[name=name]", name);
  await page.click("#new-key-form button[type=submit]");
  const key = (await page.locator("#new-key").textContent())!.trim();
  expect(key).toMatch(/^lsk_/);
  await screenshot(page, "keys");
  const row = page.locator("#keys tbody tr", { hasText: name });
  await expect(row).toBeVisible();
  await expect(row).not.toContainText(key);

  const site = await playwright.request.newContext({ baseURL, extraHTTPHeaders: { "X-API-Key": key } });
  expect((await site.post("/api/events", { data: event(unique("k"), "Page View") })).status()).toBe(202);
  expect((await site.get("/api/leads")).status()).toBe(403);

  await page.reload();
  await hydrated(page);
  await expect(page.locator("#new-key")).toHaveCount(0);
  await page.locator("#keys tbody tr", { hasText: name }).getByRole("button", { name: `Revoke ${name}` }).click();
  await expect(page.locator("#keys tbody tr", { hasText: name })).toContainText("revoked");
  expect((await site.post("/api/events", { data: event(unique("k"), "Page View") })).status()).toBe(401);
  await site.dispose();
  expect(errors).toEqual([]);
});

test("an admin adds a user, and the audit log shows who did what", async ({ page }) => {
  const errors = watchConsole(page);
  await page.goto("/users");
  await hydrated(page);
  const username = unique("analyst");
  await page.fill("#new-user input[name=username]", username);
  await page.fill("#new-user input[name=password]", "short");
  await page.click("#new-user button[type=submit]");
  await expect(page.locator(".field-errors")).toContainText("password");
  await page.fill("#new-user input[name=password]", "a long enough password");
  await page.click("#new-user button[type=submit]");
  await expect(page.locator(`#users tr[data-user="${username}"]`)).toBeVisible();
  await screenshot(page, "users");

  await page.goto("/audit");
  await hydrated(page);
  const entry = page.locator("#audit tbody tr", { hasText: username }).first();
  await expect(entry).toContainText("user.create");
  await expect(entry).toContainText("e2e-admin");
  await screenshot(page, "audit");
  // The short password was answered 400 on purpose; the browser logs that response.
  expect(errors.filter((e) => !e.includes("status of 400"))).toEqual([]);
});
