#!/usr/bin/env bash
# Starts nx-27017 (PyPI: a MongoDB wire-protocol server on SQLite) on a free loopback port
# with a throw-away data directory, waits until it answers, and prints its URI. The tests
# use it as the MongoDB server when MONGODB_TEST_URI names none. Stop it with:
#   scripts/mongo-standin.sh stop DIR     (DIR is the second line printed)
# It is a stand-in: where it differs from MongoDB the store follows MongoDB's documented
# behaviour within what every compatible server supports (README, "Running on MongoDB").
set -euo pipefail
cd "$(dirname "$0")/.."
NX=.tools/nx-venv/bin/nx-27017

if [ "${1:-start}" = "stop" ]; then
  dir="$2"
  [ -f "$dir/nx.pid" ] && kill "$(cat "$dir/nx.pid")" 2>/dev/null || true
  rm -rf "$dir"
  exit 0
fi

[ -x "$NX" ] || { echo "nx-27017 is not installed; run scripts/setup.sh" >&2; exit 1; }
dir=$(mktemp -d /tmp/leadscore-mongo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$NX" --host 127.0.0.1 --port "$port" --data-dir "$dir/data" --log-file "$dir/nx.log" --pid-file "$dir/nx.pid.unused" \
  >"$dir/out.log" 2>&1 &
echo $! >"$dir/nx.pid"
for _ in $(seq 1 150); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    echo "mongodb://127.0.0.1:$port"
    echo "$dir"
    exit 0
  fi
  sleep 0.2
done
echo "nx-27017 did not start:" >&2; cat "$dir/out.log" >&2
exit 1
