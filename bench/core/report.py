#!/usr/bin/env python3
"""Turns the JSON lines printed by the bench/core executables into
bench/results/core.json (every figure of every repetition, plus the machine)
and bench/results/core.md (the comparison table).

usage: report.py RAW.jsonl MACHINE.json OUT.json OUT.md
"""
import json
import sys

# Rows of the table: (bench, metric, label). The first CAF entry is the
# reference for the speed-up column; any other CAF configuration present in
# the data gets its own column.
ROWS = [
    ("pingpong_tell", "round_trips_per_s", "1. ping-pong, tell both ways"),
    ("pingpong_ask", "round_trips_per_s", "1. ping-pong, ask / request"),
    ("fanout_ask", "round_ms", "2. fan-out/fan-in 10k, ask"),
    ("fanout_ask", "rounds_per_s", "2. fan-out/fan-in 10k, ask"),
    ("fanout_tell", "round_ms", "2. fan-out/fan-in 10k, tell back"),
    ("fanout_tell", "rounds_per_s", "2. fan-out/fan-in 10k, tell back"),
    ("spawn", "total_s", "3. spawn + stop 1M actors"),
    ("spawn", "spawn_s", "3. spawn + stop 1M actors"),
    ("spawn", "stop_s", "3. spawn + stop 1M actors"),
    ("spawn", "peak_bytes_per_actor", "3. spawn + stop 1M actors"),
    ("spawn", "rss_bytes_per_actor", "3. spawn + stop 1M actors"),
    ("fanin", "msgs_per_s", "4. 4 senders x 1M msgs -> 1 receiver"),
]
UNITS = {
    "round_trips_per_s": ("round trips/s", True),
    "round_ms": ("ms per round", False),
    "rounds_per_s": ("rounds/s", True),
    "total_s": ("s, total", False),
    "spawn_s": ("s, spawn phase", False),
    "stop_s": ("s, stop phase", False),
    "peak_bytes_per_actor": ("peak RSS bytes/actor", False),
    "rss_bytes_per_actor": ("RSS bytes/actor after spawn", False),
    "msgs_per_s": ("messages/s", True),
}


def fmt(v):
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f} M"
    if a >= 1e4:
        return f"{v / 1e3:.0f} k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def cell(m):
    if not m or m.get("median") is None:
        return "n/a"
    return f"**{fmt(m['median'])}** ({fmt(m['min'])}–{fmt(m['max'])})"


def advantage(t, c, higher):
    """How many times better troupe is than the other runtime (>1: troupe wins)."""
    if not t or not c or not t.get("median") or not c.get("median"):
        return None
    return t["median"] / c["median"] if higher else c["median"] / t["median"]


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def merge(lines):
    """One record per (bench, runtime): the repetitions of several invocations
    (run_core.sh interleaves the runtimes, one repetition per invocation)."""
    merged = {}
    for r in lines:
        key = (r["bench"], r["runtime"])
        if key not in merged:
            merged[key] = {k: r[k] for k in ("bench", "runtime", "threads", "params")}
            merged[key]["metrics"] = {}
        for name, m in r["metrics"].items():
            dst = merged[key]["metrics"].setdefault(name, {"unit": m["unit"], "better": m["better"], "values": []})
            dst["values"].extend(x for x in m["values"] if x is not None)
    for r in merged.values():
        for m in r["metrics"].values():
            v = m["values"]
            m["median"] = median(v) if v else None
            m["min"] = min(v) if v else None
            m["max"] = max(v) if v else None
        r["reps"] = max((len(m["values"]) for m in r["metrics"].values()), default=0)
    return list(merged.values())


def main():
    raw, machine_path, out_json, out_md = sys.argv[1:5]
    lines = []
    with open(raw) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                lines.append(json.loads(line))
    records = merge(lines)
    with open(machine_path) as f:
        machine = json.load(f)

    runtimes = []
    for r in records:
        if r["runtime"] not in runtimes:
            runtimes.append(r["runtime"])
    others = [r for r in runtimes if r != "troupe"]
    by = {(r["bench"], r["runtime"]): r for r in records}

    comparisons = []
    for bench, metric, _ in ROWS:
        unit, higher = UNITS[metric]
        t = by.get((bench, "troupe"), {}).get("metrics", {}).get(metric)
        entry = {"bench": bench, "metric": metric, "unit": unit,
                 "better": "higher" if higher else "lower",
                 "troupe": t and {k: t[k] for k in ("median", "min", "max")}}
        for o in others:
            c = by.get((bench, o), {}).get("metrics", {}).get(metric)
            entry[o] = c and {k: c[k] for k in ("median", "min", "max")}
            adv = advantage(t, c, higher)
            entry[f"troupe_advantage_vs_{o}"] = adv
        comparisons.append(entry)

    noise = [x for r in records for x in r["metrics"].get("others_cpus", {}).get("values", [])]
    busy = sum(1 for x in noise if x >= 0.25)
    machine["others_cpus_median"] = median(noise) if noise else None
    machine["reps_disturbed"] = f"{busy}/{len(noise)}"
    lines = []
    lines.append(f"Worker threads: {machine.get('threads')} for every runtime; "
                 f"{machine.get('reps')} repetitions, each in a fresh process; "
                 "**median** (min–max). "
                 "\"× troupe\" = how many times better troupe is "
                 "(>1: troupe ahead; goal of issue 2: ≥ 1.5).")
    lines.append("")
    head = ["Benchmark", "Figure", "troupe"]
    for o in others:
        head += [o, f"× troupe vs {o}"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
    for (bench, metric, label), entry in zip(ROWS, comparisons):
        unit, higher = UNITS[metric]
        arrow = "↑" if higher else "↓"
        row = [label, f"{unit} {arrow}", cell(entry["troupe"])]
        for o in others:
            row.append(cell(entry[o]))
            adv = entry[f"troupe_advantage_vs_{o}"]
            if adv is None:
                row.append("n/a")
            else:
                mark = " ✓" if adv >= 1.5 else (" ✗" if adv < 1.0 else " ~")
                row.append(f"{adv:.2f}×{mark}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("✓ troupe ≥ 1.5× better, ~ better but < 1.5×, ✗ worse. ↑ higher is better, ↓ lower is better. "
                 "troupe: default Config (batch 64, compact pinning). caf: CAF defaults (work-stealing "
                 "scheduler). caf-sharing: CAF with `scheduler.policy = sharing` (its other scheduler), "
                 "shown because the default one does badly on this 2-core machine.")
    lines.append("")
    lines.append(f"Machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, {machine.get('os')}, "
                 f"kernel {machine.get('kernel')}; {machine.get('compiler')}; oneTBB {machine.get('tbb')}; "
                 f"CAF {machine.get('caf')}; troupe {machine.get('commit')}; {machine.get('date')}; "
                 f"load average before/after: {machine.get('loadavg_before')} / {machine.get('loadavg_after')}; "
                 f"repetitions during which other processes kept ≥ 0.25 CPU busy: {machine['reps_disturbed']} "
                 f"(median {machine['others_cpus_median'] or 0:.2f} CPU).")
    with open(out_json, "w") as f:
        json.dump({"machine": machine, "comparisons": comparisons, "records": records}, f, indent=1)
        f.write("\n")
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
