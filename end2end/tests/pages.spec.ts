import type { Page } from "@playwright/test";
import { test, expect, event, expectScore, hydrated, live, postEvent, screenshot, unique, watchConsole } from "./helpers";

test("every page renders and hydrates without console errors", async ({ page, request }) => {
  const errors = watchConsole(page);
  const lead = unique("screens");
  for (const t of ["Page View", "Purchase", "Email Open", "Demo Request"]) {
    await postEvent(request, event(lead, t, { metadata: { page: "/pricing" } }));
  }
  await expectScore(request, lead, 165);

  for (const [path, name, heading] of [
    ["/", "dashboard", "Leaderboard"],
    [`/leads/${lead}`, "lead", lead],
    ["/rules", "rules", "Scoring rules"],
  ]) {
    const response = await page.goto(path);
    expect(response?.status(), path).toBe(200);
    await expect(page.locator("h1").first()).toHaveText(heading);
    await live(page);
    await screenshot(page, name);
  }
  const response = await page.goto("/no/such/page");
  expect(response?.status()).toBe(404);
  await expect(page.locator("h1")).toHaveText("Page not found");
  await hydrated(page);
  await screenshot(page, "not-found");
  // A 404 document logs one console error of its own; nothing else may.
  expect(errors.filter((e) => !e.includes("404"))).toEqual([]);
});

/** Presses Tab until the control labelled `label` has the focus (at most `max` presses). */
async function tabTo(page: Page, label: string, max = 60) {
  const target = page.getByLabel(label, { exact: true });
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await target.evaluate((el) => el === document.activeElement)) return;
  }
  throw new Error(`"${label}" cannot be reached with Tab`);
}

test("keyboard users can reach the filters and the test-event form", async ({ page }) => {
  await page.goto("/");
  await hydrated(page);
  // Only the keyboard from here: Tab to each control, type, submit with Enter.
  await tabTo(page, "Search id, email, name, company");
  await page.keyboard.type("acme");
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/search=acme/);
  await hydrated(page);
  await tabTo(page, "Lead id");
  await page.keyboard.type("keyboard-lead");
  await page.keyboard.press("Tab");
  await expect(page.locator('select[name="eventType"]')).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.locator('textarea[name="metadata"]')).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("button", { name: "Send event" })).toBeFocused();
});

test("when the server cannot be reached, pages say so and can retry", async ({ page }) => {
  await page.goto("/");
  await live(page);
  // Every server-function call fails as if the network were down.
  await page.route("**/rpc/**", (route) => route.abort("connectionrefused"));
  await page.getByRole("link", { name: "Rules", exact: true }).click();
  const notice = page.locator(".notice.error", { hasText: "Could not load the rules" });
  await expect(notice).toContainText("Could not load the rules");
  await expect(notice).toContainText("Cannot reach the server");
  await page.unroute("**/rpc/**");
  await notice.getByRole("button", { name: "Try again" }).click();
  await expect(page.locator("#rules tbody tr").first()).toBeVisible();
  await expect(notice).toHaveCount(0);
});
