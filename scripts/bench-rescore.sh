# Sourced by scripts/bench.sh --rescore (uses its helpers and variables): a store with 1M
# leads and 5M scored events (filled through the Store API), every rule's points changed, then
# one rescore of every lead through the running server, timed; written to the "## Rescoring"
# section of BENCHMARKS.md.
LEADS=$(scaled 1000000); BIG=$(scaled 5000000)
step "Filling a store: $LEADS leads, $BIG scored events"
"$LOAD" populate --db "$WORK/rescore.db" --leads "$LEADS" --events "$BIG" --json | tail -1 >"$WORK/populate.json"
start_server "$WORK/rescore.db"
step "Every type's points up by one, then POST /api/rescore until done"
"$LOAD" rescore --url "$URL" --api-key "$BENCH_KEY" --json | tail -1 >"$WORK/rescore.json"
RESCORE_RSS=$(stop_server)

step "Writing the rescoring section of BENCHMARKS.md"
python3 - "$WORK" "$RESCORE_RSS" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
work, rss = sys.argv[1], int(sys.argv[2]) / 1024
r = json.load(open(os.path.join(work, "rescore.json")))
pop = json.load(open(os.path.join(work, "populate.json")))
verdict = lambda ok: "✅ met" if ok else "❌ not met"
section = [
    "## Rescoring", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --rescore` (release build, embedded "
    f"store, 2 cores): a store of {pop['leads']:,} leads and {pop['events']:,} scored events, every event type's points "
    "changed by one (so every lead's score changes), then `POST /api/rescore` polled until done.", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| Rescore ≥ 150k events/s on 2 cores | {r['per_s']:,.0f} events/s ({r['processed']:,} events, {r['leads']:,} leads, "
    f"{r['adjusted']:,} adjusted, in {r['seconds']:.1f} s) | {verdict(r['per_s'] >= 150000)} |",
    f"| Memory bounded (events streamed in ingest order; kept per lead: its replay so far) | server peak RSS {rss:.0f} MB | |", "",
]
write_section(section)
PY
