#!/usr/bin/python3
"""Layer stacks side by side: HpBackprop's compiled network (`bench -- stack`) against PyTorch autograd
on the same stack (torch_stacks.py), alternated --rounds times per shape, one Markdown table.

usage: bench/baselines/stack_side_by_side.py [--shapes deep,mlp] [--threads 1] [--seconds 1] [--rounds 3] [--openblas-core SkylakeX|auto]
                                             [--no-torchsharp]

Shapes (see torch_stacks.py): deep = the lecture's deeper batch-norm network at n = 32; mlp = a
float-feature ReLU MLP 64-256-256-10 at n = 256; S, M, L = the makemore MLP. PyTorch runs with
OPENBLAS_CORETYPE=SkylakeX unless told otherwise (see side_by_side.py for why). Ratios use the medians.
TorchSharp autograd on the same stack (bench/baselines/torchsharp_bench.sh) is a third side in every round unless --no-torchsharp.
"""
import argparse, datetime, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from side_by_side import ROOT, build_torchsharp, cpu_name, json_lines, torchsharp_cmd  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="deep,mlp")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--seconds", default="1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--openblas-core", default=os.environ.get("OPENBLAS_CORETYPE", "SkylakeX"))
    ap.add_argument("--no-torchsharp", action="store_true", help="leave TorchSharp out")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.openblas_core == "auto":
        env.pop("OPENBLAS_CORETYPE", None)
    else:
        env["OPENBLAS_CORETYPE"] = a.openblas_core
    subprocess.run(["dotnet", "build", "-c", "Release", "bench/HpBackprop.Bench", "-v", "q", "-nologo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    if not a.no_torchsharp:
        build_torchsharp()
    ours = ["dotnet", "run", "-c", "Release", "--no-build", "--project", "bench/HpBackprop.Bench", "--", "stack", "--rounds", "1"]
    theirs = ["/usr/bin/python3", os.path.join(HERE, "torch_stacks.py")]
    core, rows = "?", []
    for s in a.shapes.split(","):
        o, t, ts = [], [], []
        for _ in range(a.rounds):
            tr = json_lines(theirs + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds], env)
            core = next((r["blas_core"] for r in tr if "blas_core" in r), core)
            t += [r for r in tr if "shape" in r]
            o += json_lines(ours + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds])
            if not a.no_torchsharp:
                ts += [r for r in json_lines(torchsharp_cmd(s, a.threads, a.seconds)) if r["side"] == "torchsharp" and r["mode"] == "autograd"]
        for th in [int(x) for x in a.threads.split(",")]:
            pick = lambda rs: {"us_median": statistics.median(r["us_median"] for r in rs if r["threads"] == th),
                               "us_min": min(r["us_min"] for r in rs if r["threads"] == th)} if any(r["threads"] == th for r in rs) else None
            rows.append((s, th, pick(o), pick(t), pick(ts)))
    print(f"Stacks side by side, {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores (shared machine: one run, "
          f"the sides alternated {a.rounds} times per shape, {a.seconds} s each); PyTorch on OpenBLAS with its {core} kernels\n")
    print("| shape | threads | HpBackprop µs/step (best) | PyTorch autograd µs/step (best) | TorchSharp autograd µs/step (best) | × vs PyTorch | × vs TorchSharp |")
    print("|---|---|---|---|---|---|---|")
    cell = lambda r: f"{r['us_median']:,.1f} ({r['us_min']:,.1f})" if r else "–"
    for s, th, ou, to, ts in rows:
        ratio = lambda r: f"{r['us_median'] / ou['us_median']:.1f}×" if r else "–"
        print(f"| {s} | {th} | {cell(ou)} | {cell(to)} | {cell(ts)} | {ratio(to)} | {ratio(ts)} |")


if __name__ == "__main__":
    main()
