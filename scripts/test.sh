#!/usr/bin/env bash
# The whole test suite: sets up what is missing, then unit, store conformance, HTTP and crash
# tests (cargo test), then browser tests in headless Chromium (cargo leptos end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"
# A CI run builds once in a fresh clone: incremental caches would only cost it time and GBs.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

# MongoDB: a real server when MONGODB_TEST_URI names one (MongoDB, Atlas), else the nx-27017
# stand-in started here on a free port and stopped at the end.
if [ -z "${MONGODB_TEST_URI:-}" ]; then
  mapfile -t standin < <(scripts/mongo-standin.sh start)
  export MONGODB_TEST_URI="${standin[0]}"
  trap 'scripts/mongo-standin.sh stop "${standin[1]}"' EXIT
  echo "MongoDB stand-in (nx-27017) at $MONGODB_TEST_URI"
fi

printf '\n\033[1;36m==> Rust tests (unit, store conformance on SQLite and MongoDB, MongoDB fencing and scale-out, HTTP, crash recovery)\033[0m\n'
cargo nextest run --features ssr

# Every suite that starts a server runs again on MongoDB (tests/mongo_fencing.rs and
# tests/scale_out.rs ran above: they are MongoDB's own). SQLite only, and why:
# - the SQLite store's unit tests (schema migrations, query plans): that store's internals;
# - tests/faults.rs (a full disk) and tests/backup.rs: the embedded store's file and its
#   backup/restore commands (MongoDB's disk and backups are the database server's);
# - the browser tests: they drive the UI, which reaches the store through the same service
#   and HTTP layer these suites cover on both.
printf '\n\033[1;36m==> HTTP, stream, access, account, crash, dead-letter, rules, stages, decay, rescore, webhook, Segment API, identity, metrics and export tests again, on MongoDB\033[0m\n'
LEADSCORE_TEST_BACKEND=mongodb cargo nextest run --features ssr --test http_api --test live_stream --test access_policy \
  --test accounts --test crash_recovery --test dead_letters --test rules_api --test stages_api --test decay_api \
  --test rescore_api --test webhooks_api --test segment_api --test segment_sdk --test metrics --test export_api --test identity_api

# The server and WASM, built once for the API description check and the browser tests.
# --split: every page is a WASM part of its own (src/app/mod.rs); a build without it cannot load them.
printf '\n\033[1;36m==> Building the server and the WASM client (cargo leptos build --split)\033[0m\n'
cargo leptos build --split
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
export LEADSCORE_BIN="$TARGET_DIR/debug/leadscore"
export LEADSCORE_SITE_ROOT="$PWD/target/site"

printf '\n\033[1;36m==> The API against its OpenAPI description (schemathesis: no 5xx, every answer as described)\033[0m\n'
scripts/schemathesis.sh "$LEADSCORE_BIN"
# …and on MongoDB, in a database of its own (when the URI names no database or options).
if [[ "$MONGODB_TEST_URI" =~ ^mongodb://[^/?]+/?$ ]]; then
  STORE_URL="${MONGODB_TEST_URI%/}/leadscore_schemathesis_$$" scripts/schemathesis.sh "$LEADSCORE_BIN"
else
  echo "MONGODB_TEST_URI names a database or options: the MongoDB schemathesis run is skipped"
fi

printf '\n\033[1;36m==> Browser tests (serves on 127.0.0.1:5001)\033[0m\n'
E2E_DIR="$PWD/target/e2e"
rm -rf "$E2E_DIR" end2end/artifacts
mkdir -p "$E2E_DIR" end2end/artifacts
# The restart test runs the built server binary itself (LEADSCORE_BIN, LEADSCORE_SITE_ROOT).
# A throw-away database, so browser tests never touch data/leadscore.db; no rate limit, the
# tests post faster than one client normally would.
# The tests create their accounts with this key (end2end/global-setup.ts) and sign in.
export E2E_ADMIN_KEY="e2e-admin-key-$RANDOM$RANDOM"
DATABASE_URL="sqlite://$E2E_DIR/leadscore.db" RATE_LIMIT_PER_SECOND=0 API_KEYS="$E2E_ADMIN_KEY" cargo leptos end-to-end --split
echo "Screenshots: end2end/artifacts/"
