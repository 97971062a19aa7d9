# Sourced by scripts/bench.sh --robustness (uses its helpers and variables): hostile bodies
# and a sustained overload against the embedded store, written to the "## Hostile input and
# overload" section of BENCHMARKS.md.

step "Robustness 1. Hostile bodies: 16 clients × 3 batch bodies of 5 MB of tiny values, 4 × 3 deeply nested"
start_server "$WORK/hostile.db"
IDLE_RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
"$LOAD" hostile --url "$URL" --api-key "$BENCH_KEY" --concurrency 16 --rounds 3 --json | tail -1 >"$WORK/hostile.json"
HOSTILE_RSS=$(stop_server)

step "Robustness 2. Overload: 64 clients posting 5,000-event batches of ~5 MB back to back for 20 s (5x the body budget)"
start_server "$WORK/overload.db"
"$LOAD" overload --url "$URL" --api-key "$BENCH_KEY" --concurrency 64 --batch 5000 --metadata-bytes 850 --duration 20 --json | tail -1 >"$WORK/overload.json"
OVERLOAD_RSS=$(stop_server)

step "Writing the robustness section of BENCHMARKS.md"
python3 - "$WORK" "$IDLE_RSS" "$HOSTILE_RSS" "$OVERLOAD_RSS" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
work = sys.argv[1]
idle, hostile_rss, overload_rss = (int(x) / 1024 for x in sys.argv[2:5])
j = lambda name: json.load(open(os.path.join(work, name + ".json")))
hostile, overload = j("hostile"), j("overload")
verdict = lambda ok: "✅ met" if ok else "❌ not met"
statuses = overload["latency"]["statuses"]
busy = statuses.get("503", 0)
section = [
    "## Hostile input and overload", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --robustness` (release build, "
    "embedded store, `MAX_INFLIGHT_BYTES` 64 MB, rate limit off).", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| 16 concurrent 5 MB bodies of tiny values + 4 deeply nested → all 4xx | statuses {hostile['latency']['statuses']} | {verdict(hostile['all_4xx'])} |",
    f"| … peak RSS below 300 MB | {hostile_rss:.0f} MB (idle {idle:.0f} MB) | {verdict(hostile_rss < 300)} |",
    f"| Sustained overload → 503 with `Retry-After`, nothing acknowledged lost | {busy} × 503 ({overload['busy_without_retry_after']} without `Retry-After`); "
    f"{overload['accepted']:,} accepted, {overload['scored']:,} scored | {verdict(overload['nothing_lost'] and overload['busy_without_retry_after'] == 0)} |",
    f"| … RSS bounded | peak {overload_rss:.0f} MB | {verdict(overload_rss < 300)} |", "",
    f"Hostile: {hostile['clients']} clients × {hostile['rounds']} bodies of {hostile['body_bytes']:,} bytes in {hostile['seconds']:.1f} s; "
    f"answer p50 {hostile['latency']['p50_ms']:.0f} ms, p99 {hostile['latency']['p99_ms']:.0f} ms. "
    f"Overload: {overload['concurrency']} clients × {overload['batch']:,}-event batches of ~5 MB for {overload['seconds']} s; statuses {statuses}; "
    f"batch latency p50 {overload['latency']['p50_ms']:.0f} ms, p99 {overload['latency']['p99_ms']:.0f} ms.",
    "",
]
write_section(section)
PY
