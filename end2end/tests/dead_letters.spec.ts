import { execFileSync } from "node:child_process";
import type { Page } from "@playwright/test";
import { test, expect, event, expectScore, hydrated, screenshot, unique, watchConsole } from "./helpers";

/**
 * The server's own SQLite file (scripts/test.sh passes its DATABASE_URL), written behind the
 * server's back the way a hand edit or a damaged disk would.
 */
function sql(statement: string, ...args: (string | number)[]) {
  const url = process.env.DATABASE_URL ?? "";
  if (!url.startsWith("sqlite://")) throw new Error(`these tests need the server's SQLite file, got ${url}`);
  const script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=10); c.execute(sys.argv[2], sys.argv[3:]); c.commit()";
  execFileSync("python3", ["-c", script, url.slice("sqlite://".length), statement, ...args.map(String)]);
}

/** Queues an event whose timestamp does not read, at the head of the queue. */
function poison(seq: number, eventId: string, leadId: string) {
  sql(
    "INSERT INTO events (seq, event_id, lead_id, event_type, timestamp, received_at) VALUES (?, ?, ?, 'Purchase', 'not a time', ?)",
    seq, eventId, leadId, Date.now(),
  );
}

/** Opens the dead-letter page and refreshes it until the event at `seq` is listed. */
async function deadLetterRow(page: Page, seq: number) {
  await page.goto("/dead-letters");
  await hydrated(page);
  const row = page.locator(`#dead-letters tr[data-dead-letter="${seq}"]`);
  await expect(async () => {
    await page.getByRole("button", { name: "Refresh" }).click();
    await expect(row).toBeVisible({ timeout: 1_000 });
  }).toPass({ timeout: 30_000 });
  return row;
}

/** A seq below every real one (they start at 1), different per test run. */
function headOfQueue(): number {
  return -(Date.now() % 1_000_000_000) - Math.floor(Math.random() * 1000);
}

test("an admin sees a poison event in the dead-letter list, repairs it, retries it and it is scored once", async ({ page, request }) => {
  const errors = watchConsole(page);
  const seq = headOfQueue();
  const eventId = unique("poison");
  const lead = unique("dl-lead");
  poison(seq, eventId, lead);
  // The rest of the queue goes on meanwhile.
  const other = unique("dl-other");
  expect((await request.post("/api/events", { data: event(other, "Purchase") })).status()).toBe(202);
  await expectScore(request, other, 100);

  const row = await deadLetterRow(page, seq);
  await expect(row).toContainText(eventId);
  await expect(row).toContainText("timestamp");
  await expect(row.getByRole("link", { name: lead })).toHaveAttribute("href", `/leads/${lead}`);
  await row.getByText("Stored event").click();
  await expect(row.locator("code.meta")).toContainText("not a time");
  await screenshot(page, "dead-letters");

  sql("UPDATE events SET timestamp = ? WHERE seq = ?", Date.now(), seq);
  await row.getByRole("button", { name: `Retry ${eventId}` }).click();
  await expect(page.locator("#dead-feedback")).toContainText("queued again");
  await expect(row).toHaveCount(0);
  await expectScore(request, lead, 100);
  const detail = await (await request.get(`/api/leads/${lead}`)).json();
  expect(detail.lead.eventCount).toBe(1);
  expect(errors).toEqual([]);
});

test("an admin discards a dead letter; its eventId still counts as received", async ({ page, request }) => {
  const errors = watchConsole(page);
  const seq = headOfQueue();
  const eventId = unique("poison");
  const lead = unique("dl-discard");
  poison(seq, eventId, lead);

  const row = await deadLetterRow(page, seq);
  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: `Discard ${eventId}` }).click();
  await expect(page.locator("#dead-feedback")).toContainText("discarded");
  await expect(row).toHaveCount(0);

  const again = await request.post("/api/events", { data: { ...event(lead, "Purchase"), eventId } });
  expect(again.status()).toBe(409);
  const list = await (await request.get("/api/dead-letters")).json();
  expect(list.deadLetters.map((l: { id: number }) => l.id)).not.toContain(seq);
  expect(errors).toEqual([]);
});
