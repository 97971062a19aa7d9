import { spawn, ChildProcess } from "child_process";
import { mkdtempSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import { test, expect, boardIds, event, live, postEvent, unique } from "./helpers";

// This test runs its own server (the binary cargo-leptos built) so it can restart it.
const bin = process.env.LEADSCORE_BIN;
const siteRoot = process.env.LEADSCORE_SITE_ROOT;
// The first start takes any free port; the restart reuses it (the page reconnects there).
let port = 0;
let base = "";

function startServer(db: string): Promise<ChildProcess> {
  const child = spawn(bin!, [], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      DATABASE_URL: `sqlite://${db}`,
      LEPTOS_OUTPUT_NAME: "leadscore",
      LEPTOS_SITE_ROOT: siteRoot!,
      LEPTOS_SITE_PKG_DIR: "pkg",
      NO_COLOR: "1",
      // This server has its own database and no accounts: the test is about reconnecting.
      AUTH: "off",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 30 s")), 30_000);
    let log = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      const listening = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (listening) {
        clearTimeout(timer);
        port = Number(listening[1]);
        base = `http://127.0.0.1:${port}`;
        resolve(child);
      }
    });
    child.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    // Already gone (it crashed, or a failed start): nothing to wait for.
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.on("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

test("after the server restarts, an open dashboard reconnects and shows new events", async ({ page, request }) => {
  test.skip(!bin || !siteRoot, "LEADSCORE_BIN / LEADSCORE_SITE_ROOT not set (scripts/test.sh sets them)");
  const db = join(mkdtempSync(join(tmpdir(), "leadscore-restart-")), "restart.db");
  const prefix = unique("restart");
  let server = await startServer(db);
  try {
    await page.goto(`${base}/?search=${prefix}`);
    await live(page);
    // AUTH=off: the dashboard says everything is open.
    await expect(page.locator("#auth-off-banner")).toContainText("AUTH=off");
    await page.evaluate(() => ((window as any).__stillHere = true));
    await postEvent(request, event(`${prefix}-before`, "Email Open"), base);
    await expect.poll(() => boardIds(page)).toEqual([`${prefix}-before`]);

    await stop(server);
    await expect(page.locator(".connection")).toHaveAttribute("data-state", "reconnecting");

    server = await startServer(db);
    await expect(page.locator(".connection")).toHaveAttribute("data-state", "live", { timeout: 20_000 });
    await postEvent(request, event(`${prefix}-after`, "Purchase"), base);
    // Back online, the page refetches by itself (this database holds only this test's leads).
    await expect.poll(() => boardIds(page), { timeout: 15_000 }).toEqual([`${prefix}-after`, `${prefix}-before`]);
    expect(await page.evaluate(() => (window as any).__stillHere)).toBe(true);
  } finally {
    await stop(server);
  }
});
