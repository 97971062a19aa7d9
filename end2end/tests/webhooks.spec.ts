import { test, expect, event, hydrated, postEvent, screenshot, unique } from "./helpers";
import { createServer, type IncomingMessage } from "node:http";
import { createHmac } from "node:crypto";
import type { AddressInfo } from "node:net";

/** A receiver on 127.0.0.1 that records each request and answers `status.code`. */
async function receiver() {
  const got: { signature: string; body: string }[] = [];
  const status = { code: 503 };
  const server = createServer((req: IncomingMessage, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      got.push({ signature: String(req.headers["leadscore-signature"] ?? ""), body });
      res.statusCode = status.code;
      res.end();
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/crm`;
  return { url, got, status, close: () => server.close() };
}

test("an admin adds a webhook, sees its secret once, and redelivers a failed delivery from its list", async ({ page, request }) => {
  const crm = await receiver();
  try {
    await page.goto("/webhooks");
    await hydrated(page);
    const form = page.locator("#new-webhook-form");
    // A bad URL is named, nothing added.
    await form.getByLabel("URL").fill("crm.example.com");
    await form.getByRole("button", { name: "Add webhook" }).click();
    await expect(page.locator(".field-errors")).toContainText("url");
    await form.getByLabel("URL").fill(crm.url);
    await form.getByRole("checkbox", { name: "scoreChanged" }).uncheck();
    await form.getByRole("button", { name: "Add webhook" }).click();
    await expect(page.locator("#hooks-feedback")).toContainText(`Added a webhook to ${crm.url}`);
    const secret = (await page.locator("#new-secret").textContent()) ?? "";
    expect(secret).toMatch(/^whsec_/);
    const row = page.locator("#webhooks tbody tr", { hasText: crm.url });
    await expect(row).toContainText("stageChanged");

    // A purchase moves a lead Cold → MQL: the receiver refuses the first attempt.
    const lead = unique("hook-lead");
    await postEvent(request, event(lead, "Purchase"));
    await expect.poll(() => crm.got.length, { timeout: 15_000 }).toBeGreaterThanOrEqual(1);
    const first = crm.got[0];
    const [t, v1] = first.signature.replace("t=", "").split(",v1=");
    expect(createHmac("sha256", secret).update(`${t}.${first.body}`).digest("hex")).toBe(v1);
    expect(JSON.parse(first.body)).toMatchObject({ type: "stageChanged", from: "Cold", to: "MQL", lead: { id: lead, score: 100, stage: "MQL" } });

    // The list says why; after the fix, "Redeliver" sends it at once.
    await row.getByRole("button", { name: "Deliveries" }).click();
    const delivery = page.locator("#delivery-list tbody tr").first();
    await expect(delivery).toHaveAttribute("data-state", "waiting");
    await expect(delivery).toContainText("503");
    await screenshot(page, "webhooks");
    crm.status.code = 200;
    await delivery.getByRole("button", { name: /Redeliver/ }).click();
    await expect(page.locator("#deliveries-feedback")).toContainText("queued again");
    await expect.poll(() => crm.got.length, { timeout: 15_000 }).toBeGreaterThanOrEqual(2);
    expect(JSON.parse(crm.got[crm.got.length - 1].body).id).toBe(JSON.parse(first.body).id);
    await page.locator("#deliveries").getByRole("button", { name: "Refresh" }).click();
    await expect(delivery).toHaveAttribute("data-state", "delivered");

    // Reloaded, the secret is gone for good; the subscription is deleted.
    await page.reload();
    await hydrated(page);
    await expect(page.locator("#new-secret")).toHaveCount(0);
    page.once("dialog", (d) => d.accept());
    await page.locator("#webhooks tbody tr", { hasText: crm.url }).getByRole("button", { name: "Delete" }).click();
    await expect(page.locator("#hooks-feedback")).toContainText("Deleted the webhook");
    await expect(page.locator("#webhooks tbody tr", { hasText: crm.url })).toHaveCount(0);
  } finally {
    crm.close();
  }
});
