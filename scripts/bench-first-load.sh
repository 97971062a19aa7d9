# Sourced by scripts/bench.sh --first-load (uses its helpers): the release build as shipped
# (split, content-hashed, precompressed), a leaderboard of 200 leads, then cold and warm loads
# of it in headless Chromium (scripts/first-load.mjs); written to the "## First load" section
# of BENCHMARKS.md.
export PATH="$PWD/node_modules/.bin:$PATH" # wasm-opt (binaryen, from npm; scripts/setup.sh)
step "Building the release site (cargo leptos build --release --split --precompress)"
cargo leptos build --release --split --precompress
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WORK=$(mktemp -d /tmp/leadscore-bench.XXXXXX)
PORT=5099
URL="http://127.0.0.1:$PORT"
# Sign-in off, so the browser opens the leaderboard itself: the page and its data are the same.
AUTH=off RATE_LIMIT_PER_SECOND=0 DATABASE_URL="sqlite://$WORK/first-load.db" HOST=127.0.0.1 PORT=$PORT \
  LEPTOS_SITE_ROOT="$PWD/target/site" RUST_LOG=warn "$TARGET_DIR/release/leadscore" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -fs "$URL/api/health" >/dev/null 2>&1 && break
  sleep 0.1
done

step "A leaderboard to show: 200 leads"
python3 - "$URL" <<'PY'
import json, sys, urllib.request, datetime
url = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
kinds = ["Page View", "Email Open", "Form Submission", "Demo Request", "Webinar Attended"]
events = [{"eventId": f"first-load-{i}", "leadId": f"lead-{i % 200:03d}", "eventType": kinds[i % 5],
           "timestamp": now} for i in range(1000)]
req = urllib.request.Request(url + "/api/events/batch", json.dumps(events).encode(),
                             {"content-type": "application/json"})
print(urllib.request.urlopen(req).status)
PY

step "Cold and warm loads of the leaderboard in Chromium"
node scripts/first-load.mjs "$URL/" "${FIRST_LOAD_RUNS:-10}" | tail -1 >"$WORK/first-load.json"
# Another page, of its own WASM parts: what the leaderboard being in the main WASM costs it.
# Its bundle's first request gets a quick brotli copy and starts the best one in the
# background, so one visit first, and the runs once that copy is made.
node scripts/first-load.mjs "$URL/rules" 1 >/dev/null
sleep 5
node scripts/first-load.mjs "$URL/rules" 3 | tail -1 >"$WORK/first-load-rules.json"

step "Writing the first-load section of BENCHMARKS.md"
python3 - "$WORK" <<'PY'
import json, sys, os, datetime
sys.path.insert(0, "scripts")
from bench_section import write_section
r = json.load(open(os.path.join(sys.argv[1], "first-load.json")))
rules = json.load(open(os.path.join(sys.argv[1], "first-load-rules.json")))["links"]["loopback"]
loop, slow = r["links"]["loopback"], r["links"]["20mbit-40ms"]
verdict = lambda ok: "✅ met" if ok else "❌ not met"
kb = lambda n: f"{n / 1000:,.1f} KB"
def kind(path):
    name = path.rsplit("/", 1)[-1]
    if not path.startswith("/pkg/"): return "the page and its data"
    if name.startswith("page__"): return "the page's WASM parts, in one bundle (src/server/page_bundles.rs)"
    if name.startswith("split_"): return "the page's own WASM part"
    if name.startswith("chunk_"): return "WASM parts shared between pages"
    if name.startswith("leadscore.") and name.endswith(".wasm"): return "the main WASM (shell, router, runtime and the leaderboard)"
    return "JS glue, split loader and CSS"
groups = {}
for p, f in loop["files"].items():
    n, b = groups.get(kind(p), (0, 0))
    groups[kind(p)] = (n + 1, b + f["bytes"])
files = "; ".join(f"{k}: {kb(b)} in {n} file{'s' if n > 1 else ''}" for k, (n, b) in sorted(groups.items(), key=lambda g: -g[1][1]))
section = [
    "## First load", "",
    f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC with `scripts/bench.sh --first-load`: the release site as "
    "shipped (`cargo leptos build --release --split --precompress`: the leaderboard in the main WASM, every other "
    f"page its own WASM parts, sent as one bundle on a first visit; content-hashed names, brotli q11 files), the leaderboard of 200 leads opened {r['runs']} times in headless Chromium with an empty cache "
    "(median), then once more with the cache (warm). Bytes are what crossed the network, headers included.", "",
    "| Target | Measured | |", "|---|---|---|",
    f"| Leaderboard's first load ≤ 350 KB over the wire | {kb(loop['bytesTotal'])} in all, of which {kb(loop['bytesPkg'])} "
    f"static files (`/pkg/`) | {verdict(loop['bytesTotal'] <= 350_000)} |",
    f"| First load to hydrated, loopback | {loop['hydratedMsMedian']} ms median ({loop['hydratedMsMax']} ms slowest); "
    f"DOMContentLoaded {loop['domContentLoadedMsMedian']} ms | |",
    f"| First load to hydrated, emulated 20 Mbit/s and 40 ms round trips | {slow['hydratedMsMedian']} ms median "
    f"({slow['hydratedMsMax']} ms slowest) | |",
    f"| Warm load (hashed files cached for a year) | {loop['warmHydratedMsMedian']} ms to hydrated; "
    f"{loop['warmPkgBytes']:,} bytes of static files transferred | |",
    f"| Another page's first load (`/rules`, of its own WASM parts; 3 runs) | {kb(rules['bytesTotal'])} in all; "
    f"{rules['hydratedMsMedian']} ms to hydrated, loopback | |", "",
    f"What a cold load fetched ({len(loop['files'])} responses): {files}.", "",
]
write_section(section)
PY
