#!/usr/bin/python3
"""Runs the PyTorch side (torch_steps.py) and our side (`dotnet run -c Release --project
bench/HpBackprop.Bench -- steps`) in one go, shape by shape, and prints a Markdown ratio table.

usage: bench/baselines/side_by_side.py [--shapes S,M,L,deep,mlp] [--threads 1,2] [--seconds 1] [--rounds 3]
                                       [--tier avx512|avx2|128] [--openblas-core SkylakeX|Haswell|Nehalem|auto] [--no-torchsharp]

TorchSharp (0.107, LibTorch 2.10, the .NET peer) is a third side, alternated with the other two in every round:
bench/baselines/torchsharp_bench.sh side (bench/HpBackprop.TorchSharpBench) times the same stack in TorchSharp autograd
with TorchSharp's own BatchNorm1d (LibTorch's fused kernel: the same work as the lecture's Bessel batch norm, which the
PyTorch side writes as a module of operators), in a process that also times HpBackprop; the table's TorchSharp ratio is
against HpBackprop's figure from this script's own runs.
--no-torchsharp leaves it out (a machine where LibTorch 2.10 cannot be had).

--tier runs both sides at one instruction-set tier (S, M, L only): ours with DOTNET_EnableAVX512=0 (avx2) or
DOTNET_EnableAVX2=0 (128: SSE, the stand-in for ARM64 NEON); PyTorch with ATEN_CPU_CAPABILITY=avx512/avx2/default and
OpenBLAS's SkylakeX/Haswell/Nehalem kernels (unless --openblas-core names another), so each side uses the same vector
width a machine of that tier would give it.

OpenBLAS 0.3.21 (Debian's libopenblas0-openmp) does not know newer Intel models (family 6 model
207 here) and falls back to its generic "Prescott" SSE kernels, 4-5x slower than its AVX-512 ones.
So that PyTorch gets the BLAS a tuned install would give it, the PyTorch side runs with
OPENBLAS_CORETYPE=SkylakeX unless --openblas-core auto (OpenBLAS's own detection) or another core
is asked for, or OPENBLAS_CORETYPE is already set. The table header names the core in use.

Times are µs per training step (forward + backward + SGD). The two sides alternate --rounds times
per shape (a burst of load from a neighbour on the shared machine then hits both sides or only one
round); each round reports the median of 15 timed windows, and each side's figure is the median of
its rounds' medians; "best" is the fastest window of all rounds. Ratios use the medians. GFLOP/s counts the six GEMMs only: 6·n·(B·E·H + H·V).

The layer stacks `deep` (the lecture's deeper batch-norm network, n = 32) and `mlp` (a float-feature ReLU MLP,
n = 256) are timed against PyTorch autograd on the same torch.nn.Sequential by stack_side_by_side.py, which this
script runs for them with the same options.
"""
import argparse, datetime, json, os, platform, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SHAPES = {"S": (32, 10, 200), "M": (256, 24, 512), "L": (4096, 32, 1024)}
# tier: (our environment variable, PyTorch's ATEN_CPU_CAPABILITY, OpenBLAS core)
TIERS = {"avx512": (None, "avx512", "SkylakeX"), "avx2": ("DOTNET_EnableAVX512", "avx2", "Haswell"), "128": ("DOTNET_EnableAVX2", "default", "Nehalem")}


def flops(s):
    n, E, H = SHAPES[s]
    return 6.0 * n * (3 * E * H + H * 27)


def json_lines(cmd, env=None):
    shown = "".join(f"{k}={env[k]} " for k in ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "DOTNET_EnableAVX512", "DOTNET_EnableAVX2") if env and k in env)
    print("$ " + shown + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("JSON "):
            line = line[5:]
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def build_torchsharp():
    """Builds TorchSharp's side once; torchsharp_cmd's runs then skip the build (HPB_TS_NO_BUILD)."""
    subprocess.run(["dotnet", "build", "-c", "Release", "bench/HpBackprop.TorchSharpBench", "-v", "q", "-nologo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    os.environ["HPB_TS_NO_BUILD"] = "1"


def torchsharp_cmd(shapes, threads, seconds):
    """TorchSharp's side (bench/baselines/torchsharp_bench.sh side, one round): its JSON rows have side "torchsharp"."""
    return ["bash", os.path.join(HERE, "torchsharp_bench.sh"), "side", "--shapes", shapes, "--threads", threads, "--seconds", seconds, "--rounds", "1"]


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
    ap.add_argument("--seconds", default="1", help="seconds per side, shape and round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate the two sides this many times per shape; each side reports the median of its rounds' medians")
    ap.add_argument("--tier", choices=list(TIERS), default="avx512")
    ap.add_argument("--openblas-core", default=os.environ.get("OPENBLAS_CORETYPE"))
    ap.add_argument("--no-torchsharp", action="store_true", help="leave TorchSharp out")
    a = ap.parse_args()
    our_env_var, aten, default_core = TIERS[a.tier]
    a.openblas_core = a.openblas_core or default_core
    stacks = [s for s in a.shapes.split(",") if s in ("deep", "mlp")]
    a.shapes = ",".join(s for s in a.shapes.split(",") if s not in ("deep", "mlp"))
    if stacks and a.tier != "avx512":
        sys.exit("--tier applies to the shapes S, M and L only")
    if stacks:
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "stack_side_by_side.py"), "--shapes", ",".join(stacks), "--threads", a.threads,
                        "--seconds", a.seconds, "--rounds", str(a.rounds), "--openblas-core", a.openblas_core]
                       + (["--no-torchsharp"] if a.no_torchsharp else []), check=True)
        if not a.shapes:
            return
    torch_env = dict(os.environ)
    if a.openblas_core == "auto":
        torch_env.pop("OPENBLAS_CORETYPE", None)
    else:
        torch_env["OPENBLAS_CORETYPE"] = a.openblas_core
    torch_env["ATEN_CPU_CAPABILITY"] = aten
    our_env = dict(os.environ)
    if our_env_var:
        our_env[our_env_var] = "0"
    subprocess.run(["dotnet", "build", "-c", "Release", "bench/HpBackprop.Bench", "-v", "q", "-nologo"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    if not a.no_torchsharp:
        build_torchsharp()
    ours_cmd = ["dotnet", "run", "-c", "Release", "--no-build", "--project", "bench/HpBackprop.Bench", "--", "steps"]
    torch_cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_steps.py")]
    rows = []
    core = "?"
    def combine(rs):
        # the median of the rounds' medians, and the best window of all rounds
        return {"us_median": statistics.median(r["us_median"] for r in rs), "us_min": min(r["us_min"] for r in rs)} if rs else None

    for s in a.shapes.split(","):
        torch_rows, our_rows, ts_rows = [], [], []
        for _ in range(a.rounds):
            tr = json_lines(torch_cmd + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds], torch_env)
            core = next((r["blas_core"] for r in tr if "blas_core" in r), core)
            torch_rows += [r for r in tr if "shape" in r]
            our_rows += json_lines(ours_cmd + ["--shapes", s, "--threads", a.threads, "--seconds", a.seconds], our_env)
            if not a.no_torchsharp:
                ts_rows += [r for r in json_lines(torchsharp_cmd(s, a.threads, a.seconds), dict(our_env, HPB_TS_NO_BUILD="1")) if r["side"] == "torchsharp"]
        for t in [int(x) for x in a.threads.split(",")]:
            ours = combine([r for r in our_rows if r["threads"] == t])
            tm = {m: combine([r for r in torch_rows if r["threads"] == t and r["mode"] == m]) for m in ("manual", "autograd")}
            tsr = combine([r for r in ts_rows if r["threads"] == t and r["mode"] == "autograd"])
            rows.append((s, t, ours, tm["manual"], tm["autograd"], tsr))
    print(f"Side by side, {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} cores "
          f"(shared machine: one run, the sides alternated {a.rounds} times per shape, {a.seconds} s each); "
          f"PyTorch on OpenBLAS with its {core} kernels; tier {a.tier} (ours: {our_env_var + '=0' if our_env_var else 'AVX-512'}, "
          f"PyTorch: ATEN_CPU_CAPABILITY={aten})\n")
    print("| shape (n, E, H) | threads | HpBackprop µs/step (best) | GFLOP/s | PyTorch manual µs (best) | PyTorch autograd µs (best) | TorchSharp autograd µs (best) | × vs manual | × vs autograd | × vs TorchSharp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s, t, o, m, g, ts in rows:
        n, E, H = SHAPES[s]
        om = o["us_median"]
        cell = lambda r: f"{r['us_median']:,.1f} ({r['us_min']:,.1f})" if r else "–"
        ratio = lambda r: f"{r['us_median'] / om:.1f}×" if r else "–"
        print(f"| {s} ({n}, {E}, {H}) | {t} | {om:,.1f} ({o['us_min']:,.1f}) | {flops(s) / om / 1e3:.1f} | {cell(m)} | {cell(g)} | {cell(ts)} | {ratio(m)} | {ratio(g)} | {ratio(ts)} |")


if __name__ == "__main__":
    main()
