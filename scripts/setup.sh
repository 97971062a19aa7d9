#!/usr/bin/env bash
# Installs everything Leadscore needs to build, run and test, skipping what is already there.
# Safe to run again; the first run on a fresh machine takes ~30 minutes (cargo-leptos and
# wasm-bindgen-cli compile from source), later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

export PATH="$HOME/.cargo/bin:$PWD/node_modules/.bin:$PATH"

CARGO_LEPTOS_VERSION=0.3.10 # 0.3.11 needs a newer rustc than this machine's
NX_27017_VERSION=0.8.1 # the MongoDB wire-protocol stand-in the tests run the MongoDB store on
SEGMENT_SDK_VERSION=2.4.0 # Segment's official Python SDK, which the SDK test drives
SCHEMATHESIS_VERSION=4.32.5 # checks the server against its own OpenAPI description
# wasm-bindgen-cli must match the wasm-bindgen the crate links exactly.
WASM_BINDGEN_VERSION=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "Adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q " $CARGO_LEPTOS_VERSION\$"; then
  step "Installing cargo-leptos $CARGO_LEPTOS_VERSION (compiles from source, 15-30 min, once per machine)"
  # no_downloads: it takes wasm-bindgen and wasm-opt from PATH instead of fetching binaries.
  cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  step "Installing cargo-nextest (the test runner: one process per test, hung tests killed)"
  cargo install cargo-nextest --locked
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  step "Installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (~7 min, once per version)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if [ ! -x node_modules/.bin/wasm-opt ]; then
  step "Installing build tools from npm (binaryen's wasm-opt)"
  npm ci --no-audit --no-fund
fi

if [ ! -d end2end/node_modules/@playwright/test ]; then
  step "Installing the browser test runner (Playwright, without a browser download)"
  (cd end2end && npm ci --no-audit --no-fund)
fi

if [ ! -x .tools/nx-venv/bin/nx-27017 ]; then
  step "Installing the MongoDB stand-in for the tests (nx-27017 from PyPI, in .tools/nx-venv)"
  python3 -m venv .tools/nx-venv
  .tools/nx-venv/bin/pip install --quiet --disable-pip-version-check "nx-27017==$NX_27017_VERSION"
fi

if [ ! -x .tools/sdk-venv/bin/python ] || ! .tools/sdk-venv/bin/pip show -q "segment-analytics-python" 2>/dev/null; then
  step "Installing Segment's Python SDK for the SDK test (segment-analytics-python from PyPI, in .tools/sdk-venv)"
  python3 -m venv .tools/sdk-venv
  .tools/sdk-venv/bin/pip install --quiet --disable-pip-version-check "segment-analytics-python==$SEGMENT_SDK_VERSION"
fi

if ! .tools/schemathesis-venv/bin/schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  step "Installing schemathesis $SCHEMATHESIS_VERSION (PyPI, in .tools/schemathesis-venv)"
  python3 -m venv .tools/schemathesis-venv
  .tools/schemathesis-venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if ! have chromium; then
  step "Installing Chromium from Debian for the browser tests"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

step "Tools ready: $(cargo leptos --version), $(wasm-bindgen --version), $(wasm-opt --version | head -1), $(chromium --version 2>/dev/null)"
