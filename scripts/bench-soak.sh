# Sourced by scripts/bench.sh --soak (uses its helpers and variables): a long run of mixed
# load against the embedded store, then the SIGKILL test ten rounds in a row, written to the
# "## Soak" section of BENCHMARKS.md. SOAK_MINUTES (default 30) and SOAK_RATE (events/s,
# default 2000) change its size.
MINUTES="${SOAK_MINUTES:-30}"
RATE="${SOAK_RATE:-2000}"

step "Soak: $MINUTES min of $RATE events/s (half single POSTs, half 50-event batches), 200 stream clients coming and going, 20 queries/s"
start_server "$WORK/soak.db"
"$LOAD" soak --url "$URL" --api-key "$BENCH_KEY" --rate "$RATE" --minutes "$MINUTES" --clients 200 --queries 20 \
  --server-pid "$SERVER_PID" --json | tail -1 >"$WORK/soak.json"
SOAK_PEAK=$(stop_server)
cp "$WORK/soak.json" "$TARGET_DIR/soak.json"  # kept for a look after the run

step "SIGKILL at any instant: tests/crash_recovery.rs ten rounds in a row"
KILL_PASSED=0
for round in $(seq 1 10); do
  if cargo test --features ssr --test crash_recovery -- sigkill_mid_ingest >"$WORK/kill-$round.log" 2>&1; then
    KILL_PASSED=$((KILL_PASSED + 1))
  else
    echo "round $round failed:" >&2; tail -30 "$WORK/kill-$round.log" >&2
  fi
done

step "Writing the soak section of BENCHMARKS.md"
python3 - "$WORK/soak.json" "$SOAK_PEAK" "$KILL_PASSED" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
soak = json.load(open(sys.argv[1]))
peak, killed = int(sys.argv[2]) / 1024, int(sys.argv[3])
rows, first, last = soak["rows"], soak["first"], soak["last"]
verdict = lambda ok: "✅ met" if ok else "❌ not met"
ms = lambda v: "–" if v is None else f"{v:g}"
mean_rss = sum(r["rss_mb"] for r in rows) / len(rows)
span = max(1, len(rows) - 2)
rss_growth = (soak["rss_slope_mb_per_min"] or 0) * span
fd_growth = (soak["fd_slope_per_min"] or 0) * span
# Within noise: the fitted growth over the run stays under 5 MB or 5 % of the mean RSS, and
# under 5 descriptors; a p99 is unchanged if the last window is within 25 % (or 5 ms) of the first.
rss_flat = rss_growth < max(5.0, 0.05 * mean_rss)
fds_flat = fd_growth < 5
same = lambda a, b: b <= max(a * 1.25, a + 5.0)
p99_rows = [(k, first[k], last[k]) for k in ("single_p99_ms", "batch_p99_ms", "query_p99_ms")]
# The same fit over the second half alone: caches (SQLite's, bounded by `cache_size`, and the
# allocator's) fill during the first minutes; a leak keeps its slope to the end.
def slope(points):
    n = len(points)
    if n < 2:
        return 0.0
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0
warm = rows[len(rows) // 2:]
warm_slope = slope([(r["minute"], r["rss_mb"]) for r in warm])
warm_growth = warm_slope * max(1, len(warm) - 1)
warm_flat = warm_growth < max(2.5, 0.025 * mean_rss)
accepted = sum(r["accepted"] for r in rows)
statuses = {}
for r in rows:
    for k, v in r["statuses"].items():
        statuses[k] = statuses.get(k, 0) + v
section = [
    "## Soak", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --soak` (release build, embedded store, "
    f"2 cores): {soak['minutes']} min of {soak['rate']:,} events/s offered (half single POSTs, half 50-event batches), "
    f"{soak['clients']} stream clients each staying 5–30 s then reconnecting, {soak['queries_per_second']} leaderboard / lead queries a second.", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| RSS flat (fitted growth over the run within noise) | {soak['rss_slope_mb_per_min'] or 0:+.3f} MB/min → {rss_growth:+.1f} MB over {span} min; mean {mean_rss:.0f} MB, peak {peak:.0f} MB | {verdict(rss_flat)} |",
    f"| … without the database's own caches (RSS − SQLite memory; the caches are bounded by `cache_size`) | "
    f"{soak.get('rss_less_store_slope_mb_per_min') or 0:+.3f} MB/min; SQLite memory {soak.get('store_slope_mb_per_min') or 0:+.3f} MB/min | "
    f"{verdict((soak.get('rss_less_store_slope_mb_per_min') or 0) * span < max(5.0, 0.05 * mean_rss))} |",
    f"| RSS flat once warm (fitted over the second half, minutes {warm[0]['minute'] if warm else 0}–{warm[-1]['minute'] if warm else 0}; within 2.5 MB or 2.5 % of the mean) | "
    f"{warm_slope:+.3f} MB/min → {warm_growth:+.1f} MB | {verdict(warm_flat)} |",
    f"| Open file descriptors flat | {soak['fd_slope_per_min'] or 0:+.3f}/min → {fd_growth:+.1f} over {span} min | {verdict(fds_flat)} |",
] + [
    f"| {name.replace('_p99_ms', '').replace('single', 'single POST').replace('batch', 'batch POST').replace('query', 'query')} p99: last 5 min vs first 5 min | {a:.1f} ms → {b:.1f} ms | {verdict(same(a, b))} |"
    for name, a, b in p99_rows
] + [
    f"| Everything accepted is scored | {accepted:,} accepted; queue drained after the run: {soak['drained']} | {verdict(soak['drained'])} |",
    f"| SIGKILL at any instant (`tests/crash_recovery.rs`), 10 rounds in a row | {killed}/10 passed | {verdict(killed == 10)} |",
    "", f"Statuses over the run: {statuses}.", "",
    "Commits and checkpoints are the embedded store's (its `/metrics` histograms, so times are bucket bounds: "
    "p99 ≤ that many ms); every write waits for its commit, and the writes that arrive during a checkpoint wait for it.", "",
    "| Minute | RSS MB | SQLite MB | fds | queue depth | accepted | single p99 ms | batch p99 ms | query p99 ms | commits | commit p99 ≤ ms | checkpoints (ms in all, longest ≤ ms) | stream connects | skipped |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
] + [
    f"| {r['minute']} | {r['rss_mb']:.0f} | {(r.get('store_mb') or 0):.1f} | {r['fds']} | {r['queue_depth']} | {r['accepted']:,} | {r['single_p99_ms']:.1f} | {r['batch_p99_ms']:.1f} | {r['query_p99_ms']:.1f} | "
    f"{r.get('commits') or 0:,.0f} | {ms(r.get('commit_p99_ms'))} | {r.get('checkpoints') or 0:.0f} ({r.get('checkpoint_ms') or 0:,.0f}, {ms(r.get('checkpoint_max_ms'))}) | {r['stream_connects']} | {r['skipped']} |"
    for r in rows
] + [""]
write_section(section)
PY
