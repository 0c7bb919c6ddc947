#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds the
# engine, starts a local broker, creates the topics, serves, streams
# replay-data/ through the engine showing decisions as they are made, and
# prints a summary. Extra arguments go to `riskd demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RISKD_TANSU="${RISKD_TANSU:-${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}/bin/tansu}"
cargo build --release --locked -p riskd
exec ./target/release/riskd demo "$@"
