# Sourced by scripts/bench.sh --rules (uses its helpers and variables): end-to-end batch
# ingest without and with 50 rules carrying conditions (the target), and with some of them
# limited (reported beside it), each on a fresh store, written to the "## Rules with
# conditions" section of BENCHMARKS.md.
EVENTS=$(scaled 1000000)
# Without and with, twice each and alternating, each on a fresh store: one run's figure moves
# by a few per cent from run to run, and the target is a ratio of two of them.
for round in 1 2; do
  step "Batch ingest, $EVENTS events, the five default rules (round $round)"
  start_server "$WORK/plain$round.db"
  "$LOAD" bulk --url "$URL" --api-key "$BENCH_KEY" --events "$EVENTS" --batch 5000 --concurrency 4 --json | tail -1 >"$WORK/plain$round.json"
  stop_server >/dev/null

  step "The same with 50 more rules, each with two conditions (round $round)"
  start_server "$WORK/rules$round.db"
  "$LOAD" rules --url "$URL" --api-key "$BENCH_KEY" --count 50 --json | tail -1 >/dev/null
  "$LOAD" bulk --url "$URL" --api-key "$BENCH_KEY" --events "$EVENTS" --batch 5000 --concurrency 4 --json | tail -1 >"$WORK/rules$round.json"
  RULES_RSS=$(stop_server)
done

step "The same with every fifth of the 50 rules limited to 3 a day per lead"
start_server "$WORK/limits.db"
"$LOAD" rules --url "$URL" --api-key "$BENCH_KEY" --count 50 --limit-every 5 --json | tail -1 >/dev/null
"$LOAD" bulk --url "$URL" --api-key "$BENCH_KEY" --events "$EVENTS" --batch 5000 --concurrency 4 --json | tail -1 >"$WORK/limits.json"
stop_server >/dev/null

step "Writing the rules section of BENCHMARKS.md"
python3 - "$WORK" "$RULES_RSS" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
work, rss = sys.argv[1], int(sys.argv[2]) / 1024
j = lambda name: json.load(open(os.path.join(work, name + ".json")))
plains, ruleses, limits = [j("plain1"), j("plain2")], [j("rules1"), j("rules2")], j("limits")
mean = lambda runs, key: sum(r[key] for r in runs) / len(runs)
plain = {k: mean(plains, k) for k in ("scored_per_s", "accepted_per_s")}
plain.update({k: plains[0][k] for k in ("events", "batch", "concurrency")})
rules = {k: mean(ruleses, k) for k in ("scored_per_s", "accepted_per_s")}
plain["p99"] = max(r["batch_latency"]["p99_ms"] for r in plains)
rules["p99"] = max(r["batch_latency"]["p99_ms"] for r in ruleses)
ratio = rules["scored_per_s"] / plain["scored_per_s"]
limited_ratio = limits["scored_per_s"] / plain["scored_per_s"]
each = lambda runs: " and ".join(f"{r['scored_per_s']:,.0f}" for r in runs)
verdict = lambda ok: "✅ met" if ok else "❌ not met"
section = [
    "## Rules with conditions", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --rules` (release build, embedded "
    f"store, 2 cores): {plain['events']:,} events in batches of {plain['batch']:,} over {plain['concurrency']} connections, "
    "end to end (accepted, then scored), each run on a fresh store. Every event carries metadata "
    "(`page`, `campaign`) the conditions read.", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| With 50 rules carrying conditions, batch ingest ≥ 90 % of its figure without | {ratio * 100:.0f}% "
    f"({rules['scored_per_s']:,.0f} vs {plain['scored_per_s']:,.0f} events/s scored, each the mean of two runs) | {verdict(ratio >= 0.9)} |",
    f"| (not a target) The same 50 rules, every fifth with a daily limit | {limited_ratio * 100:.0f}% "
    f"({limits['scored_per_s']:,.0f} events/s scored) | |", "",
    f"Scored per run, alternating: without {each(plains)}, with {each(ruleses)} events/s. "
    f"Without: {plain['accepted_per_s']:,.0f} events/s accepted, batch p99 up to {plain['p99']:.0f} ms. "
    f"With: {rules['accepted_per_s']:,.0f} events/s accepted, batch p99 up to {rules['p99']:.0f} ms, "
    f"server peak RSS {rss:.0f} MB. The 50 rules: two conditions each (`page` equals or starts with one of five "
    "pages, `campaign` in a list of two), spread over the five event types; in the last run every fifth (all ten "
    "on Page View, the commonest type) is limited to 3 a day per lead, so each Page View reads and writes five "
    "limit counts.",
    "",
]
write_section(section)
PY
