#!/usr/bin/env bash
# Sets up what is missing, then builds and serves Leadscore on http://127.0.0.1:5001 with the
# embedded SQLite store (data/leadscore.db). Extra arguments go to `cargo leptos serve`
# (e.g. --release; a release build also ships each static file precompressed: brotli q11, gzip).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"
# --split: every page is a WASM part of its own (src/app/mod.rs), fetched when first shown.
args=(--split "$@")
for arg in "$@"; do
  if [ "$arg" = --release ]; then args+=(--precompress); fi
done
exec cargo leptos serve "${args[@]}"
