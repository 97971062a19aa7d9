# Sourced by scripts/bench.sh --ids (uses its helpers and variables): batch ingest with
# counter event ids, with random UUID-like ids, and as Segment `/v1/batch` messages (random
# message ids, as the SDKs send), each into a fresh store; written to the "## Random event
# ids" section of BENCHMARKS.md.
EVENTS=$(scaled 1000000)
for kind in counter random segment; do
  case "$kind" in
    counter) extra=(--batch 5000) ;;
    random) extra=(--batch 5000 --random-ids) ;;
    segment) extra=(--batch 500 --segment) ;; # 500 messages: ~120 KB, under Segment's 500 KB
  esac
  step "Batch ingest, $kind ids: $EVENTS events, 4 connections"
  start_server "$WORK/ids-$kind.db"
  "$LOAD" bulk --url "$URL" --api-key "$BENCH_KEY" --events "$EVENTS" --concurrency 4 "${extra[@]}" --json | tail -1 >"$WORK/ids-$kind.json"
  stop_server >"$WORK/ids-$kind.rss"
done

step "Writing the random event ids section of BENCHMARKS.md"
python3 - "$WORK" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
work = sys.argv[1]
r = {k: json.load(open(os.path.join(work, f"ids-{k}.json"))) for k in ("counter", "random", "segment")}
rss = {k: int(open(os.path.join(work, f"ids-{k}.rss")).read()) / 1024 for k in r}
verdict = lambda ok: "✅ met" if ok else "❌ not met"
ratio = r["random"]["scored_per_s"] / r["counter"]["scored_per_s"]
line = lambda k, what: (f"| {what} | {r[k]['scored_per_s']:,.0f} events/s scored (accepted {r[k]['accepted_per_s']:,.0f}/s; "
                        f"batch p99 {r[k]['batch_latency']['p99_ms']:.0f} ms; statuses {r[k]['batch_latency']['statuses']}; "
                        f"peak RSS {rss[k]:.0f} MB) | |")
section = [
    "## Random event ids", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --ids` (release build, embedded store, "
    f"2 cores, load generator on the same machine): {r['counter']['events']:,} events into a fresh store each time, 4 "
    "connections, until every event is scored. Counter ids grow at a few ends of the dedupe index; random ids (what SDKs "
    "send as `messageId`) land anywhere in it.", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| Random ids ≥ 90 % of counter ids (batches of 5,000) | {ratio * 100:.0f} % ({r['random']['scored_per_s']:,.0f} vs "
    f"{r['counter']['scored_per_s']:,.0f} events/s) | {verdict(ratio >= 0.9)} |",
    line("counter", "`/api/events/batch`, counter ids, batches of 5,000"),
    line("random", "`/api/events/batch`, random ids, batches of 5,000"),
    line("segment", "Segment `/v1/batch`, random `messageId`s, batches of 500 `track` messages"), "",
]
write_section(section)
PY
