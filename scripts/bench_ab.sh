#!/usr/bin/env bash
# Compares the feature-state bench (benches/benches/feature_state.rs) of two
# revisions, runs alternating, so a change of a few percent can be told from
# the machine's drift: on a 2-core VM, runs of one binary minutes apart
# differ by up to 10%, mostly from where the state lands in memory.
#
#   scripts/bench_ab.sh BASE [NEW] [RUNS]
#
# BASE and NEW are git revisions (NEW defaults to the working tree, as
# `WORKTREE`); RUNS pairs are run (default 4). Each run populates the full
# state again, about a minute at the default size; the bench's own
# settings apply (RISKD_BENCH_USERS, RISKD_BENCH_EVENTS_PER_USER).
# Prints every run's median and p99, then per revision the mean of the
# medians and their range.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:?usage: scripts/bench_ab.sh BASE [NEW] [RUNS]}"
new="${2:-WORKTREE}"
runs="${3:-4}"
work="$(mktemp -d /tmp/riskd-bench-ab.XXXXXX)"
target="${CARGO_TARGET_DIR:-$PWD/target}"
cleanup() {
    for d in "$work"/src-*; do
        [ -d "$d" ] && git worktree remove --force "$d" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Builds the bench of a revision (or of the working tree) and copies the
# binary out before the next build overwrites it.
build() {
    local rev="$1" name="$2" dir
    if [ "$rev" = WORKTREE ]; then
        dir="$PWD"
    else
        dir="$work/src-$name"
        git worktree add --detach "$dir" "$rev" >/dev/null
    fi
    echo "building $rev ..." >&2
    local exe
    exe="$(cd "$dir" && CARGO_TARGET_DIR="$target" cargo bench --locked -p riskd-benches --bench feature_state --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)"
    [ -n "$exe" ] || { echo "no bench binary built for $rev" >&2; exit 1; }
    case "$exe" in /*) ;; *) exe="$dir/$exe" ;; esac
    cp "$exe" "$work/$name"
}
build "$base" a
build "$new" b

for i in $(seq 1 "$runs"); do
    for name in a b; do
        line="$("$work/$name" | grep 'update per event')"
        p50="$(sed -n 's/.*median \([0-9.]*\) us.*/\1/p' <<<"$line")"
        p99="$(sed -n 's/.*p99 \([0-9.]*\) us.*/\1/p' <<<"$line")"
        rev="$base"
        [ "$name" = b ] && rev="$new"
        echo "run $i  $rev  median ${p50} us  p99 ${p99} us"
        echo "$name $p50" >>"$work/medians"
    done
done
for name in a b; do
    rev="$base"
    [ "$name" = b ] && rev="$new"
    awk -v n="$name" -v r="$rev" '$1 == n { s += $2; c++; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 }
        END { printf "%s: mean median %.2f us over %d runs (%.2f to %.2f)\n", r, s / c, c, min, max }' "$work/medians"
done
