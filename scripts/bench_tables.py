#!/usr/bin/env python3
"""Rewrites the generated tables of BENCHMARKS.md from the results that
scripts/bench.sh leaves in benches/out/ and target/criterion/.

Each table sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`;
everything outside those markers is left as written.
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benches", "out")
CRITERION = os.path.join(ROOT, "target", "criterion")


def load(name):
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def us(ns):
    return f"{ns / 1000:.2f} us"


def criterion(bench_id):
    path = os.path.join(CRITERION, bench_id.replace("/", "_"), "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        e = json.load(f)
    return e["median"]["point_estimate"], e["mean"]["point_estimate"]


def machine(meta):
    return "\n".join(
        [
            f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory']}, {meta['os']}",
            f"- Toolchain: {meta['rustc']}, release profile",
            f"- Date: {meta['date']}; commit `{meta['commit']}`",
            f"- Load average before / after the suite: {meta['load_before']} / {meta['load_after']}"
            " (the suite itself loads both cores; a high figure before it means other work shared the machine)",
            f"- Command: `{meta['command']}`",
        ]
    )


STAGES = [
    ("stages/decode_validate", "decode + validate (generated event mix)"),
    ("stages/features_update", "feature update + read (13 features, stream order)"),
    ("rules/100_rules_one_application", "rule evaluation (100 rules, one application)"),
    ("stages/scorecard_no_reasons", "scorecard, A card (200 trees), no reason codes"),
    ("stages/scorecard_3_reasons", "scorecard, A card, 3 reason codes"),
    ("stages/decision", "whole decision: decode -> features -> scorecard -> rules -> encode"),
]


def stages_table():
    rows = ["| stage | criterion median | criterion mean |", "|---|---|---|"]
    for bench_id, what in STAGES:
        r = criterion(bench_id)
        if r is None:
            rows.append(f"| {what} | not run | |")
        else:
            rows.append(f"| {what} | **{us(r[0])}** | {us(r[1])} |")
    return "\n".join(rows)


def latency_table(lat):
    if lat is None:
        return "_not run_"
    rows = [
        f"{lat['events']} generated events ({lat['applications']} loan applications), one thread, every call timed on its own.",
        "",
        "| stage | samples | p50 | p99 | p99.9 | max | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in lat["rows"]:
        rows.append(
            f"| `{r['stage']}`: {r['what']} | {r['samples']} | {r['p50_us']:.2f} us | {r['p99_us']:.2f} us"
            f" | {r['p999_us']:.2f} us | {r['max_us']:.1f} us | {r['mean_us']:.2f} us |"
        )
    return "\n".join(rows)


def replay_table(rep):
    if rep is None:
        return "_not run_"
    rows = [
        f"Stream: {rep['events']} generated events ({rep['bytes'] / 2**20:.0f} MiB, seed 7, {rep['users']} users, 30 days).",
        "",
        "| run | inputs | elapsed | events/s | CPU (of 200%) | CPU time per million events | peak RSS | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rep["runs"], 1):
        cpu_s = r["elapsed_s"] * float(r["cpu"].rstrip("%")) / 100
        rows.append(
            f"| {i} | {r['inputs']} | {r['elapsed_s']:.1f} s | **{r['rate']:.0f}** | {r['cpu']} | {cpu_s / r['inputs'] * 1e6:.2f} s"
            f" | {r['rss_mib']:.0f} MiB | >= 150,000 |"
        )
    rows += [
        "",
        "CPU below 200% means the replay did not get both cores (other work on the machine) or could not use them;"
        " CPU time per million events does not depend on that, and two free cores bound the rate at"
        " 2,000,000 / (CPU seconds per million events) events/s.",
    ]
    return "\n".join(rows)


def loadtest_tables(lt):
    if lt is None:
        return "_not run_"
    head = (
        f"fetch.wait.max.ms = {lt['fetch_wait_max_ms']}, linger.ms = {lt['linger_ms']}, "
        f"{lt['partitions']} partition(s), {lt['duration_s']} s measured after {lt['warmup_s']} s warm-up per rate and worker."
    )
    rows = [
        head,
        "",
        "| worker | target/s | achieved/s | p50 | p99 | p99.9 | max | one hop p50 / p99 | lost | dup | dead letters | worker CPU | worker peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in lt["runs"]:
        e, h = r["end_to_end"], r["one_hop"]
        by[(r["target_rate"], r["worker"])] = r
        sat = " (saturated)" if r["saturated"] else ""
        rows.append(
            f"| {r['worker']}{sat} | {r['target_rate']} | {r['achieved_rate']:.0f} | {e['p50_ms']:.2f} ms | {e['p99_ms']:.2f} ms"
            f" | {e['p999_ms']:.2f} ms | {e['max_ms']:.2f} ms | {h['p50_ms']:.2f} / {h['p99_ms']:.2f} ms | {r['lost']} | {r['duplicates']}"
            f" | {r['dead_letters']} | {r['cpu_percent']:.0f}% | {r['peak_rss_mib']:.0f} MiB |"
        )
    rows += [
        "",
        "Engine latency added over the pass-through (engine minus pass-through, same rate, same run):",
        "",
        "| target/s | p50 | p99 | p99.9 |",
        "|---|---|---|---|",
    ]
    for rate in sorted({r["target_rate"] for r in lt["runs"]}):
        p, e = by.get((rate, "pass-through")), by.get((rate, "engine"))
        if p and e:
            d = lambda k: e["end_to_end"][k] - p["end_to_end"][k]  # noqa: E731
            rows.append(f"| {rate} | {d('p50_ms'):+.2f} ms | {d('p99_ms'):+.2f} ms | {d('p999_ms'):+.2f} ms |")
    return "\n".join(rows)


def settings_table():
    runs = []
    for name in sorted(os.listdir(OUT)) if os.path.isdir(OUT) else []:
        if name.startswith("loadtest-settings-") and name.endswith(".json"):
            runs.append(load(name))
    if not runs:
        return "_not run_"
    runs.sort(key=lambda lt: (lt["linger_ms"], lt["fetch_wait_max_ms"]))
    rows = [
        "| linger.ms | fetch.wait.max.ms | one hop p50 / p99 | pass-through p50 / p99 | engine p50 / p99 / p99.9 | engine added p50 / p99 / p99.9 | CPU pass-through / engine | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lt in runs:
        by = {r["worker"]: r for r in lt["runs"] if r["target_rate"] == 10000}
        p, e = by.get("pass-through"), by.get("engine")
        if not (p and e):
            continue
        pe, ee = p["end_to_end"], e["end_to_end"]
        d = lambda k: ee[k] - pe[k]  # noqa: E731
        rows.append(
            f"| {lt['linger_ms']} | {lt['fetch_wait_max_ms']} | {p['one_hop']['p50_ms']:.1f} / {p['one_hop']['p99_ms']:.1f} ms"
            f" | {pe['p50_ms']:.1f} / {pe['p99_ms']:.1f} ms | {ee['p50_ms']:.1f} / {ee['p99_ms']:.1f} / {ee['p999_ms']:.1f} ms"
            f" | {d('p50_ms'):+.2f} / {d('p99_ms'):+.2f} / {d('p999_ms'):+.2f} ms | {p['cpu_percent']:.0f}% / {e['cpu_percent']:.0f}%"
            f" | {p['lost'] + e['lost']} |"
        )
    return "\n".join(rows)


def feature_state_table(fs):
    if fs is None:
        return "_not run_"
    kinds = ", ".join(f"{k} {n:,}" for k, n in fs["entities_by_kind"].items())
    rows = [
        "| measurement | value | target |",
        "|---|---|---|",
        f"| entities held | {fs['entities']:,} ({kinds}) | — |",
        f"| update + read, 30 features, per event: p50 | {fs['p50_us']:.2f} us | < 2 us |",
        f"| p99 / p99.9 / max | {fs['p99_us']:.2f} / {fs['p999_us']:.2f} / {fs['max_us']:.1f} us | — |",
        f"| populating ({fs['populate_events']:,} events) | {fs['populate_events_per_s']:,.0f} events/s | — |",
    ]
    if "growth_max_us" in fs:
        rows.append(
            f"| entity tables growing while populating: the {fs['growth_events']} updates during which a growth"
            f" phase began or ended, p50 / max | {fs.get('growth_p50_us', 0):,.1f} / {fs['growth_max_us']:,.0f} us | — |"
        )
    if "shrink_max_us" in fs:
        rows.append(
            f"| expiry wave (31 days on, 1,000 users alone): address table {fs['wave_ip_slots_before']:,} to"
            f" {fs['wave_ip_slots_after']:,} slots; the {fs['shrink_events']} updates during which a halving"
            f" phase began or ended, p50 / max | {fs['shrink_p50_us']:,.1f} / {fs['shrink_max_us']:,.0f} us | — |"
        )
    rows += [
        f"| state memory | {fs['state_mib']:,.0f} MiB, {fs['mib_per_million_entities']:,.0f} MiB per million entities | — |",
    ]
    if "capture_events" in fs:
        rows += [
            f"| whole snapshot ({fs['snapshot_mib']:,.0f} MiB), encoded at once | {fs['snapshot_ms']:,.0f} ms | — |",
            f"| a checkpoint taken between events: update + 16 entities per event, p50 / p99 / p99.9 / max"
            f" | {fs['capture_p50_us']:.2f} / {fs['capture_p99_us']:.2f} / {fs['capture_p999_us']:.2f} / {fs['capture_max_us']:.1f} us"
            f" over {fs['capture_events']:,} events | — |",
        ]
    return "\n".join(rows)


def targets_table(lat, rep, lt, fs=None):
    def lat_row(name):
        if lat is None:
            return None
        return next((r for r in lat["rows"] if r["stage"] == name), None)

    d = lat_row("decision")
    da = lat_row("decision_applications")
    rows = ["| target (issue) | measured | met |", "|---|---|---|"]
    if d:
        rows.append(
            f"| in-process decision median < 15 us | {d['p50_us']:.2f} us (all events); {da['p50_us']:.2f} us (loan applications) | {'yes' if d['p50_us'] < 15 else 'no'} (all events) |"
        )
        rows.append(
            f"| in-process decision p99 < 30 us | {d['p99_us']:.2f} us (all events); {da['p99_us']:.2f} us (loan applications) | {'yes' if d['p99_us'] < 30 else 'no'} |"
        )
    if fs:
        rows.append(
            f"| feature update, 30 features over {fs['entities']:,} entities: median < 2 us | {fs['p50_us']:.2f} us | {'yes' if fs['p50_us'] < 2 else 'no'} |"
        )
    if rep:
        best = max(rep["runs"], key=lambda r: r["rate"])
        rows.append(
            f"| replay >= 150,000 events/s on 2 cores | {best['rate']:.0f} events/s (best of {len(rep['runs'])}, at {best['cpu']} CPU of 200%)"
            f" | {'yes' if best['rate'] >= 150000 else 'no'} |"
        )
    if lt:
        runs = lt["runs"]
        lost = sum(r["lost"] for r in runs)
        rows.append(f"| zero loss at every rate | {lost} lost over {len(runs)} runs | {'yes' if lost == 0 else 'no'} |")
        p = next((r for r in runs if r["target_rate"] == 10000 and r["worker"] == "pass-through"), None)
        e = next((r for r in runs if r["target_rate"] == 10000 and r["worker"] == "engine"), None)
        if p and e:
            added = e["end_to_end"]["p99_ms"] - p["end_to_end"]["p99_ms"]
            rows.append(
                f"| 10,000/s through the broker: engine p99 - pass-through p99 < 1 ms | {added:+.2f} ms (engine p99 {e['end_to_end']['p99_ms']:.2f} ms,"
                f" pass-through {p['end_to_end']['p99_ms']:.2f} ms, one hop {p['one_hop']['p99_ms']:.2f} ms) | {'yes' if added < 1 else 'no'} |"
            )
        else:
            rows.append("| 10,000/s through the broker | not reached in this run | no |")
    return "\n".join(rows)


def main():
    meta = load("meta.json")
    lat, rep, lt = load("latency.json"), load("replay.json"), load("loadtest.json")
    fs = load("feature_state.json")
    lt_tput = load("loadtest-throughput.json")
    blocks = {
        "machine": machine(meta) if meta else "_not run_",
        "targets": targets_table(lat, rep, lt, fs),
        "feature_state": feature_state_table(fs),
        "stages": stages_table(),
        "latency": latency_table(lat),
        "replay": replay_table(rep),
        "loadtest": loadtest_tables(lt),
        "loadtest_throughput": loadtest_tables(lt_tput),
        "loadtest_settings": settings_table(),
    }
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(text):
            sys.exit(f"BENCHMARKS.md has no generated:{name} block")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    with open(path, "w") as f:
        f.write(text)
    print(f"rewrote the tables in {path}")


if __name__ == "__main__":
    main()
