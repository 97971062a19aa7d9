import { test, expect } from "@playwright/test";
import { hydrated, screenshot, watchConsole } from "./helpers";

test("home page renders on the server and hydrates without console errors", async ({ page }) => {
  const errors = watchConsole(page);
  const response = await page.goto("/");
  expect(response?.status()).toBe(200);
  await expect(page.locator("h1")).toHaveText("Leadscore");
  await hydrated(page);
  await screenshot(page, "home");
  expect(errors).toEqual([]);
});

test("unknown pages get the 404 page", async ({ page }) => {
  const response = await page.goto("/no/such/page");
  expect(response?.status()).toBe(404);
  await expect(page.locator("h1")).toHaveText("Page not found");
});
