#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time each and
# reports how long each ran and whether it found a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to $RISKD_FUZZ_SECONDS, else 180. Installs
# cargo-fuzz when missing; uses the nightly toolchain when present.
# Inputs the fuzzer finds interesting go to fuzz/corpus/<target> (not
# committed); the committed seeds are fuzz/seeds/<target>. A crash leaves
# its input in fuzz/artifacts/<target>/ and makes this script exit non-zero:
# turn it into a regression test in the crate concerned, then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${RISKD_FUZZ_SECONDS:-180}}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "fuzz.sh: seconds per target must be a positive whole number, got '$seconds'" >&2
    exit 2
fi
# cargo-fuzz: installed once into the tools root (like tansu) when missing.
tools="${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}"
export PATH="$tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz into $tools" >&2
    cargo install cargo-fuzz --locked --root "$tools"
fi
# libFuzzer's instrumentation needs unstable compiler flags: the nightly
# toolchain when there is one, else the default toolchain in bootstrap mode.
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
fi

# Built into the workspace's target dir, next to everything else.
opts=(--fuzz-dir fuzz --target-dir target/fuzz)
"${fuzz[@]}" build "${opts[@]}"

failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log="target/fuzz/$t.log"
    start=$(date +%s)
    status=ok
    # -rss_limit_mb: a leak or runaway allocation is a finding too.
    if ! "${fuzz[@]}" run "${opts[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        status="CRASH (see $log and fuzz/artifacts/$t/)"
        failed=1
    fi
    end=$(date +%s)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "fuzz $t: $((end - start))s, $runs runs, coverage $cov edges: $status"
done
exit $failed
