#!/usr/bin/env bash
# The whole benchmark suite, then the tables in BENCHMARKS.md rewritten from
# its results:
#   1. criterion benches per stage (rules, stages), the per-call latency
#      bench (p50/p99/p99.9/max) and feature state at scale (30 features,
#      1M users);
#   2. replay throughput on a generated stream (5 million events by default);
#   3. the open-loop load test through a local tansu broker, engine against a
#      pass-through, at several rates up to saturation; then again at two
#      rates with the client settings traded towards throughput.
# Raw results go to benches/out/. Run it on an otherwise idle machine: the
# figures are only as quiet as the machine.
#
# Settings (environment):
#   BENCH_EVENTS     events in the replay stream         (default 5000000)
#   BENCH_USERS      users in the replay stream          (default 250000)
#   BENCH_REPLAYS    replay runs                         (default 2)
#   BENCH_RATES      load-test rates, comma-separated    (default 1000,5000,10000,15000,20000,30000)
#   BENCH_DURATION   measured seconds per rate           (default 10)
#   BENCH_TPUT_RATES rates for the load test again with throughput settings
#                    (linger 10 ms, fetch wait 10 ms)    (default 20000,30000)
#   BENCH_SETTINGS   client settings compared at 10,000 events/s, as
#                    LINGER_MS:FETCH_WAIT_MS pairs       (default 0:1 1:2 2:2 5:1 5:2 5:5 10:10)
#   BENCH_DATA       where the generated stream is kept  (default /tmp/riskd-bench)
#   BENCH_SKIP       any of: criterion latency features replay loadtest (space-separated)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RISKD_TANSU="${RISKD_TANSU:-${RISKD_TOOLS_ROOT:-$HOME/.cache/riskd/tools}/bin/tansu}"

EVENTS="${BENCH_EVENTS:-5000000}"
USERS="${BENCH_USERS:-250000}"
REPLAYS="${BENCH_REPLAYS:-2}"
RATES="${BENCH_RATES:-1000,5000,10000,15000,20000,30000}"
DURATION="${BENCH_DURATION:-10}"
TPUT_RATES="${BENCH_TPUT_RATES:-20000,30000}"
SETTINGS="${BENCH_SETTINGS:-0:1 1:2 2:2 5:1 5:2 5:5 10:10}"
DATA="${BENCH_DATA:-/tmp/riskd-bench}"
SKIP="${BENCH_SKIP:-}"
OUT=benches/out
mkdir -p "$OUT" "$DATA"
skip() { [[ " $SKIP " == *" $1 "* ]]; }

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release --locked -p riskd
RISKD=./target/release/riskd

if ! skip criterion; then
    cargo bench --locked -p riskd-benches --bench rules --bench stages
fi
if ! skip latency; then
    cargo bench --locked -p riskd-benches --bench latency
fi
if ! skip features; then
    cargo bench --locked -p riskd-benches --bench feature_state
fi

if ! skip replay; then
    # A throwaway key file: replay needs one, the figures do not depend on it.
    keys="$DATA/keys.toml"
    [ -f "$keys" ] || "$RISKD" keys generate --out "$keys"
    stream="$DATA/events-$EVENTS-$USERS.jsonl"
    if [ ! -f "$stream" ]; then
        "$RISKD" gen --seed 7 --users "$USERS" --days 30 --events "$EVENTS" --out "$stream.tmp"
        mv "$stream.tmp" "$stream"
    fi
    runs=()
    for i in $(seq 1 "$REPLAYS"); do
        log="$OUT/replay-$i.log"
        RISKD_PII_KEY_FILE="$keys" /usr/bin/time -v "$RISKD" replay --input "$stream" --out /dev/null \
            --dead-letters "$DATA/dead-letters.jsonl" 2>"$log"
        grep -E "events/s|Maximum resident|Percent of CPU" "$log"
        runs+=("$log")
    done
    python3 - "$stream" "$EVENTS" "$USERS" "${runs[@]}" >"$OUT/replay.json" <<'PY'
import json, os, re, sys
stream, events, users, logs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
runs = []
for log in logs:
    text = open(log).read()
    m = re.search(r"(\d+) inputs: .* in ([\d.]+)s \((\d+) events/s\)", text)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    cpu = re.search(r"Percent of CPU this job got: (\S+)", text).group(1)
    runs.append({"inputs": int(m.group(1)), "elapsed_s": float(m.group(2)), "rate": float(m.group(3)),
                 "rss_mib": rss / 1024, "cpu": cpu})
print(json.dumps({"events": events, "users": users, "bytes": os.path.getsize(stream), "runs": runs}, indent=2))
PY
fi

if ! skip loadtest; then
    "$RISKD" loadtest --rates "$RATES" --duration "$DURATION" --json "$OUT/loadtest.json" | tee "$OUT/loadtest.md"
    # The same with the client settings traded towards throughput.
    RISKD_KAFKA_LINGER_MS=10 RISKD_KAFKA_FETCH_WAIT_MAX_MS=10 "$RISKD" loadtest --rates "$TPUT_RATES" \
        --duration "$DURATION" --json "$OUT/loadtest-throughput.json" | tee "$OUT/loadtest-throughput.md"
    # Producer linger and consumer fetch wait compared at 10,000 events/s.
    rm -f "$OUT"/loadtest-settings-*.json
    for pair in $SETTINGS; do
        linger="${pair%%:*}" wait="${pair##*:}"
        RISKD_KAFKA_LINGER_MS="$linger" RISKD_KAFKA_FETCH_WAIT_MAX_MS="$wait" "$RISKD" loadtest --rates 10000 \
            --duration "$DURATION" --json "$OUT/loadtest-settings-$linger-$wait.json" | tail -4
    done
fi

python3 - "$load_before" "$EVENTS" "$RATES" "$DURATION" "$SKIP" >"$OUT/meta.json" <<'PY'
import json, os, subprocess, sys, time
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1") or "unknown CPU"
mem = int(open("/proc/meminfo").readline().split()[1]) / 2**20
osname = sh(". /etc/os-release && echo $PRETTY_NAME")
print(json.dumps({
    "cpu": cpu, "cores": os.cpu_count(), "memory": f"{mem:.0f} GiB", "os": osname,
    "rustc": sh("rustc --version"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "commit": sh("git rev-parse --short HEAD") + (" (with local changes)" if sh("git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md'") else ""),
    "load_before": sys.argv[1], "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
    "command": f"BENCH_EVENTS={sys.argv[2]} BENCH_RATES={sys.argv[3]} BENCH_DURATION={sys.argv[4]} scripts/bench.sh"
               + (f" (this run: BENCH_SKIP=\"{sys.argv[5]}\"; those results are from the previous run)" if sys.argv[5] else ""),
}, indent=2))
PY

python3 scripts/bench_tables.py
