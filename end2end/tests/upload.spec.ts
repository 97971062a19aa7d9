import { test, expect, expectScore, hydrated, unique } from "./helpers";

test("a CSV upload with one bad row reports that row and scores the rest", async ({ page, request }) => {
  const p = unique("csv");
  const csv = [
    "eventId,leadId,eventType,timestamp,campaign",
    `${p}-1,${p}-a,Purchase,2024-05-01T10:00:00Z,spring`,
    `${p}-2,${p}-a,Email Open,2024-05-01T10:01:00Z,`,
    `${p}-3,${p}-b,Demo Request,yesterday-ish,fall`,
    `,${p}-b,Page View,,`,
  ].join("\n");
  await page.goto("/");
  await hydrated(page);
  await page.getByLabel("Choose a .csv or .json file").setInputFiles({
    name: "events.csv",
    mimeType: "text/csv",
    buffer: Buffer.from(csv),
  });
  const report = page.locator(".upload-report");
  await expect(report).toContainText("3 accepted");
  await expect(report).toContainText("0 duplicates");
  await expect(report).toContainText("1 rejected");
  const rejected = report.locator("table.rejected-rows tbody tr");
  await expect(rejected).toHaveCount(1);
  await expect(rejected.locator("td")).toHaveText(["line 4", `${p}-3`, "timestamp", /ISO-8601/]);

  await expectScore(request, `${p}-a`, 110);
  await expectScore(request, `${p}-b`, 5); // the generated-id row scored; the bad row did not
  const a = await (await request.get(`/api/leads/${p}-a`)).json();
  expect(a.events.map((e: any) => e.metadata)).toContainEqual({ campaign: "spring" });

  // Uploading the same file again is safe: everything accepted is now a duplicate.
  await page.getByLabel("Choose a .csv or .json file").setInputFiles({
    name: "events.csv",
    mimeType: "text/csv",
    buffer: Buffer.from(csv.split("\n").slice(0, 4).join("\n")),
  });
  await expect(report).toContainText("0 accepted");
  await expect(report).toContainText("2 duplicates");
});

test("a large JSON upload goes in chunks with a progress bar", async ({ page, request }) => {
  const lead = unique("bulk");
  const events = Array.from({ length: 1800 }, (_, i) => ({
    eventId: `${lead}-${i}`,
    leadId: lead,
    eventType: "Page View",
    timestamp: "2024-05-01T10:00:00Z",
  }));
  await page.goto("/");
  await hydrated(page);
  await page.getByLabel("Choose a .csv or .json file").setInputFiles({
    name: "bulk.json",
    mimeType: "application/json",
    buffer: Buffer.from(JSON.stringify(events)),
  });
  await expect(page.locator(".upload-report")).toContainText("1800 accepted");
  await expect(page.locator(".progress-row")).toContainText("1800 / 1800 events");
  await expect(page.locator("progress")).toHaveAttribute("value", "100");
  await expectScore(request, lead, 1800 * 5);
});
