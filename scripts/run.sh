#!/usr/bin/env bash
# Sets up what is missing, then builds and serves Leadscore on http://127.0.0.1:5001 with the
# embedded SQLite store (data/leadscore.db). Extra arguments go to `cargo leptos serve`
# (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"
exec cargo leptos serve "$@"
