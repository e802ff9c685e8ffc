#!/usr/bin/python3
"""PyTorch autograd oracle for HpBackprop (docs/makemore.md §2 and §3).

For every case below this builds the makemore MLP forward graph from its atomic
pieces exactly as docs/makemore.md §2 writes it (batch norm by hand, Bessel-corrected
variance 1/(n-1); no F.batch_norm, no F.cross_entropy), keeps the gradient of
every intermediate with retain_grad(), runs loss.backward() and writes

    <out>/<case>.f32.safetensors
    <out>/<case>.f64.safetensors

holding the inputs (Xb, Yb as I64), the parameters, every forward intermediate
under its makemore name and the 26 gradients of docs/makemore.md §3 as "d" + name, all
taken from autograd's .grad.

The f32 and f64 bundles of a case have identical inputs: parameters are drawn
in float32 from a torch.Generator seeded per case, and the float64 run uses the
exact upcast of those float32 values.

Usage: /usr/bin/python3 oracle.py [--out DIR]
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

EPS = 1e-5

# name, n, B (block_size), E (n_embd), H (n_hidden), V (vocab_size), seed, extras
CASES = [
    dict(case="seed", n=32, B=3, E=10, H=64, V=27, seed=1001),
    dict(case="n2", n=2, B=3, E=10, H=64, V=27, seed=1002),
    dict(case="large", n=1000, B=3, E=16, H=512, V=27, seed=1003),
    dict(case="vocab100", n=32, B=8, E=10, H=64, V=100, seed=1004),
    # Xb ids only from {0,1,2}: embedding rows repeat heavily (scatter-add in dC).
    dict(case="repeated", n=64, B=3, E=10, H=64, V=27, seed=1005, x_ids=3),
    # W2 and b2 drawn with std 0.1*logit_scale instead of 0.1: logits reach about +-50.
    dict(case="bigLogits", n=32, B=3, E=10, H=64, V=27, seed=1006, logit_scale=29.0),
]

# Forward intermediates, in docs/makemore.md §2 order.
FORWARD = ["emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar",
           "bnvar_inv", "bnraw", "hpreact", "h", "logits", "logit_maxes",
           "norm_logits", "counts", "counts_sum", "counts_sum_inv", "probs",
           "logprobs", "loss"]
PARAMS = ["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"]
# The 26 gradients of docs/makemore.md §3, in makemore order.
GRADS = ["logprobs", "probs", "counts_sum_inv", "counts_sum", "counts",
         "norm_logits", "logit_maxes", "logits", "h", "W2", "b2", "hpreact",
         "bngain", "bnraw", "bnbias", "bnvar_inv", "bnvar", "bndiff2", "bndiff",
         "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C"]


def draw_inputs(cfg):
    """Inputs of one case: Xb, Yb (int64) and float32 parameters, fully determined
    by cfg (one torch.Generator per case, fixed draw order)."""
    n, B, E, H, V = cfg["n"], cfg["B"], cfg["E"], cfg["H"], cfg["V"]
    g = torch.Generator().manual_seed(cfg["seed"])
    f32 = torch.float32
    x_hi = cfg.get("x_ids", V)
    Xb = torch.randint(0, x_hi, (n, B), generator=g, dtype=torch.int64)
    Yb = torch.randint(0, V, (n,), generator=g, dtype=torch.int64)
    ls = cfg.get("logit_scale", 1.0)
    p = {}
    p["C"] = torch.randn((V, E), generator=g, dtype=f32)
    p["W1"] = torch.randn((B * E, H), generator=g, dtype=f32) * ((5 / 3) / math.sqrt(B * E))
    p["b1"] = torch.randn((H,), generator=g, dtype=f32) * 0.1
    p["W2"] = torch.randn((H, V), generator=g, dtype=f32) * (0.1 * ls)
    p["b2"] = torch.randn((V,), generator=g, dtype=f32) * (0.1 * ls)
    p["bngain"] = torch.randn((1, H), generator=g, dtype=f32) * 0.1 + 1.0
    p["bnbias"] = torch.randn((1, H), generator=g, dtype=f32) * 0.1
    for t in p.values():
        assert t.dtype == f32
    return Xb, Yb, p


def forward_backward(Xb, Yb, params32, dtype):
    """docs/makemore.md §2 forward from atomic pieces, then autograd backward.
    Returns (params, intermediates) dicts of tensors; .grad is populated."""
    n, B = Xb.shape
    # exact upcast (or identity) of the float32 draws
    P = {k: v.to(dtype).clone().requires_grad_(True) for k, v in params32.items()}
    C, W1, b1, W2, b2, bngain, bnbias = (P[k] for k in PARAMS)

    t = {}
    t["emb"] = C[Xb]                                            # [n,B,E]
    t["embcat"] = t["emb"].view(n, -1)                          # [n,B*E]
    t["hprebn"] = t["embcat"] @ W1 + b1                         # [n,H]
    t["bnmeani"] = 1 / n * t["hprebn"].sum(0, keepdim=True)     # [1,H]
    t["bndiff"] = t["hprebn"] - t["bnmeani"]
    t["bndiff2"] = t["bndiff"] ** 2
    t["bnvar"] = 1 / (n - 1) * t["bndiff2"].sum(0, keepdim=True)  # Bessel
    t["bnvar_inv"] = (t["bnvar"] + EPS) ** -0.5
    t["bnraw"] = t["bndiff"] * t["bnvar_inv"]
    t["hpreact"] = bngain * t["bnraw"] + bnbias
    t["h"] = torch.tanh(t["hpreact"])
    t["logits"] = t["h"] @ W2 + b2                              # [n,V]
    t["logit_maxes"] = t["logits"].max(1, keepdim=True).values  # [n,1]
    t["norm_logits"] = t["logits"] - t["logit_maxes"]
    t["counts"] = t["norm_logits"].exp()
    t["counts_sum"] = t["counts"].sum(1, keepdim=True)          # [n,1]
    t["counts_sum_inv"] = t["counts_sum"] ** -1
    t["probs"] = t["counts"] * t["counts_sum_inv"]
    t["logprobs"] = t["probs"].log()
    t["loss"] = -t["logprobs"][torch.arange(n), Yb].mean()      # shape []

    for name in FORWARD:
        t[name].retain_grad()
    t["loss"].backward()
    return P, t


def spec_check(Xb, Yb, P, t):
    """Recompute docs/makemore.md §3 and 4 gradients by hand from the forward values and
    return {name: max abs diff / max(max |autograd|, tiny)} against autograd.
    Only a sanity check of the oracle (and of the documented formulas); not stored in the bundles."""
    with torch.no_grad():
        n = Xb.shape[0]
        v = {k: x.detach() for k, x in t.items()}
        W1, W2, bngain = P["W1"].detach(), P["W2"].detach(), P["bngain"].detach()
        d = {}
        d["logprobs"] = torch.zeros_like(v["logprobs"])
        d["logprobs"][torch.arange(n), Yb] = -1.0 / n
        d["probs"] = d["logprobs"] / v["probs"]
        d["counts_sum_inv"] = (v["counts"] * d["probs"]).sum(1, keepdim=True)
        d["counts_sum"] = -v["counts_sum"] ** -2 * d["counts_sum_inv"]
        d["counts"] = v["counts_sum_inv"] * d["probs"] + d["counts_sum"]
        d["norm_logits"] = v["counts"] * d["counts"]
        d["logit_maxes"] = -d["norm_logits"].sum(1, keepdim=True)
        onehot = torch.zeros_like(v["logits"])
        onehot[torch.arange(n), v["logits"].argmax(1)] = 1.0
        d["logits"] = d["norm_logits"] + onehot * d["logit_maxes"]
        d["h"] = d["logits"] @ W2.T
        d["W2"] = v["h"].T @ d["logits"]
        d["b2"] = d["logits"].sum(0)
        d["hpreact"] = (1 - v["h"] ** 2) * d["h"]
        d["bngain"] = (v["bnraw"] * d["hpreact"]).sum(0, keepdim=True)
        d["bnraw"] = bngain * d["hpreact"]
        d["bnbias"] = d["hpreact"].sum(0, keepdim=True)
        d["bnvar_inv"] = (v["bndiff"] * d["bnraw"]).sum(0, keepdim=True)
        d["bnvar"] = -0.5 * (v["bnvar"] + EPS) ** -1.5 * d["bnvar_inv"]
        d["bndiff2"] = 1 / (n - 1) * torch.ones_like(v["bndiff2"]) * d["bnvar"]
        d["bndiff"] = v["bnvar_inv"] * d["bnraw"] + 2 * v["bndiff"] * d["bndiff2"]
        d["bnmeani"] = -d["bndiff"].sum(0, keepdim=True)
        d["hprebn"] = d["bndiff"] + 1 / n * d["bnmeani"]
        d["embcat"] = d["hprebn"] @ W1.T
        d["W1"] = v["embcat"].T @ d["hprebn"]
        d["b1"] = d["hprebn"].sum(0)
        d["emb"] = d["embcat"].view(v["emb"].shape)
        d["C"] = torch.zeros_like(P["C"]).index_add_(
            0, Xb.reshape(-1), d["emb"].reshape(-1, d["emb"].shape[-1]))
        # section 4 fused versions
        logits = v["logits"]
        onehotY = torch.zeros_like(logits)
        onehotY[torch.arange(n), Yb] = 1.0
        d["logits(fused)"] = (torch.softmax(logits, 1) - onehotY) / n
        bnraw, dhp = v["bnraw"], t["hpreact"].grad
        d["hprebn(fused)"] = bngain * v["bnvar_inv"] / n * (
            n * dhp - dhp.sum(0) - n / (n - 1) * bnraw * (dhp * bnraw).sum(0))
        m = logits.max(1, keepdim=True).values
        lse = (logits - m).exp().sum(1, keepdim=True).log() + m
        loss_fused = (lse.squeeze(1) - logits[torch.arange(n), Yb]).mean()

        ref = {g: (P[g].grad if g in P else t[g].grad) for g in GRADS}
        ref["logits(fused)"] = ref["logits"]
        ref["hprebn(fused)"] = ref["hprebn"]
        # db1 and dlogit_maxes are ~0 (pure rounding noise): measure them against
        # the scale of the gradient they are a sum of, not against themselves.
        scale_of = {"b1": "hprebn", "logit_maxes": "norm_logits"}
        out = {}
        for k, a in ref.items():
            scale = max(a.abs().max().item(), ref[scale_of.get(k, k)].abs().max().item(), 1e-300)
            out[k] = (d[k] - a).abs().max().item() / scale
        out["loss(fused)"] = abs(loss_fused.item() - v["loss"].item()) / abs(v["loss"].item())
        return out


def bundle(cfg, Xb, Yb, P, t, dtype):
    tensors = {"Xb": Xb, "Yb": Yb}
    for k in PARAMS:
        tensors[k] = P[k].detach()
    for k in FORWARD:
        tensors[k] = t[k].detach()
    for g in GRADS:
        grad = P[g].grad if g in P else t[g].grad
        if grad is None:
            raise RuntimeError(f"{cfg['case']}: no gradient for {g}")
        src = tensors[g]
        if grad.shape != src.shape:
            raise RuntimeError(f"{cfg['case']}: d{g} shape {tuple(grad.shape)} "
                               f"!= {g} shape {tuple(src.shape)}")
        tensors["d" + g] = grad.detach()
    for k, x in tensors.items():
        if x.is_floating_point():
            assert x.dtype == dtype, (k, x.dtype)
            if not torch.isfinite(x).all():
                raise RuntimeError(f"{cfg['case']}/{dtype}: {k} has non-finite values")
    meta = {
        "case": cfg["case"],
        "n": str(cfg["n"]),
        "block_size": str(cfg["B"]),
        "n_embd": str(cfg["E"]),
        "n_hidden": str(cfg["H"]),
        "vocab_size": str(cfg["V"]),
        "eps": repr(EPS),
        "seed": str(cfg["seed"]),
        "dtype": {torch.float32: "float32", torch.float64: "float64"}[dtype],
        "torch_version": torch.__version__,
    }
    return tensors, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "bundles"))
    ap.add_argument("--cases", default=None,
                    help="comma-separated subset of case names (default: all)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    wanted = set(args.cases.split(",")) if args.cases else None

    worst = 0.0
    for cfg in CASES:
        if wanted is not None and cfg["case"] not in wanted:
            continue
        Xb, Yb, p32 = draw_inputs(cfg)
        for dtype, tag, tol in ((torch.float32, "f32", 1e-3), (torch.float64, "f64", 1e-9)):
            P, t = forward_backward(Xb, Yb, p32, dtype)
            tensors, meta = bundle(cfg, Xb, Yb, P, t, dtype)
            path = os.path.join(args.out, f"{cfg['case']}.{tag}.safetensors")
            st.save(path, tensors, meta)
            chk = spec_check(Xb, Yb, P, t)
            bad = {k: e for k, e in chk.items() if not e <= tol}
            worst_k = max(chk, key=chk.get)
            if tag == "f64":
                worst = max(worst, chk[worst_k])
            print(f"{cfg['case']:>9}.{tag}: loss={t['loss'].item():.6f} "
                  f"max|logit|={t['logits'].abs().max().item():.2f} "
                  f"min prob={t['probs'].min().item():.3e} "
                  f"formulas-vs-autograd worst={chk[worst_k]:.2e} ({worst_k}) "
                  f"size={os.path.getsize(path)}")
            if bad:
                raise RuntimeError(f"documented formulas disagree with autograd: {bad}")
    print(f"done; worst f64 formulas-vs-autograd relative diff {worst:.2e}")


if __name__ == "__main__":
    main()
