#!/usr/bin/env bash
# Runs every test, including the integration tests against a real local
# tansu broker. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RISKD_TANSU="${RISKD_TANSU:-${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}/bin/tansu}"
cargo test --workspace --locked "$@"

# Fuzzing is not part of the default run (CI time limit). With
# RISKD_FUZZ_SECONDS set, each fuzz target also runs that many seconds.
if [ -n "${RISKD_FUZZ_SECONDS:-}" ]; then
    bash scripts/fuzz.sh "$RISKD_FUZZ_SECONDS"
fi
