import { test as base, expect, Page, APIRequestContext } from "@playwright/test";

export { expect };

/**
 * Pages run signed in as the admin (storageState in playwright.config.ts). The `request`
 * fixture is an external system instead: it sends the admin API key that scripts/test.sh
 * gives the server, so API calls never depend on the browser's session.
 */
export const test = base.extend({
  request: async ({ playwright, baseURL }, use) => {
    const context = await playwright.request.newContext({
      baseURL,
      extraHTTPHeaders: { "X-API-Key": process.env.E2E_ADMIN_KEY ?? "" },
    });
    await use(context);
    await context.dispose();
  },
});

/** Collects console errors and uncaught exceptions of a page. */
export function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  return errors;
}

/** Waits until the WASM client has hydrated the page (an Effect sets the marker). */
export async function hydrated(page: Page) {
  await expect(page.locator("[data-hydrated=true]")).toBeVisible();
}

/**
 * Waits for a full page load the app started itself (`location.href = ...`, as after signing
 * in) to arrive at `url`, and for that new page to hydrate. The URL changes when the new
 * document commits, while the old one's hydration marker can still be seen for a moment:
 * waiting for the URL and then `hydrated` alone can pass on the page being left.
 */
export async function arrived(page: Page, url: string | RegExp) {
  await page.waitForURL(url, { waitUntil: "load" });
  await hydrated(page);
}

/** Waits until the live stream is connected. */
export async function live(page: Page) {
  await hydrated(page);
  await expect(page.locator(".connection")).toHaveAttribute("data-state", "live");
}

export async function screenshot(page: Page, name: string) {
  await page.screenshot({ path: `artifacts/${name}.png`, fullPage: true });
}

/** A prefix no other test run uses, so tests never see each other's leads. */
export function unique(name: string): string {
  return `${name}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}

let counter = 0;
export function event(leadId: string, eventType: string, extra: Record<string, unknown> = {}) {
  counter += 1;
  return {
    eventId: unique(`evt${counter}`),
    leadId,
    eventType,
    timestamp: new Date().toISOString(),
    ...extra,
  };
}

export async function postEvent(request: APIRequestContext, body: unknown, base = "") {
  const r = await request.post(`${base}/api/events`, { data: body });
  expect(r.status()).toBe(202);
}

/** Polls the REST API until a lead has the expected score (bounded: 15 s). */
export async function expectScore(request: APIRequestContext, leadId: string, score: number, base = "") {
  await expect
    .poll(async () => {
      const r = await request.get(`${base}/api/leads/${encodeURIComponent(leadId)}`);
      return r.ok() ? (await r.json()).lead.score : null;
    }, { timeout: 15_000 })
    .toBe(score);
}

/** Lead ids in the leaderboard, top to bottom. */
export async function boardIds(page: Page): Promise<string[]> {
  return page.locator("#leaderboard tbody tr td.lead-id").allTextContents();
}
