# Sourced by scripts/bench.sh --store mongodb (uses its helpers and variables): the ingest
# and query figures on MongoDB, written to the "## MongoDB" section of BENCHMARKS.md.
# Sizes are smaller than SQLite's: the default server here is the nx-27017 stand-in, a single
# Python process on SQLite. BENCH_SCALE multiplies them (use 10 or more on a real server).

if [ -n "${BENCH_MONGODB_URI:-}" ]; then
  MONGO_BASE="${BENCH_MONGODB_URI%/}"
  MONGO_LABEL="MongoDB at $(echo "$MONGO_BASE" | sed -E 's#//[^@/]*@#//#')"
else
  mapfile -t standin < <(scripts/mongo-standin.sh start)
  MONGO_BASE="${standin[0]}"
  trap 'kill $(jobs -p) 2>/dev/null || true; scripts/mongo-standin.sh stop "${standin[1]}"; rm -rf "$WORK"' EXIT
  MONGO_LABEL="the nx-27017 $(.tools/nx-venv/bin/pip show nx-27017 2>/dev/null | awk '/^Version/ {print $2}') stand-in (a MongoDB wire-protocol server in one Python process on SQLite), not MongoDB"
fi
RUN_ID="$$"
# mongodb://host[:port][/db][?options] → mongodb://host[:port]/leadscore_bench_<run>_<name>[?options]
mongo_db() {
  local base="${MONGO_BASE%%\?*}" query=""
  [ "$base" != "$MONGO_BASE" ] && query="?${MONGO_BASE#*\?}"
  local hosts="${base#*://}"; hosts="${hosts%%/*}"
  echo "${base%%://*}://$hosts/leadscore_bench_${RUN_ID}_$1$query"
}
DATABASES=()
drop_databases() {
  for db in "${DATABASES[@]}"; do "$LOAD" drop-database --database-url "$db" >/dev/null 2>&1 || true; done
}

M_EVENTS=$(scaled 10000)
DB=$(mongo_db ceiling); DATABASES+=("$DB")
step "MongoDB 1. Store ceiling: $M_EVENTS events through the Store API (counts commands per scored event)"
"$LOAD" store-ceiling --events "$M_EVENTS" --leads "$(scaled 1000)" --database-url "$DB" --json | tail -1 >"$WORK/m-ceiling.json"

DB=$(mongo_db bulk); DATABASES+=("$DB")
step "MongoDB 2. End-to-end batch ingest: $M_EVENTS events, batches of 1000, 4 connections"
start_server "$DB"
"$LOAD" bulk --url "$URL" --api-key "$BENCH_KEY" --events "$M_EVENTS" --batch 1000 --concurrency 4 --json | tail -1 >"$WORK/m-bulk.json"
M_BULK_RSS=$(stop_server)

M_SINGLE=$(scaled 3000)
DB=$(mongo_db single); DATABASES+=("$DB")
step "MongoDB 3. Single-event POSTs: $M_SINGLE requests, 16 connections"
start_server "$DB"
"$LOAD" single --url "$URL" --api-key "$BENCH_KEY" --events "$M_SINGLE" --concurrency 16 --json | tail -1 >"$WORK/m-single.json"
stop_server >/dev/null

M_LEADS=$(scaled 5000); M_BIG=$(scaled 20000)
DB=$(mongo_db query); DATABASES+=("$DB")
step "MongoDB 4. Queries with $M_LEADS leads and $M_BIG events"
"$LOAD" populate --database-url "$DB" --leads "$M_LEADS" --events "$M_BIG" --json | tail -1 >"$WORK/m-populate.json"
start_server "$DB"
"$LOAD" query --url "$URL" --api-key "$BENCH_KEY" --requests 1000 --concurrency 8 --leads "$M_LEADS" --json | tail -1 >"$WORK/m-query.json"
M_QUERY_RSS=$(stop_server)
drop_databases

step "Writing the MongoDB section of BENCHMARKS.md"
python3 - "$WORK" "$SCALE" "$MONGO_LABEL" "$M_BULK_RSS" "$M_QUERY_RSS" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
work, scale, label = sys.argv[1], sys.argv[2], sys.argv[3]
bulk_rss, query_rss = (int(x) / 1024 for x in sys.argv[4:6])
j = lambda name: json.load(open(os.path.join(work, name + ".json")))
ceiling, bulk, single, pop, query = (j(n) for n in ["m-ceiling", "m-bulk", "m-single", "m-populate", "m-query"])
section = [
    "## MongoDB", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --store mongodb` on {label}, "
    f"same machine{'' if scale == '1' else f', BENCH_SCALE={scale}'}. "
    "These figures measure the server in front of the database as much as Leadscore: on the stand-in they are a "
    "floor and a regression check, not a capacity figure for MongoDB.", "",
    f"1. **Store ceiling** ({ceiling['events']:,} events, `Store` API): insert {ceiling['insert_per_s']:,.0f}/s, "
    f"apply {ceiling['apply_per_s']:,.0f}/s, both {ceiling['end_to_end_per_s']:,.0f} events/s. "
    f"**Round trips: {ceiling['scoring_commands_per_event']:.4f} commands per scored event** "
    f"(queue reads and `apply`, worker batch {ceiling['worker_batch']:,}; target ≤ 1).",
    f"2. **End-to-end batch ingest** ({bulk['events']:,} events, batches of {bulk['batch']}, {bulk['concurrency']} connections): "
    f"accepted {bulk['accepted_per_s']:,.0f}/s, scored {bulk['scored_per_s']:,.0f}/s; batch latency p50 "
    f"{bulk['batch_latency']['p50_ms']:.0f} ms, p99 {bulk['batch_latency']['p99_ms']:.0f} ms; statuses {bulk['batch_latency']['statuses']}; "
    f"server peak RSS {bulk_rss:.0f} MB.",
    f"3. **Single-event POST** ({single['events']:,} requests, {single['concurrency']} connections): {single['requests_per_s']:,.0f} req/s, "
    f"p50 {single['latency']['p50_ms']:.1f} ms, p99 {single['latency']['p99_ms']:.1f} ms; statuses {single['latency']['statuses']}.",
    f"4. **Queries** with {pop['leads']:,} leads and {pop['events']:,} events: leaderboard top-100 p50 "
    f"{query['leaderboard_top100']['p50_ms']:.1f} ms, p99 {query['leaderboard_top100']['p99_ms']:.1f} ms; lead detail p50 "
    f"{query['lead_detail']['p50_ms']:.1f} ms, p99 {query['lead_detail']['p99_ms']:.1f} ms (8 connections); server peak RSS {query_rss:.0f} MB.",
    "",
]
write_section(section, before=("\n## Notes",))
PY
