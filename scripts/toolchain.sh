#!/usr/bin/env bash
# Installs what Still's build and tests need and is missing, at pinned versions.
# Sourced by scripts/start and scripts/test; safe to run again (every step checks first).
# Why these pins: Trunk runs offline, Debian's binaryen (wasm-opt 108) breaks Leptos WASM so
# wasm-opt comes from npm, and wasm-bindgen-cli must equal the wasm-bindgen in Cargo.lock.
set -euo pipefail

STILL_TRUNK_VERSION=0.22.1
STILL_WASM_BINDGEN_VERSION=0.2.130   # must equal wasm-bindgen in Cargo.lock (checked below)
STILL_BINARYEN_VERSION=132
STILL_TOOLS_DIR=${STILL_TOOLS_DIR:-$HOME/.cache/still-tools}

log() { printf '\033[1m[toolchain]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding rust target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_trunk() {
  if trunk --version 2>/dev/null | grep -q " ${STILL_TRUNK_VERSION}\$"; then return; fi
  log "installing trunk ${STILL_TRUNK_VERSION} (cold: ~13 min on 2 cores)"
  # trunk declares a newer rust-version than it needs; it builds and runs on 1.95.
  cargo install --locked --ignore-rust-version "trunk@${STILL_TRUNK_VERSION}"
}

ensure_wasm_bindgen() {
  if wasm-bindgen --version 2>/dev/null | grep -q " ${STILL_WASM_BINDGEN_VERSION}\$"; then return; fi
  log "installing wasm-bindgen-cli ${STILL_WASM_BINDGEN_VERSION} (cold: ~6 min)"
  # Not --locked: the CLI's own lockfile pins a webpki-roots version the registry lacks.
  cargo install "wasm-bindgen-cli@${STILL_WASM_BINDGEN_VERSION}"
}

ensure_wasm_opt() {
  # Debian's binaryen (wasm-opt 108) silently breaks Leptos WASM: use npm's binaryen.
  local dir="$STILL_TOOLS_DIR/binaryen-${STILL_BINARYEN_VERSION}"
  if [ ! -x "$dir/node_modules/.bin/wasm-opt" ]; then
    log "installing wasm-opt (npm binaryen@${STILL_BINARYEN_VERSION}) into $dir"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund "binaryen@${STILL_BINARYEN_VERSION}.0.0" >/dev/null)
  fi
  export PATH="$dir/node_modules/.bin:$PATH"
}

ensure_chromium() {
  if [ -x /usr/lib/chromium/chromium ] && command -v chromedriver >/dev/null; then return; fi
  log "installing Debian chromium and chromium-driver"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

check_lock_matches() {
  local root=$1 locked
  [ -f "$root/Cargo.lock" ] || return 0
  locked=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/[^0-9.]/, "", $0); print; exit}' "$root/Cargo.lock")
  if [ -n "$locked" ] && [ "$locked" != "$STILL_WASM_BINDGEN_VERSION" ]; then
    log "Cargo.lock has wasm-bindgen $locked but the toolchain pins $STILL_WASM_BINDGEN_VERSION; update both together"
    exit 1
  fi
}

# Usage: toolchain.sh [build|test]; `test` also installs the browser.
still_toolchain() {
  local mode=${1:-build} root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  check_lock_matches "$root"
  ensure_wasm_target
  ensure_wasm_opt
  [ "$mode" = test ] && ensure_chromium
  ensure_wasm_bindgen
  ensure_trunk
  export TRUNK_SKIP_VERSION_CHECK=true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  still_toolchain "${1:-test}"
  log "toolchain ready"
fi
