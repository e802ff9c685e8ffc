#!/usr/bin/env python3
"""The PyTorch side of the GPU kit's step times: the same training step as HpBackprop's (docs/makemore.md
§2's network: embedding, linear, batch norm with the Bessel variance, tanh, linear,
cross-entropy; autograd backward; SGD), at the shapes S, M, L on one CUDA device, in float32
with TF32 off, in two variants:

  eager  one Python-driven step after another (a kernel launch per op)
  graph  the whole step (forward, backward, SGD) captured once as a CUDA graph and replayed,
         the minibatch copied into the graph's static input buffers before each replay

Timing: warm-up, then 10 windows, each ending with torch.cuda.synchronize(); µs per step, median
and best window. Prints one JSON line per (shape, variant), then nothing else on stdout.

usage: torch_gpu_steps.py [--shapes S,M,L] [--variants eager,graph] [--seconds 1.5] [--device cuda]
(--device cpu runs the eager variant on the CPU: a check of the script where there is no GPU.)
"""
import argparse
import json
import statistics
import sys
import time

import torch

SHAPES = {"S": (32, 10, 200), "M": (256, 24, 512), "L": (4096, 32, 1024)}
B, V = 3, 27


def make_params(E, H, device):
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((V, E), generator=g)
    W1 = torch.randn((B * E, H), generator=g) * (5 / 3) / ((B * E) ** 0.5)
    b1 = torch.randn(H, generator=g) * 0.1
    W2 = torch.randn((H, V), generator=g) * 0.1
    b2 = torch.randn(V, generator=g) * 0.1
    bngain = torch.randn((1, H), generator=g) * 0.1 + 1.0
    bnbias = torch.randn((1, H), generator=g) * 0.1
    return [t.to(device).requires_grad_() for t in (C, W1, b1, W2, b2, bngain, bnbias)]


def step(params, Xb, Yb, lr):
    C, W1, b1, W2, b2, bngain, bnbias = params
    n = Xb.shape[0]
    embcat = C[Xb].view(n, -1)
    hprebn = embcat @ W1 + b1
    bnmeani = hprebn.sum(0, keepdim=True) / n
    bndiff = hprebn - bnmeani
    bnvar = (bndiff * bndiff).sum(0, keepdim=True) / (n - 1)
    bnraw = bndiff * (bnvar + 1e-5).rsqrt()
    h = torch.tanh(bngain * bnraw + bnbias)
    logits = h @ W2 + b2
    loss = torch.nn.functional.cross_entropy(logits, Yb)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)
    return loss


def batches(n, device, count=16):
    g = torch.Generator().manual_seed(42)
    out = []
    for _ in range(count):
        X = torch.randint(0, V, (n, B), generator=g)
        X[:, 0] = 0  # the boundary token repeats, as in real data
        out.append((X.to(device), torch.randint(0, V, (n,), generator=g).to(device)))
    return out


def timed(one, seconds, sync):
    t0 = time.perf_counter()
    calls = 0
    while calls < 200 and (calls < 20 or time.perf_counter() - t0 < seconds / 4):
        one()
        calls += 1
    sync()
    per = (time.perf_counter() - t0) / calls
    reps = max(5, int(seconds / 10 / per))
    res = []
    for _ in range(10):
        t = time.perf_counter()
        for _ in range(reps):
            one()
        sync()
        res.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(res), min(res), 10 * reps


def run(shape, variant, seconds, device):
    n, E, H = SHAPES[shape]
    params = make_params(E, H, device)
    data = batches(n, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    k = [0]
    if variant == "eager":
        def one():
            X, Y = data[k[0] & 15]
            k[0] += 1
            step(params, X, Y, 0.01)
        return timed(one, seconds, sync)
    # CUDA graph: static inputs, warm-up on a side stream, capture one whole step, replay
    sX, sY = data[0][0].clone(), data[0][1].clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step(params, sX, sY, 0.01)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(params, sX, sY, 0.01)

    def one():
        X, Y = data[k[0] & 15]
        k[0] += 1
        sX.copy_(X, non_blocking=True)
        sY.copy_(Y, non_blocking=True)
        graph.replay()
    return timed(one, seconds, sync)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L")
    ap.add_argument("--variants", default="eager,graph")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"side": "pytorch", "error": "torch.cuda.is_available() is False", "torch": torch.__version__}))
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    info = {"side": "pytorch", "torch": torch.__version__, "cuda": torch.version.cuda, "tf32": False}
    if a.device == "cuda":
        info["device"] = torch.cuda.get_device_name(0)
    print(json.dumps(info), flush=True)
    for shape in a.shapes.split(","):
        for variant in a.variants.split(","):
            if variant == "graph" and a.device != "cuda":
                continue
            med, best, steps = run(shape, variant, a.seconds, a.device)
            print(json.dumps({"side": "pytorch", "variant": variant, "shape": shape, "us_median": round(med, 2),
                              "us_min": round(best, 2), "steps": steps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
