#!/usr/bin/python3
"""PyTorch side of the side-by-side benchmark: the makemore MLP (docs/makemore.md) training step (forward, backward,
SGD) at the shapes S, M, L, in autograd mode (loss.backward()) and manual mode (docs/makemore.md §4's
fused analytic backward under torch.no_grad()), following `docs/benchmarks.md`: the split
from random.seed(42), parameters from torch.Generator().manual_seed(2147483647), warm-up, then
the mean time per step over timed windows. Prints one JSON line per (shape, mode, threads).

usage: torch_steps.py [--shapes S,M,L] [--modes manual,autograd] [--threads 1] [--seconds 2] [--data names.txt]
"""
import argparse, json, os, random, statistics, sys, time

import torch

SHAPES = {"S": (32, 10, 200), "M": (256, 24, 512), "L": (4096, 32, 1024)}
B = 3


def load_split(path):
    if path and os.path.exists(path):
        words = open(path, encoding="utf-8").read().splitlines()
        words = [w for w in words if w]
    else:  # no corpus: a synthetic one with the same alphabet
        rng = random.Random(1)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(32033)]
    chars = sorted(set("".join(words)))
    stoi = {c: i + 1 for i, c in enumerate(chars)}
    stoi["."] = 0
    random.seed(42)
    random.shuffle(words)
    train = words[: int(0.8 * len(words))]
    X, Y = [], []
    for w in train:
        ctx = [0] * B
        for ch in w + ".":
            ix = stoi[ch]
            X.append(ctx)
            Y.append(ix)
            ctx = ctx[1:] + [ix]
    return torch.tensor(X), torch.tensor(Y), len(stoi)


def make_params(V, E, H):
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((V, E), generator=g)
    W1 = torch.randn((B * E, H), generator=g) * (5 / 3) / ((B * E) ** 0.5)
    b1 = torch.randn(H, generator=g) * 0.1
    W2 = torch.randn((H, V), generator=g) * 0.1
    b2 = torch.randn(V, generator=g) * 0.1
    bngain = torch.randn((1, H), generator=g) * 0.1 + 1.0
    bnbias = torch.randn((1, H), generator=g) * 0.1
    return [C, W1, b1, W2, b2, bngain, bnbias]


def step_autograd(params, Xb, Yb, lr):
    C, W1, b1, W2, b2, bngain, bnbias = params
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(n, -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff ** 2
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    loss = torch.nn.functional.cross_entropy(logits, Yb)
    for p in params:
        p.grad = None
    loss.backward()
    with torch.no_grad():
        for p in params:
            p += -lr * p.grad
    return loss


def step_manual(params, Xb, Yb, lr):
    C, W1, b1, W2, b2, bngain, bnbias = params
    n = Xb.shape[0]
    with torch.no_grad():
        emb = C[Xb]
        embcat = emb.view(n, -1)
        hprebn = embcat @ W1 + b1
        bnmean = hprebn.mean(0, keepdim=True)
        bnvar = hprebn.var(0, keepdim=True, unbiased=True)
        bnvar_inv = (bnvar + 1e-5) ** -0.5
        bnraw = (hprebn - bnmean) * bnvar_inv
        hpreact = bngain * bnraw + bnbias
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        loss = torch.nn.functional.cross_entropy(logits, Yb)
        # cross-entropy backward (exercise 2)
        dlogits = torch.softmax(logits, 1)
        dlogits[range(n), Yb] -= 1
        dlogits /= n
        dh = dlogits @ W2.T
        dW2 = h.T @ dlogits
        db2 = dlogits.sum(0)
        dhpreact = (1.0 - h ** 2) * dh
        dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
        dbnbias = dhpreact.sum(0, keepdim=True)
        # batch-norm backward (exercise 3)
        dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))
        dembcat = dhprebn @ W1.T
        dW1 = embcat.T @ dhprebn
        db1 = dhprebn.sum(0)
        demb = dembcat.view(emb.shape)
        dC = torch.zeros_like(C)
        dC.index_add_(0, Xb.view(-1), demb.view(-1, C.shape[1]))
        grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]
        for p, g in zip(params, grads):
            p += -lr * g
    return loss


def time_calls(one, seconds):
    """Median and best µs per call of one(): warm-up (100 calls or a quarter of the budget, whichever
    comes first), then 15 timed windows of equal call counts."""
    t0 = time.perf_counter()
    calls = 0
    while calls < 100 and (time.perf_counter() - t0 < max(0.5, seconds / 4) or calls < 3):
        one()
        calls += 1
    per = (time.perf_counter() - t0) / calls
    windows = 15
    reps = max(1, int(seconds / windows / per))
    res = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(reps):
            one()
        res.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(res), min(res)


def bench(shape, mode, threads, seconds, Xtr, Ytr, V):
    torch.set_num_threads(threads)
    n, E, H = SHAPES[shape]
    params = make_params(V, E, H)
    if mode == "autograd":
        for p in params:
            p.requires_grad = True
    fn = step_autograd if mode == "autograd" else step_manual
    g = torch.Generator().manual_seed(42)
    batches = [torch.randint(0, Xtr.shape[0], (n,), generator=g) for _ in range(16)]
    k = 0

    def one():
        nonlocal k
        ix = batches[k & 15]
        k += 1
        fn(params, Xtr[ix], Ytr[ix], 0.01)

    return time_calls(one, seconds)


def openblas_core():
    """The kernel family OpenBLAS picked in this process (torch's BLAS), or why it is unknown."""
    import ctypes
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown (libopenblas.so.0 not loaded)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="S,M,L")
    ap.add_argument("--modes", default="manual,autograd")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--seconds", type=float, default=2.0)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data", "names.txt"))
    a = ap.parse_args()
    print(json.dumps({"side": "pytorch", "blas_core": openblas_core()}), flush=True)
    Xtr, Ytr, V = load_split(a.data)
    for s in a.shapes.split(","):
        for t in [int(x) for x in a.threads.split(",")]:
            for m in a.modes.split(","):
                med, best = bench(s, m, t, a.seconds * (3 if s == "L" else 1), Xtr, Ytr, V)
                print(json.dumps({"side": "pytorch", "shape": s, "mode": m, "threads": t, "us_median": round(med, 2), "us_min": round(best, 2)}), flush=True)


if __name__ == "__main__":
    main()
