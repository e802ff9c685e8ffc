#!/usr/bin/python3
"""Two builds of the benchmark tool, alternated, on the same shapes: is one slower?

Usage: before_after.py BEFORE_DIR AFTER_DIR [--shapes S,M,L,deep] [--threads 1]
                       [--seconds 2] [--rounds 3] [--repeats 5]

BEFORE_DIR and AFTER_DIR each hold a build of bench/HpBackprop.Bench (the output
folder of `dotnet build -c Release bench/HpBackprop.Bench -o DIR`, e.g. of an older
commit checked out with `git worktree add`). For every shape and thread count the
two are run one after the other `--repeats` times (before, after, before, after, ...)
with `stack --shapes SHAPE --threads T --seconds S --rounds R`, so both see the same
machine; the table gives each side's median over the repeats of its per-run median
µs per training step, the best run, and the ratio after/before of the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run(folder, shape, threads, seconds, rounds):
    dll = os.path.join(folder, "HpBackprop.Bench.dll")
    out = subprocess.run(["dotnet", dll, "stack", "--shapes", shape, "--threads", str(threads),
                          "--seconds", str(seconds), "--rounds", str(rounds)],
                         check=True, capture_output=True, text=True).stdout
    rows = [json.loads(l[5:]) for l in out.splitlines() if l.startswith("JSON ")]
    return rows[0]["us_median"], rows[0]["us_min"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--shapes", default="S,M,L,deep")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print("| shape | threads | before µs/step (median, best) | after µs/step (median, best) | after/before |")
    print("|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        for t in (int(x) for x in a.threads.split(",")):
            b, f = [], []
            for _ in range(a.repeats):
                b.append(run(a.before, shape, t, a.seconds, a.rounds))
                f.append(run(a.after, shape, t, a.seconds, a.rounds))
            bm, fm = statistics.median(x[0] for x in b), statistics.median(x[0] for x in f)
            bb, fb = min(x[1] for x in b), min(x[1] for x in f)
            print(f"| {shape} | {t} | {bm:,.1f} ({bb:,.1f}) | {fm:,.1f} ({fb:,.1f}) | {fm / bm:.3f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
