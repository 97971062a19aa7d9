import { request, FullConfig } from "@playwright/test";
import { mkdirSync } from "fs";

/** The accounts the browser tests use; the password is the same for each. */
export const PASSWORD = "e2e password 123";
export const USERS = [
  { username: "e2e-admin", role: "admin" },
  { username: "e2e-editor", role: "editor" },
  { username: "e2e-viewer", role: "viewer" },
];

/**
 * Creates the test accounts with the admin key scripts/test.sh gives the server
 * (E2E_ADMIN_KEY), then signs the admin in and saves its session for every test.
 */
export default async function globalSetup(config: FullConfig) {
  const baseURL = config.projects[0].use.baseURL!;
  const key = process.env.E2E_ADMIN_KEY;
  if (!key) throw new Error("E2E_ADMIN_KEY is not set (scripts/test.sh sets it)");
  const admin = await request.newContext({ baseURL, extraHTTPHeaders: { "X-API-Key": key } });
  for (const u of USERS) {
    const r = await admin.post("/api/users", { data: { ...u, password: PASSWORD } });
    if (![201, 409].includes(r.status())) throw new Error(`creating ${u.username}: ${r.status()} ${await r.text()}`);
  }
  await admin.dispose();
  const browser = await request.newContext({ baseURL, extraHTTPHeaders: { Origin: baseURL } });
  const r = await browser.post("/api/auth/login", { data: { username: "e2e-admin", password: PASSWORD } });
  if (r.status() !== 200) throw new Error(`login: ${r.status()} ${await r.text()}`);
  mkdirSync(".auth", { recursive: true });
  await browser.storageState({ path: ".auth/admin.json" });
  await browser.dispose();
}
