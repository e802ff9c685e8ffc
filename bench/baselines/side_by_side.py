#!/usr/bin/python3
"""Runs the PyTorch side (torch_steps.py) and our side (`dotnet run -c Release --project
bench/HpBackprop.Bench -- steps`) in one go, shape by shape, and prints a Markdown ratio table.

usage: bench/baselines/side_by_side.py [--shapes S,M,L] [--threads 1,2] [--seconds 2]

Times are µs per training step (forward + backward + SGD); "median" is the median of 15 timed
windows, "best" the fastest window (the machine is shared, so both are shown and the ratio uses
the median of each side). GFLOP/s counts the six GEMMs only: 6·n·(B·E·H + H·V).
"""
import argparse, datetime, json, os, platform, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SHAPES = {"S": (32, 10, 200), "M": (256, 24, 512), "L": (4096, 32, 1024)}


def flops(s):
    n, E, H = SHAPES[s]
    return 6.0 * n * (3 * E * H + H * 27)


def json_lines(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("JSON "):
            line = line[5:]
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", default="2")
    a = ap.parse_args()
    subprocess.run(["dotnet", "build", "-c", "Release", "bench/HpBackprop.Bench", "-v", "q", "-nologo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    ours_cmd = ["dotnet", "run", "-c", "Release", "--no-build", "--project", "bench/HpBackprop.Bench", "--", "steps"]
    torch_cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_steps.py")]
    rows = []
    for s in a.shapes.split(","):
        torch_rows = json_lines(torch_cmd + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds])
        our_rows = json_lines(ours_cmd + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds])
        for t in [int(x) for x in a.threads.split(",")]:
            ours = next(r for r in our_rows if r["threads"] == t)
            tm = {r["mode"]: r for r in torch_rows if r["threads"] == t}
            rows.append((s, t, ours, tm.get("manual"), tm.get("autograd")))
    print(f"Side by side, {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores "
          f"(shared machine: one run, both sides interleaved shape by shape)\n")
    print("| shape (n, E, H) | threads | HpBackprop µs/step (best) | GFLOP/s | PyTorch manual µs (best) | PyTorch autograd µs (best) | × vs manual | × vs autograd |")
    print("|---|---|---|---|---|---|---|---|")
    for s, t, o, m, g in rows:
        n, E, H = SHAPES[s]
        om = o["us_median"]
        cell = lambda r: f"{r['us_median']:,.1f} ({r['us_min']:,.1f})" if r else "–"
        ratio = lambda r: f"{r['us_median'] / om:.1f}×" if r else "–"
        print(f"| {s} ({n}, {E}, {H}) | {t} | {om:,.1f} ({o['us_min']:,.1f}) | {flops(s) / om / 1e3:.1f} | {cell(m)} | {cell(g)} | {ratio(m)} | {ratio(g)} |")


if __name__ == "__main__":
    main()
