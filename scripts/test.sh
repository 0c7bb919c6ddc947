#!/usr/bin/env bash
# Runs every test, including the integration tests against a real local
# tansu broker. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RISKD_TANSU="${RISKD_TANSU:-${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}/bin/tansu}"
# Benches and examples must keep compiling too (tests do not build them).
cargo check --workspace --all-targets --locked
cargo test --workspace --locked "$@"

# With RISKD_FUZZ_SECONDS set (CI sets 30), each fuzz target also runs that
# many seconds; a crash fails the run.
if [ -n "${RISKD_FUZZ_SECONDS:-}" ]; then
    bash scripts/fuzz.sh "$RISKD_FUZZ_SECONDS"
fi
