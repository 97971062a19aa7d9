#!/usr/bin/env bash
# The server against its own OpenAPI description: schemathesis (PyPI) generates requests for
# every described operation, valid and not, and checks that no answer is a 5xx and that
# every answer (status, content type, headers, body) is one the description allows.
# Usage: [STORE_URL=mongodb://…/db] scripts/schemathesis.sh SERVER_BINARY   (default store: a
# throw-away SQLite file; scripts/test.sh runs it on both stores with the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?the server binary}
WORK=$(mktemp -d)
KEY="schemathesis-admin-$RANDOM$RANDOM"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
HOST=127.0.0.1 PORT=$PORT LEPTOS_SITE_ROOT="$PWD/target/site" DATABASE_URL="${STORE_URL:-sqlite://$WORK/leadscore.db}" \
  API_KEYS="$KEY" RATE_LIMIT_PER_SECOND=0 "$BIN" >"$WORK/server.log" 2>&1 &
SERVER=$!
# (No `exec` below: the server must be stopped when schemathesis is done.)
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -sf "$BASE/api/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.2
done
# Some data for the reads to find.
curl -sf -H "X-API-Key: $KEY" -H 'content-type: application/json' "$BASE/api/events/batch" -d '[
  {"eventId":"st-1","leadId":"lead-1","eventType":"Page View","timestamp":"2026-01-01T00:00:00Z","metadata":{"page":"/pricing"}},
  {"eventId":"st-2","leadId":"lead-2","eventType":"Purchase","timestamp":"2026-01-02T00:00:00Z"}]' >/dev/null
# The live stream never ends, so no single answer can be checked: tests/live_stream.rs covers it.
# Everything else, with an admin key (the gate's 401/403 are covered by tests/access_policy.rs).
.tools/schemathesis-venv/bin/schemathesis run "$BASE/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path /api/stream \
  --header "X-API-Key: $KEY" \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" \
  --request-timeout 30 \
  --generation-database none \
  --seed "${SCHEMATHESIS_SEED:-$RANDOM}" \
  --no-color
