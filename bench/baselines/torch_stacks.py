#!/usr/bin/python3
"""PyTorch autograd training steps of layer stacks, the baseline for `bench -- stack`.

usage: bench/baselines/torch_stacks.py [--shapes deep,mlp] [--threads 1] [--seconds 2]

Each shape is the same stack and batch size as HpBackprop's `bench -- stack` (StackBench.cs):
  deep  the lecture's deeper network, embedding:27x10,flatten, five linear:…x100:nobias,batchnorm:100,tanh
        blocks, then linear:100x27:nobias,batchnorm:27; cross-entropy on random ids; n = 32
  mlp   linear:64x256,relu,linear:256x256,relu,linear:256x10; cross-entropy on random features; n = 256
  S, M, L  the makemore MLP at the issue's three shapes
built as the equivalent torch.nn.Sequential (tests/reference/stacks_lib.py; the Bessel batch norm is
a module of its own), float32, one training step = forward, F.cross_entropy, backward, SGD step
(torch.optim.SGD, lr 0.01), zero_grad. Median and best of 15 timed windows after warm-up, µs per step,
one JSON line per row.
"""
import argparse, json, os, sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
from stacks_lib import build_sequential, parse_stack  # noqa: E402
sys.path.insert(0, HERE)
from torch_steps import openblas_core, time_calls  # noqa: E402

DEEP = ("embedding:27x10,flatten," + ",".join(
    f"linear:{30 if i == 0 else 100}x100:nobias,batchnorm:100,tanh" for i in range(5)) + ",linear:100x27:nobias,batchnorm:27")
MLP = "linear:64x256,relu,linear:256x256,relu,linear:256x10"


def makemore(E, H):
    return f"embedding:27x{E},flatten,linear:{3 * E}x{H},batchnorm:{H},tanh,linear:{H}x27"


SHAPES = {"deep": (DEEP, 32), "mlp": (MLP, 256), "S": (makemore(10, 200), 32), "M": (makemore(24, 512), 256),
          "L": (makemore(32, 1024), 4096)}


def bench(shape, threads, seconds):
    torch.set_num_threads(threads)
    text, n = SHAPES[shape]
    specs = parse_stack(text)
    torch.manual_seed(42)
    model = build_sequential(specs).float().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    k = specs[-1]["OUT"] if specs[-1]["kind"] == "linear" else specs[-1]["F"]
    if specs[0]["kind"] == "embedding":
        xs = [torch.randint(0, specs[0]["V"], (n, 3)) for _ in range(16)]
    else:
        xs = [torch.randn(n, specs[0]["IN"]) for _ in range(16)]
    ys = [torch.randint(0, k, (n,)) for _ in range(16)]
    i = 0

    def one():
        nonlocal i
        out = model(xs[i & 15])
        loss = F.cross_entropy(out, ys[i & 15])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        i += 1

    return time_calls(one, seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="deep,mlp")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    print(json.dumps({"blas_core": openblas_core()}))
    for s in a.shapes.split(","):
        for t in [int(x) for x in a.threads.split(",")]:
            med, best = bench(s, t, a.seconds)
            print(json.dumps({"side": "torch", "shape": s, "threads": t, "mode": "autograd", "us_median": med, "us_min": best}))


if __name__ == "__main__":
    main()
