#!/usr/bin/python3
"""Times our training step at the three instruction-set tiers side by side and prints a Markdown table.

usage: bench/baselines/tiers.py [--shapes S,M,L] [--threads 1] [--seconds 1] [--rounds 3]

The tiers are the JIT's: AVX-512 (no variable), AVX2 (DOTNET_EnableAVX512=0, an AVX2 laptop or desktop) and 128-bit
(DOTNET_EnableAVX2=0: SSE, the stand-in for ARM64 NEON). For each shape the three run one after the other, --rounds
times (so a burst of load from a neighbour on a shared machine hits one round, not one tier); each round reports
the median of its timed windows (`bench -- steps`), each tier's figure is the median of its rounds' medians, and
"best" is the fastest window of all rounds. Ratios use the medians.
"""
import argparse, datetime, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIERS = [("AVX-512", None), ("AVX2", "DOTNET_EnableAVX512"), ("128-bit", "DOTNET_EnableAVX2")]
SHAPES = {"S": (32, 10, 200), "M": (256, 24, 512), "L": (4096, 32, 1024)}


def run(shape, threads, seconds, var):
    env = dict(os.environ)
    if var:
        env[var] = "0"
    cmd = ["dotnet", "run", "-c", "Release", "--no-build", "--project", "bench/HpBackprop.Bench", "--", "steps",
           "--shapes", shape, "--threads", threads, "--seconds", seconds]
    print("$ " + (var + "=0 " if var else "") + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(l[5:]) for l in out.splitlines() if l.startswith("JSON ")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--seconds", default="1")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["dotnet", "build", "-c", "Release", "bench/HpBackprop.Bench", "-v", "q", "-nologo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    rows = []
    for s in a.shapes.split(","):
        got = {name: [] for name, _ in TIERS}
        for _ in range(a.rounds):
            for name, var in TIERS:
                got[name] += run(s, a.threads, a.seconds, var)
        for t in [int(x) for x in a.threads.split(",")]:
            cells = {}
            for name, _ in TIERS:
                rs = [r for r in got[name] if r["threads"] == t]
                cells[name] = (statistics.median(r["us_median"] for r in rs), min(r["us_min"] for r in rs))
            rows.append((s, t, cells))
    print(f"Tiers side by side, {datetime.date.today().isoformat()} {datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC, "
          f"{os.cpu_count()} cores (the three tiers alternated {a.rounds} times per shape, {a.seconds} s each; median µs per step, best window in brackets)\n")
    print("| shape (n, E, H) | threads | AVX-512 | AVX2 | 128-bit | AVX2 / AVX-512 | 128-bit / AVX-512 |")
    print("|---|---|---|---|---|---|---|")
    for s, t, c in rows:
        n, E, H = SHAPES[s]
        cell = lambda v: f"{v[0]:,.1f} ({v[1]:,.1f})"
        base = c["AVX-512"][0]
        print(f"| {s} ({n}, {E}, {H}) | {t} | {cell(c['AVX-512'])} | {cell(c['AVX2'])} | {cell(c['128-bit'])} | "
              f"{c['AVX2'][0] / base:.2f}× | {c['128-bit'][0] / base:.2f}× |")


if __name__ == "__main__":
    main()
