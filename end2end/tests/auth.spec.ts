import { Browser } from "@playwright/test";
import { spawn, ChildProcess } from "child_process";
import { mkdtempSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { test, expect, hydrated, arrived, screenshot, unique, watchConsole, event } from "./helpers";
import { PASSWORD } from "../global-setup";

/** A fresh browser context with no session, signed in as `username` through the login form. */
async function signIn(browser: Browser, username: string) {
  const context = await browser.newContext({ storageState: undefined });
  const page = await context.newPage();
  await page.goto("/rules");
  await expect(page).toHaveURL(/\/login\?next=\/rules/);
  await hydrated(page);
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", PASSWORD);
  await page.click("#login button[type=submit]");
  await arrived(page, /\/rules$/);
  return { context, page };
}

test("a viewer sees no rule-editing controls and an editor does", async ({ browser }) => {
  const viewer = await signIn(browser, "e2e-viewer");
  const errors = watchConsole(viewer.page);
  await expect(viewer.page.locator("#rules tbody tr").first()).toBeVisible();
  await expect(viewer.page.locator(".user-menu")).toContainText("e2e-viewer");
  await expect(viewer.page.locator("#rules input, #rules button")).toHaveCount(0);
  await expect(viewer.page.locator("#rule-form")).toHaveCount(0);
  await viewer.page.goto("/");
  await hydrated(viewer.page);
  await expect(viewer.page.locator("#leaderboard")).toBeVisible();
  await expect(viewer.page.getByRole("heading", { name: "Send test event" })).toHaveCount(0);
  await screenshot(viewer.page, "auth-viewer-dashboard");
  expect(errors).toEqual([]);
  await viewer.context.close();

  const editor = await signIn(browser, "e2e-editor");
  await expect(editor.page.locator("#rules tbody tr input[name=points]").first()).toBeVisible();
  await expect(editor.page.locator("#rule-form")).toBeVisible();
  await editor.page.goto("/users");
  await expect(editor.page.locator("h1")).toHaveCount(1);
  expect(await editor.page.content()).toContain("Your role may not open this page");
  await editor.context.close();
});

test("sign out ends the session; pages lead back to sign in", async ({ browser }) => {
  const { context, page } = await signIn(browser, "e2e-editor");
  await page.click("#sign-out");
  await expect(page).toHaveURL(/\/login/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/login\?next=\//);
  await context.close();
});

test("a lead id full of markup renders as text", async ({ page, request }) => {
  const lead = `<img src=x onerror=alert(1)>${unique("x")}`;
  let dialogs = 0;
  page.on("dialog", async (d) => {
    dialogs += 1;
    await d.dismiss();
  });
  const r = await request.post("/api/events", { data: event(lead, "Purchase") });
  expect(r.status()).toBe(202);
  await page.goto(`/leads/${encodeURIComponent(lead)}`);
  await hydrated(page);
  await expect(page.getByText(lead).first()).toBeVisible();
  expect(await page.locator("img[src=x]").count()).toBe(0);
  expect(dialogs).toBe(0);
});

// Its own server on a fresh database: first-run setup with the token from its log, then an
// idle timeout of a few seconds.
test("setup with the token from the log, then an idle session ends", async ({ browser }) => {
  const port = 5056;
  const base = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), "leadscore-setup-"));
  let log = "";
  const child: ChildProcess = spawn(process.env.LEADSCORE_BIN!, [], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      DATABASE_URL: `sqlite://${join(dir, "setup.db")}`,
      LEPTOS_OUTPUT_NAME: "leadscore",
      LEPTOS_SITE_ROOT: process.env.LEADSCORE_SITE_ROOT!,
      LEPTOS_SITE_PKG_DIR: "pkg",
      NO_COLOR: "1",
      API_KEYS: "",
      SESSION_IDLE_SECONDS: "4",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (c: Buffer) => (log += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
  try {
    await expect.poll(() => /setup\?token=(\S+)/.exec(log)?.[1] ?? null, { timeout: 30_000 }).not.toBeNull();
    const token = /setup\?token=(\S+)/.exec(log)![1];
    const context = await browser.newContext({ storageState: undefined, baseURL: base });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await page.goto(`${base}/`);
    await expect(page).toHaveURL(`${base}/setup`);
    await page.goto(`${base}/setup?token=${token}`);
    await hydrated(page);
    await expect(page.locator("input[name=token]")).toHaveValue(token);
    await page.fill("input[name=username]", "first-admin");
    await page.fill("input[name=password]", PASSWORD);
    await page.fill("input[name=confirm]", PASSWORD);
    await screenshot(page, "auth-setup");
    await page.click("#setup button[type=submit]");
    await arrived(page, `${base}/`);
    await expect(page.locator(".user-menu")).toContainText("first-admin");
    await expect(page.getByRole("link", { name: "Users" })).toBeVisible();
    expect(errors).toEqual([]);
    expect(log).not.toContain(PASSWORD);
    // Idle for longer than the timeout: the next page load asks to sign in. The open
    // dashboard is left first, so its own redirect to sign in cannot race the navigation.
    await page.goto("about:blank");
    await expect
      .poll(async () => {
        await page.goto(`${base}/rules`).catch(() => undefined);
        return page.url();
      }, { timeout: 30_000, intervals: [1000] })
      .toContain("/login?next=/rules");
    await context.close();
  } finally {
    child.kill("SIGTERM");
  }
});
