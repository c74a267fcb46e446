#!/usr/bin/env python3
"""Marginal instruction cost per operation, by function, from two callgrind
profiles of the same benchmark run with a small and a large problem size:
(Ir_large - Ir_small) / (ops_large - ops_small). Setup and teardown cancel out.

usage: callgrind_diff.py SMALL.out LARGE.out DELTA_OPS [TOP]
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$")


def profile(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    total, funcs = 0, {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        name = m.group(2)
        if name.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        name = re.sub(r"^\S*?:", "", name, count=1) if name.startswith(("???:", ".", "/")) else name
        funcs[name] = funcs.get(name, 0) + ir
    return total, funcs


# Calls counted per operation (substring of the demangled name, or "=name"
# for an exact match -> label).
COUNTED = [("=malloc", "malloc"), ("operator new(", "operator new"), ("tbb::detail::r1::enqueue(", "tbb enqueue"),
           ("notify_by_address_one", "tbb notify_by_address_one"), ("pthread_mutex_lock", "pthread_mutex_lock")]
NAMED = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")


def calls(path):
    """Total calls to each COUNTED function, summed over all callers."""
    names, total, current = {}, {}, None
    with open(path) as f:
        for line in f:
            if line.startswith(("cfn=", "fn=")):
                m = NAMED.match(line.rstrip("\n"))
                if not m:
                    continue
                fid, name = m.group(1), m.group(2)
                if name:
                    names[fid] = name
                current = names.get(fid, "") if line.startswith("cfn=") else None
            elif line.startswith("calls=") and current is not None:
                n = int(line.split()[0][6:])
                for key, label in COUNTED:
                    hit = current == key[1:] if key.startswith("=") else key in current
                    if hit:
                        total[label] = total.get(label, 0) + n
                        break
    return total


HEAP = re.compile(r"^(malloc|free|cfree|_int_malloc|_int_free|malloc_consolidate|unlink_chunk|tcache|"
                  r"operator new|operator delete|alloc_perturb|__libc_malloc|__libc_free)")


def group(name):
    """Which component an instruction count belongs to."""
    bare = re.sub(r"^\?\?\?:", "", name)
    if HEAP.match(bare):
        return "heap (malloc/free)"
    if "libtbb" in name or "tbb::detail" in name or "TbbScheduler" in name:
        return "oneTBB (incl. troupe's TBB glue)"
    if "libcaf" in name or bare.startswith("caf::"):
        return "CAF library"
    if "libstdc++" in name or "__cxxabiv1" in name or "__dynamic_cast" in name:
        return "libstdc++ (RTTI, hashing, ...)"
    if "libc.so" in name or "ld-linux" in name:
        return "libc other (TLS, mutex, string)"
    return "benchmark binary (troupe runtime, inlined templates)"


def short(name, width=110):
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    name = name.replace("troupe::detail::", "").replace("tbb::detail::", "tbb::")
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    small, large, ops = sys.argv[1], sys.argv[2], float(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    t0, f0 = profile(small)
    t1, f1 = profile(large)
    print(f"instructions per operation: {(t1 - t0) / ops:,.0f}")
    rows = sorted(((f1.get(k, 0) - f0.get(k, 0)) / ops, k) for k in set(f0) | set(f1))
    rows.reverse()
    groups = {}
    for per_op, name in rows:
        g = group(name)
        groups[g] = groups.get(g, 0) + per_op
    print("instructions per operation by component: " +
          ", ".join(f"{g} {v:,.0f}" for g, v in sorted(groups.items(), key=lambda x: -x[1]) if v >= 1))
    c0, c1 = calls(small), calls(large)
    counted = ", ".join(f"{label} {(c1.get(label, 0) - c0.get(label, 0)) / ops:.2f}"
                        for _, label in COUNTED if (c1.get(label, 0) - c0.get(label, 0)) / ops >= 0.01)
    print(f"calls per operation: {counted}")
    print("instructions per operation by function (self cost):")
    for per_op, name in rows[:top]:
        print(f"  {per_op:9,.0f}  {short(name)}")


if __name__ == "__main__":
    main()
