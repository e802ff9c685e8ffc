#!/usr/bin/env python3
"""The PyTorch side of the GPU kit's step times: the same training step as HpBackprop's (docs/makemore.md
§2's network: embedding, linear, batch norm with the Bessel variance, tanh, linear,
cross-entropy; autograd backward; SGD), at the shapes S, M, L on one CUDA device, and two
layer stacks: `deep` (the lecture's deeper network: embedding, flatten, five linear (no bias) +
Bessel batch norm + tanh blocks of 100, linear + batch norm to 27, n = 32) and `mlp` (float
features: linear 64x256, relu, linear 256x256, relu, linear 256x10, cross-entropy, n = 256);
in float32 with TF32 off, the minibatches resident on the device, in two variants:

  eager  one Python-driven step after another (a kernel launch per op)
  graph  the whole step (forward, backward, SGD) captured once as a CUDA graph and replayed,
         the minibatch copied into the graph's static input buffers before each replay

Timing: warm-up, then 10 windows, each ending with torch.cuda.synchronize(); µs per step, median
and best window. Prints one JSON line per (shape, variant), then nothing else on stdout.

usage: torch_gpu_steps.py [--shapes S,M,L,deep,mlp] [--variants eager,graph] [--seconds 1.5] [--device cuda]
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


class BesselBatchNorm(torch.nn.Module):
    """Batch norm with the variance over n-1 (docs/makemore.md), training mode only."""

    def __init__(self, f):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(f))
        self.bias = torch.nn.Parameter(torch.zeros(f))

    def forward(self, x):
        n = x.shape[0]
        mean = x.sum(0, keepdim=True) / n
        d = x - mean
        var = (d * d).sum(0, keepdim=True) / (n - 1)
        return self.weight * d * (var + 1e-5).rsqrt() + self.bias


def make_stack(shape, device):
    """The `deep` and `mlp` stacks as torch modules, their parameters, and the batch size."""
    torch.manual_seed(1)
    if shape == "deep":
        mods = [torch.nn.Embedding(V, 10), torch.nn.Flatten(1)]
        width = 30
        for _ in range(5):
            mods += [torch.nn.Linear(width, 100, bias=False), BesselBatchNorm(100), torch.nn.Tanh()]
            width = 100
        mods += [torch.nn.Linear(100, V, bias=False), BesselBatchNorm(V)]
        n = 32
    else:
        mods = [torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)]
        n = 256
    model = torch.nn.Sequential(*mods).to(device)
    return model, list(model.parameters()), n


def stack_step(model, params, X, Y, lr):
    loss = torch.nn.functional.cross_entropy(model(X), Y)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)
    return loss


def stack_batches(shape, n, device, count=16):
    g = torch.Generator().manual_seed(42)
    out = []
    for _ in range(count):
        if shape == "deep":
            X = torch.randint(0, V, (n, B), generator=g)
            Y = torch.randint(0, V, (n,), generator=g)
        else:
            X = torch.randn((n, 64), generator=g)
            Y = torch.randint(0, 10, (n,), generator=g)
        out.append((X.to(device), Y.to(device)))
    return out


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
    if shape in ("deep", "mlp"):
        model, params, n = make_stack(shape, device)
        data = stack_batches(shape, n, device)
        one_step = lambda X, Y: stack_step(model, params, X, Y, 0.01)  # noqa: E731
    else:
        n, E, H = SHAPES[shape]
        params = make_params(E, H, device)
        data = batches(n, device)
        one_step = lambda X, Y: step(params, X, Y, 0.01)  # noqa: E731
    return run_steps(one_step, data, variant, seconds, device)


def run_steps(one_step, data, variant, seconds, device):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    k = [0]
    if variant == "eager":
        def one():
            X, Y = data[k[0] & 15]
            k[0] += 1
            one_step(X, Y)
        return timed(one, seconds, sync)
    # CUDA graph: static inputs, warm-up on a side stream, capture one whole step, replay
    sX, sY = data[0][0].clone(), data[0][1].clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            one_step(sX, sY)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        one_step(sX, sY)

    def one():
        X, Y = data[k[0] & 15]
        k[0] += 1
        sX.copy_(X, non_blocking=True)
        sY.copy_(Y, non_blocking=True)
        graph.replay()
    return timed(one, seconds, sync)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L,deep,mlp")
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
