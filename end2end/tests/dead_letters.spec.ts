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

/**
 * The key the store's dedupe index holds for an event id (src/service/store/sqlite/event_keys.rs):
 * SipHash-1-3 with the file's secret, written out here independently of the server's code.
 */
const EVENT_KEY = `
import sqlite3, sys
M = (1 << 64) - 1
def rotl(x, b): return ((x << b) | (x >> (64 - b))) & M
def sip13(k0, k1, data):
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d, k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573]
    def rnd():
        v[0] = (v[0] + v[1]) & M; v[1] = rotl(v[1], 13) ^ v[0]; v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M; v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & M; v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & M; v[1] = rotl(v[1], 17) ^ v[2]; v[2] = rotl(v[2], 32)
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little"); v[3] ^= m; rnd(); v[0] ^= m
    m = ((len(data) & 0xff) << 56) | int.from_bytes(data[end:], "little")
    v[3] ^= m; rnd(); v[0] ^= m; v[2] ^= 0xff
    rnd(); rnd(); rnd()
    h = v[0] ^ v[1] ^ v[2] ^ v[3]
    return h - (1 << 64) if h >> 63 else h
c = sqlite3.connect(sys.argv[1], timeout=10)
k0, k1 = (k & M for k in c.execute("SELECT k0, k1 FROM event_key_secret").fetchone())
seq, event_id, lead_id, received = sys.argv[2:6]
c.execute("INSERT INTO events (seq, event_key, event_id, lead_id, event_type, timestamp, received_at) "
          "VALUES (?, ?, ?, ?, 'Purchase', 'not a time', ?)",
          (int(seq), sip13(k0, k1, event_id.encode()), event_id, lead_id, int(received)))
c.commit()
`;

/** Queues an event whose timestamp does not read, at the head of the queue. */
function poison(seq: number, eventId: string, leadId: string) {
  const url = process.env.DATABASE_URL ?? "";
  if (!url.startsWith("sqlite://")) throw new Error(`these tests need the server's SQLite file, got ${url}`);
  execFileSync("python3", ["-c", EVENT_KEY, url.slice("sqlite://".length), String(seq), eventId, leadId, String(Date.now())]);
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
