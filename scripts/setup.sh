#!/usr/bin/env bash
# Installs, idempotently, everything the build, the demo and the tests need on a
# fresh Debian machine: clang/libclang (bindgen), CMake >= 3.28 (LightGBM),
# make/gcc (librdkafka), the tansu broker, built once into a cached root, and
# Python polars for the feature parity test (engine/features/tests/polars_parity.rs),
# installed into the same cached root, never into the Rust crates.
# Safe to run again: each step is skipped when its tool is already there.
set -euo pipefail

TOOLS_ROOT="${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}"
TANSU_VERSION="${RISKD_TANSU_VERSION:-0.6.0}"
POLARS_VERSION="2.1.0"
log() { printf '[setup] %s\n' "$*" >&2; }

have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
have_pkg libclang-dev || need_apt+=(libclang-dev)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc g++)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cmake_ok() {
  command -v cmake >/dev/null 2>&1 || return 1
  local v; v=$(cmake --version | head -1 | awk '{print $3}')
  [ "$(printf '%s\n3.28\n' "$v" | sort -V | head -1)" = "3.28" ]
}
ensure_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
  fi
}
if ! cmake_ok; then
  log "installing CMake >= 3.28 from PyPI"
  ensure_pip
  # Debian's own Python refuses plain pip installs (PEP 668); pyenv's accepts them.
  python3 -m pip install -q 'cmake>=3.28' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'cmake>=3.28'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  hash -r
  cmake_ok || { log "CMake >= 3.28 still not on PATH"; exit 1; }
fi

# The parity test runs scripts/parity/features_polars.py with this directory
# on PYTHONPATH (RISKD_POLARS_PYTHONPATH overrides it). Polars 2.1 and the
# script (tomllib) need Python >= 3.11, as in Debian 12 and later.
polars_ok() {
  PYTHONPATH="$TOOLS_ROOT/python" python3 -c \
    "import polars, sys; sys.exit(polars.__version__ != '$POLARS_VERSION')" >/dev/null 2>&1
}
if ! polars_ok; then
  log "installing polars $POLARS_VERSION into $TOOLS_ROOT/python"
  ensure_pip
  mkdir -p "$TOOLS_ROOT/python"
  python3 -m pip install -q --upgrade --target "$TOOLS_ROOT/python" "polars==$POLARS_VERSION" 2>/dev/null \
    || python3 -m pip install -q --upgrade --break-system-packages --target "$TOOLS_ROOT/python" \
      "polars==$POLARS_VERSION"
  polars_ok || { log "polars $POLARS_VERSION still not importable from $TOOLS_ROOT/python"; exit 1; }
fi

if [ ! -x "$TOOLS_ROOT/bin/tansu" ]; then
  log "building the tansu broker $TANSU_VERSION into $TOOLS_ROOT (about 10 minutes, once)"
  mkdir -p "$TOOLS_ROOT"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TOOLS_ROOT"
fi
log "tools ready: tansu at $TOOLS_ROOT/bin/tansu, $(cmake --version | head -1), polars $POLARS_VERSION"
