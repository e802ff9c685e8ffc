#!/usr/bin/python3
"""PyTorch oracle for layer stacks (docs/stacks.md).

For every case below this builds the torch.nn.Sequential that docs/stacks.md
text form means (stacks_lib.py: Bessel batch norm as a small module with
BatchNorm1d's parameter/buffer names, ':biased' as torch.nn.BatchNorm1d), runs one
training-mode forward, the loss (+ optional L2 penalty) and loss.backward(), and
writes

    <out>/<case>.f32.safetensors
    <out>/<case>.f64.safetensors

with the grads-interchange input (x, y, parameters, running buffers before the
step, metadata layers/loss/l2) and the expected output (loss, out, grad.*,
after.*). It also writes optimiser trajectories (20 steps of torch.optim.SGD or
AdamW with a learning-rate schedule) as

    <out>/optim_<case>.f32.safetensors
    <out>/optim_<case>.f64.safetensors

Precision rule: every input and parameter is drawn once, in float32, from a
torch.Generator seeded per case; the f32 bundle is computed by torch in float32
from those values, the f64 bundle holds the same values upcast to float64 and is
computed by torch in float64. |f32 - f64| is PyTorch's own float32 error.

As a sanity check the script recomputes the formulas of docs/stacks.md (loss,
dz, dt, every layer's backward incl. the section 4 fused batch norm, running
updates) from the forward values and fails if they disagree with autograd
(printed as "formulas-vs-autograd"; not stored).

Usage: /usr/bin/python3 stack_oracle.py [--out DIR] [--cases a,b]
"""

import argparse
import copy
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from stacks_lib import (DEFAULT_BN_MOMENTUM, EPS, MaskDropout, build_sequential,  # noqa: E402
                        l2_penalty, loss_value, parse_stack)

F32, F64 = torch.float32, torch.float64

_DEEP = ("embedding:27x10,flatten,"
         + ",".join(f"linear:{i}x100:nobias,batchnorm:100,tanh" for i in (30, 100, 100, 100, 100))
         + ",linear:100x27:nobias,batchnorm:27")

# One-step cases. Keys: case, layers, loss, n, B (block size, embedding stacks),
# D (input width, float x), l2 (text), bn_momentum, seed, description; optional
# x_ids (ids drawn from [0, x_ids) instead of [0, V)), w_scale {layer: factor}
# applied to that linear's weight and bias, x_scale.
CASES = [
    dict(case="makemore", layers="embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27",
         loss="cross_entropy", n=32, B=3, seed=2001,
         description="the makemore MLP of docs/makemore.md §2 (H=64) as a stack"),
    dict(case="makemore_biased", layers="embedding:27x10,flatten,linear:30x64,batchnorm:64:biased,tanh,linear:64x27",
         loss="cross_entropy", n=32, B=3, seed=2002,
         description="makemore MLP with PyTorch's BatchNorm1d (variance over n)"),
    dict(case="deep", layers=_DEEP, loss="cross_entropy", n=32, B=3, seed=2003,
         description="the lecture's deep stack: five linear(nobias)/batchnorm/tanh blocks of 100, "
                     "then linear/batchnorm of 27"),
    dict(case="n2", layers="embedding:27x10,flatten,linear:30x13,batchnorm:13,tanh,linear:13x27",
         loss="cross_entropy", n=2, B=3, seed=2004,
         description="smallest legal batch for Bessel batch norm (n-1 = 1); the gradient through "
                     "the batch norm is O(eps), so its float32 error is large"),
    dict(case="n2_biased", layers="linear:7x5,batchnorm:5:biased,sigmoid,linear:5x3",
         loss="bce_with_logits", n=2, D=7, seed=2005,
         description="n=2 with biased batch norm, sigmoid and bce_with_logits"),
    dict(case="odd", layers="linear:7x13,batchnorm:13,relu,linear:13x33:nobias,batchnorm:33:biased,sigmoid,linear:33x5",
         loss="mse", n=17, D=7, seed=2006, bn_momentum="0.1",
         description="odd widths 7/13/33/5, odd n, both batch-norm modes, momentum 0.1"),
    dict(case="wide_vocab", layers="embedding:1000x3,flatten,linear:6x1000",
         loss="cross_entropy", n=12, B=2, seed=2007,
         description="V=1000 embedding and 1000-way softmax"),
    dict(case="big_logits", layers="embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27",
         loss="cross_entropy", n=32, B=3, seed=2008, w_scale={5: 24.0},
         description="makemore MLP with the output layer scaled x24: logits reach about +-50"),
    dict(case="l2", layers="linear:6x9,tanh,linear:9x4", loss="mse", n=16, D=6, l2="1", seed=2009,
         description="L2 penalty l2=1 on both linear weights (the seeds' drill)"),
    dict(case="l2_bn", layers="embedding:27x10,flatten,linear:30x16:nobias,batchnorm:16,tanh,linear:16x27",
         loss="cross_entropy", n=16, B=3, l2="0.001", seed=2010,
         description="L2 penalty 0.001 with embedding and batch norm (penalty on linear weights only)"),
    dict(case="linreg", layers="linear:4x2", loss="mse", n=20, D=4, seed=2011,
         description="linear regression: one linear layer and mse (grad.x, grad.y)"),
    dict(case="logreg", layers="linear:5x1", loss="bce_with_logits", n=24, D=5, seed=2012,
         description="logistic regression: linear:5x1 and bce_with_logits, soft and hard targets"),
    dict(case="mlp_relu_sigmoid", layers="linear:6x10,relu,linear:10x8,sigmoid,linear:8x3",
         loss="mse", n=16, D=6, seed=2013,
         description="MLP with relu and sigmoid hidden layers, mse"),
    dict(case="mlp_bce", layers="linear:5x8,tanh,linear:8x8,relu,linear:8x3",
         loss="bce_with_logits", n=16, D=5, seed=2014,
         description="tanh/relu MLP with 3 bce_with_logits outputs"),
    dict(case="softmax_reg", layers="linear:9x4", loss="cross_entropy", n=30, D=9, seed=2015,
         description="softmax regression on float features (grad.x)"),
    dict(case="linear_sigmoid_mean", layers="linear:5x3,sigmoid", loss="mean", n=8, D=5, seed=2016,
         description="bare linear + sigmoid with the 'mean' objective of the drills"),
    dict(case="bn_sigmoid_mean", layers="batchnorm:6,sigmoid", loss="mean", n=10, D=6, seed=2017,
         description="bare Bessel batch norm + sigmoid with 'mean' (batchnorm alone + mean has zero "
                     "grad.x/grad.weight, so a sigmoid follows)"),
    dict(case="bn_mse", layers="batchnorm:6", loss="mse", n=10, D=6, seed=2018,
         description="bare Bessel batch norm with mse (grad.x, grad.y)"),
    dict(case="bn_biased_mse", layers="batchnorm:6:biased", loss="mse", n=10, D=6, seed=2019,
         description="bare biased batch norm (torch.nn.BatchNorm1d) with mse"),
    dict(case="tanh_mean", layers="linear:7x7:nobias,tanh", loss="mean", n=9, D=7, seed=2020,
         description="bare linear (no bias) + tanh with 'mean'"),
    dict(case="repeated_ids", layers="embedding:5x4,flatten,linear:12x6,tanh,linear:6x5",
         loss="cross_entropy", n=40, B=3, x_ids=3, seed=2021,
         description="ids only in {0,1,2} of V=5: scatter-add into embedding rows; rows 3,4 get zero grad"),
    dict(case="layernorm", layers="linear:6x12,layernorm:12,tanh,linear:12x3", loss="mse", n=10, D=6, seed=2022,
         description="torch.nn.LayerNorm(12) between a linear and a tanh, mse (grad.x, grad.y)"),
    dict(case="layernorm_ids", layers="embedding:27x8,flatten,linear:24x32,layernorm:32,relu,linear:32x27",
         loss="cross_entropy", n=16, B=3, seed=2023,
         description="makemore-like MLP with layer norm instead of batch norm, relu, cross-entropy"),
    dict(case="layernorm_mean", layers="layernorm:9,sigmoid", loss="mean", n=7, D=9, seed=2024,
         description="bare layer norm + sigmoid with 'mean' (grad.x through the row statistics)"),
    dict(case="dropout", layers="linear:6x16,relu,dropout:0.25,linear:16x3", loss="mse", n=12, D=6, seed=2025,
         dropout_seed=7, step=3,
         description="inverted dropout p=0.25 after a relu, mse; the mask from Philox4x32-10 (seed 7, step 3) as mask.2"),
    dict(case="dropout_bn", layers="embedding:27x8,flatten,dropout:0.1,linear:24x32,batchnorm:32,tanh,dropout:0.5,linear:32x27",
         loss="cross_entropy", n=16, B=3, seed=2026, dropout_seed=11, step=123456789012,
         description="dropout on the flattened embedding and after batch norm + tanh, a step beyond 2^32"),
]

# Optimiser trajectories (STEPS steps, one fixed minibatch per step).
STEPS = 20
OPT_CASES = [
    dict(case="bn_sgd", layers="embedding:27x6,flatten,linear:18x16,batchnorm:16,tanh,linear:16x27",
         loss="cross_entropy", n=16, B=3, seed=3001, bn_momentum="0.1",
         optimizer="sgd:lr=0.1,momentum=0.9,weight_decay=0.01", schedule="constant",
         description="Bessel batch-norm MLP, SGD with momentum and weight decay, constant lr"),
    dict(case="mlp_adamw_cosine", layers="linear:5x12,tanh,linear:12x3", loss="mse", n=16, D=5, seed=3002,
         optimizer="adamw:lr=0.01,beta1=0.9,beta2=0.999,eps=1e-08,weight_decay=0.01",
         schedule="cosine:warmup=5,total=20,min_lr=0",
         description="tanh MLP with mse, AdamW, cosine schedule with linear warm-up"),
    dict(case="mlp_sgd_step", layers="linear:5x12,relu,linear:12x3", loss="mse", n=16, D=5, seed=3003,
         l2="0.01", optimizer="sgd:lr=0.1,momentum=0,weight_decay=0", schedule="step:at=10,factor=0.1",
         description="relu MLP with mse and L2 penalty 0.01, plain SGD, lr x0.1 from step 10"),
    dict(case="bn_adamw", layers="linear:6x10:nobias,batchnorm:10:biased,sigmoid,linear:10x4",
         loss="bce_with_logits", n=16, D=6, seed=3004,
         optimizer="adamw:lr=0.01,beta1=0.9,beta2=0.999,eps=1e-08,weight_decay=0.01", schedule="constant",
         description="biased batch-norm MLP with bce_with_logits, AdamW, constant lr"),
    dict(case="ln_dropout_adamw", layers="linear:5x16,layernorm:16,tanh,dropout:0.2,linear:16x3", loss="mse", n=16, D=5,
         seed=3005, dropout_seed=5,
         optimizer="adamw:lr=0.01,beta1=0.9,beta2=0.999,eps=1e-08,weight_decay=0.01", schedule="cosine:warmup=5,total=20,min_lr=0",
         description="layer norm and dropout (a new mask each step) with mse, AdamW, cosine schedule"),
]


# ---------------------------------------------------------------- inputs

def out_width(specs):
    for s in reversed(specs):
        if s["kind"] == "linear":
            return s["OUT"]
        if s["kind"] in ("batchnorm", "layernorm"):
            return s["F"]
    raise ValueError("no layer fixes the output width")


def draw_xy(cfg, specs, g, lead=()):
    """x, y for one case; lead = extra leading dims (the optimiser's steps)."""
    n, k = cfg["n"], out_width(specs)
    if specs[0]["kind"] == "embedding":
        x = torch.randint(0, cfg.get("x_ids", specs[0]["V"]), lead + (n, cfg["B"]),
                          generator=g, dtype=torch.int64)
    else:
        x = torch.randn(lead + (n, cfg["D"]), generator=g, dtype=F32) * cfg.get("x_scale", 1.0)
    loss = cfg["loss"]
    if loss == "cross_entropy":
        y = torch.randint(0, k, lead + (n,), generator=g, dtype=torch.int64)
    elif loss == "mse":
        y = torch.randn(lead + (n, k), generator=g, dtype=F32)
    elif loss == "bce_with_logits":
        y = torch.rand(lead + (n, k), generator=g, dtype=F32)
        hard = torch.rand(lead + (n, k), generator=g, dtype=F32) < 0.5
        y = torch.where(hard, torch.round(y), y)   # half hard 0/1, half soft targets
    else:
        y = None
    return x, y


def init_model(cfg, specs, g):
    """float32 Sequential with every parameter and running buffer drawn from g."""
    model = build_sequential(specs, float(cfg.get("bn_momentum", DEFAULT_BN_MOMENTUM)), mask_dropout=True)
    model = model.to(F32)
    w_scale = cfg.get("w_scale", {})
    with torch.no_grad():
        for i, (s, m) in enumerate(zip(specs, model)):
            if s["kind"] == "embedding":
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F32))
            elif s["kind"] == "linear":
                nxt = next((t["kind"] for t in specs[i + 1:] if t["kind"] not in ("batchnorm", "layernorm", "dropout")), None)
                gain = (5 / 3 if nxt == "tanh" else 1.0) * w_scale.get(i, 1.0)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=F32)
                               * (gain / math.sqrt(s["IN"])))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=F32)
                                 * (0.1 * w_scale.get(i, 1.0)))
            elif s["kind"] == "batchnorm":
                Fw = s["F"]
                m.weight.copy_(1 + 0.1 * torch.randn(Fw, generator=g, dtype=F32))
                m.bias.copy_(0.1 * torch.randn(Fw, generator=g, dtype=F32))
                m.running_mean.copy_(0.1 * torch.randn(Fw, generator=g, dtype=F32))
                m.running_var.copy_(1 + 0.1 * torch.randn(Fw, generator=g, dtype=F32).abs())
                m.num_batches_tracked.fill_(0)
            elif s["kind"] == "layernorm":
                Fw = s["F"]
                m.weight.copy_(1 + 0.1 * torch.randn(Fw, generator=g, dtype=F32))
                m.bias.copy_(0.1 * torch.randn(Fw, generator=g, dtype=F32))
    for v in model.state_dict().values():
        assert v.dtype in (F32, torch.int64)
    return model


def near_zero(specs):
    """Gradients that are mathematically zero (rounding noise in the bundle): the
    bias of a linear directly followed by batch norm (the mean removes it)."""
    names = []
    for i, s in enumerate(specs[:-1]):
        if s["kind"] == "linear" and s["bias"] and specs[i + 1]["kind"] == "batchnorm":
            names.append(f"grad.{i}.bias")
    return names


# ---------------------------------------------------------------- one step

def set_dropout(model, cfg, step):
    """The dropout masks' key: the case's dropout_seed (default 42) and the optimiser step."""
    for m in model:
        if isinstance(m, MaskDropout):
            m.seed, m.step = cfg.get("dropout_seed", 42), step


def run_case(cfg, specs, model32, x, y, dtype):
    """One training-mode forward + backward in dtype. Returns (model, acts, loss)."""
    model = copy.deepcopy(model32).to(dtype)
    model.train()
    set_dropout(model, cfg, cfg.get("step", 0))
    if x.is_floating_point():
        x = x.detach().to(dtype).clone().requires_grad_(True)
    if y is not None and y.is_floating_point():
        y = y.detach().to(dtype).clone().requires_grad_(True)
    acts = [x]
    for m in model:
        a = m(acts[-1])
        a.retain_grad()
        acts.append(a)
    loss = loss_value(acts[-1], y, cfg["loss"])
    pen = l2_penalty(model, specs, float(cfg.get("l2", "0")))
    if pen is not None:
        loss = loss + pen
    loss.backward()
    return model, acts, x, y, loss


def spec_check(cfg, specs, model, before, acts, x, y, loss):
    """docs/stacks.md formulas vs autograd: {what: relative max abs diff}."""
    res = {}

    def rel(name, mine, ref, scale=None):
        s = max(ref.abs().max().item() if scale is None else scale, 1e-300)
        res[name] = (mine - ref).abs().max().item() / s

    with torch.no_grad():
        z = acts[-1].detach()
        n = z.shape[0]
        nk = z.numel()
        l2 = float(cfg.get("l2", "0"))
        L = cfg["loss"]
        if L == "cross_entropy":
            m = z.max(1, keepdim=True).values
            lse = ((z - m).exp().sum(1, keepdim=True).log() + m).squeeze(1)
            lval = (lse - z[torch.arange(n), y]).mean()
            oh = torch.zeros_like(z)
            oh[torch.arange(n), y] = 1
            dz = (torch.softmax(z, 1) - oh) / n
        elif L == "mse":
            t = y.detach()
            lval = ((z - t) ** 2).mean()
            dz = 2 * (z - t) / nk
            rel("grad.y", -dz, y.grad)
        elif L == "bce_with_logits":
            t = y.detach()
            lval = (z.clamp(min=0) - z * t + torch.log1p(torch.exp(-z.abs()))).mean()
            dz = (torch.sigmoid(z) - t) / nk
            rel("grad.y", -z / nk, y.grad)
        else:
            lval = z.mean()
            dz = torch.full_like(z, 1 / nk)
        for i, s in enumerate(specs):
            if s["kind"] == "linear":
                lval = lval + l2 * (model[i].weight.detach() ** 2).sum()
        rel("loss", lval.reshape(1), loss.detach().reshape(1))
        rel("dz", dz, acts[-1].grad)

        for i in reversed(range(len(specs))):
            s, mod = specs[i], model[i]
            xin, yout = acts[i].detach(), acts[i + 1].detach()
            dy = acts[i + 1].grad
            dx_ref = acts[i].grad if i > 0 else (x.grad if x.is_floating_point() else None)
            k = s["kind"]
            dx = None
            if k == "linear":
                W = mod.weight.detach()
                rel(f"grad.{i}.weight", dy.T @ xin + 2 * l2 * W, mod.weight.grad)
                if mod.bias is not None:
                    # scale: the bias gradient is ~0 before a batch norm
                    rel(f"grad.{i}.bias", dy.sum(0), mod.bias.grad, dy.abs().sum(0).max().item())
                dx = dy @ W
            elif k == "batchnorm":
                b = s["biased"]
                mu = xin.mean(0)
                var_n = ((xin - mu) ** 2).sum(0) / (n if b else n - 1)
                vinv = (var_n + EPS) ** -0.5
                raw = (xin - mu) * vinv
                gain = mod.weight.detach()
                rel(f"{i}.forward", gain * raw + mod.bias.detach(), yout)
                rel(f"grad.{i}.weight", (raw * dy).sum(0), mod.weight.grad)
                rel(f"grad.{i}.bias", dy.sum(0), mod.bias.grad)
                c = 1.0 if b else n / (n - 1)
                dx = gain * vinv / n * (n * dy - dy.sum(0) - c * raw * (dy * raw).sum(0))
                mom = mod.momentum
                uvar = ((xin - mu) ** 2).sum(0) / (n - 1)
                rel(f"after.{i}.running_mean", (1 - mom) * before[f"{i}.running_mean"] + mom * mu,
                    mod.running_mean)
                rel(f"after.{i}.running_var", (1 - mom) * before[f"{i}.running_var"] + mom * uvar,
                    mod.running_var)
            elif k == "layernorm":
                mu = xin.mean(1, keepdim=True)
                var = ((xin - mu) ** 2).mean(1, keepdim=True)
                r = (var + EPS) ** -0.5
                xhat = (xin - mu) * r
                w = mod.weight.detach()
                rel(f"{i}.forward", w * xhat + mod.bias.detach(), yout)
                rel(f"grad.{i}.weight", (dy * xhat).sum(0), mod.weight.grad)
                rel(f"grad.{i}.bias", dy.sum(0), mod.bias.grad)
                gx = dy * w
                dx = r * (gx - gx.mean(1, keepdim=True) - xhat * (gx * xhat).mean(1, keepdim=True))
            elif k == "dropout":
                mk = torch.from_numpy(mod.last_mask.astype("float64")).to(dy.dtype)
                rel(f"{i}.forward", xin * mk / (1 - s["p"]), yout)
                dx = dy * mk / (1 - s["p"])
            elif k == "tanh":
                dx = (1 - yout ** 2) * dy
            elif k == "sigmoid":
                dx = yout * (1 - yout) * dy
            elif k == "relu":
                dx = (xin > 0).to(dy.dtype) * dy
            elif k == "flatten":
                dx = dy.view(xin.shape)
            elif k == "embedding":
                dC = torch.zeros_like(mod.weight).index_add_(
                    0, xin.reshape(-1), dy.reshape(-1, dy.shape[-1]))
                rel(f"grad.{i}.weight", dC, mod.weight.grad)
            if dx is not None and dx_ref is not None:
                rel(f"d{i}.input", dx, dx_ref)
    return res


def to_bundle(cfg, specs, model, before, acts, x, y, loss, dtype):
    tensors = {"x": x.detach(), "loss": loss.detach().reshape(1), "out": acts[-1].detach()}
    if y is not None:
        tensors["y"] = y.detach()
    tensors.update(before)
    for name, p in model.named_parameters():
        tensors[name] = p.detach()
        if p.grad is None:
            raise RuntimeError(f"{cfg['case']}: no gradient for {name}")
        tensors["grad." + name] = p.grad.detach()
    if x.is_floating_point():
        tensors["grad.x"] = x.grad.detach()
    if y is not None and y.is_floating_point():
        tensors["grad.y"] = y.grad.detach()
    for i, m in enumerate(model):
        if hasattr(m, "running_mean"):
            tensors[f"after.{i}.running_mean"] = m.running_mean.detach().clone()
            tensors[f"after.{i}.running_var"] = m.running_var.detach().clone()
        if isinstance(m, MaskDropout):
            tensors[f"mask.{i}"] = torch.from_numpy(m.last_mask.copy())
    for k, v in tensors.items():
        if v.is_floating_point():
            assert v.dtype == dtype, (k, v.dtype)
            if not torch.isfinite(v).all():
                raise RuntimeError(f"{cfg['case']}/{dtype}: {k} has non-finite values")
        if k.startswith("grad.") and k[5:] in tensors:
            assert v.shape == tensors[k[5:]].shape, k
    meta = common_meta(cfg, dtype)
    meta["near_zero"] = ",".join(near_zero(specs))
    return tensors, meta


def common_meta(cfg, dtype):
    return {
        "case": cfg["case"],
        "description": cfg["description"],
        "layers": cfg["layers"],
        "loss": cfg["loss"],
        "l2": cfg.get("l2", "0"),
        "bn_momentum": cfg.get("bn_momentum", repr(DEFAULT_BN_MOMENTUM)),
        "n": str(cfg["n"]),
        "seed": str(cfg["seed"]),
        "dtype": {F32: "float32", F64: "float64"}[dtype],
        **({"dropout_seed": str(cfg["dropout_seed"]), "step": str(cfg.get("step", 0))} if "dropout_seed" in cfg else {}),
        "torch_version": torch.__version__,
    }


# ---------------------------------------------------------------- optimisers

def parse_kv(text):
    """'name:k=v,k=v' -> (name, {k: float}); 'name' -> (name, {})."""
    name, _, rest = text.partition(":")
    kv = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        kv[k] = float(v)
    return name, kv


def schedule_lr(schedule, base_lr, t):
    """Learning rate of step t = 0, 1, ... (README: 'Learning-rate schedules')."""
    name, kv = parse_kv(schedule)
    if name == "constant":
        return base_lr
    if name == "step":
        return base_lr * kv["factor"] if t >= int(kv["at"]) else base_lr
    if name == "cosine":
        warmup, total, min_lr = int(kv["warmup"]), int(kv["total"]), kv["min_lr"]
        if t < warmup:
            return base_lr * (t + 1) / warmup
        p = min((t - warmup) / (total - warmup), 1.0)
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_optimizer(text, params):
    name, kv = parse_kv(text)
    if name == "sgd":
        return torch.optim.SGD(params, lr=kv["lr"], momentum=kv["momentum"],
                               weight_decay=kv["weight_decay"], foreach=False)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=kv["lr"], betas=(kv["beta1"], kv["beta2"]),
                                 eps=kv["eps"], weight_decay=kv["weight_decay"],
                                 amsgrad=False, foreach=False)
    raise ValueError(f"unknown optimizer {text!r}")


def run_optim(cfg, specs, model32, X, Y, dtype):
    model = copy.deepcopy(model32).to(dtype)
    model.train()
    opt = make_optimizer(cfg["optimizer"], list(model.parameters()))
    base_lr = parse_kv(cfg["optimizer"])[1]["lr"]
    l2 = float(cfg.get("l2", "0"))
    losses, lrs = [], []
    for t in range(STEPS):
        lr = schedule_lr(cfg["schedule"], base_lr, t)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=False)
        set_dropout(model, cfg, t)
        x = X[t].to(dtype) if X.is_floating_point() else X[t]
        y = None if Y is None else (Y[t].to(dtype) if Y.is_floating_point() else Y[t])
        loss = loss_value(model(x), y, cfg["loss"])
        pen = l2_penalty(model, specs, l2)
        if pen is not None:
            loss = loss + pen
        loss.backward()
        opt.step()
        losses.append(loss.detach().reshape(1))
        lrs.append(lr)
    tensors = {"x": X.to(dtype) if X.is_floating_point() else X,
               "losses": torch.cat(losses),
               "lr": torch.tensor(lrs, dtype=F64)}
    if Y is not None:
        tensors["y"] = Y.to(dtype) if Y.is_floating_point() else Y
    for k, v in model32.state_dict().items():
        tensors[k] = v.to(dtype) if v.is_floating_point() else v.clone()
    for k, v in model.state_dict().items():
        tensors["final." + k] = v.detach().clone()
    for k, v in tensors.items():
        if v.is_floating_point() and k != "lr":
            assert v.dtype == dtype, (k, v.dtype)
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise RuntimeError(f"optim {cfg['case']}/{dtype}: {k} has non-finite values")
    meta = common_meta(cfg, dtype)
    meta.update(optimizer=cfg["optimizer"], schedule=cfg["schedule"], steps=str(STEPS),
                near_zero=",".join(near_zero(specs)))
    return tensors, meta


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "stacks"))
    ap.add_argument("--cases", default=None,
                    help="comma-separated subset of case names (optimiser cases as optim_NAME)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    wanted = set(args.cases.split(",")) if args.cases else None

    worst = 0.0
    for cfg in CASES:
        if wanted is not None and cfg["case"] not in wanted:
            continue
        specs = parse_stack(cfg["layers"])
        g = torch.Generator().manual_seed(cfg["seed"])
        x, y = draw_xy(cfg, specs, g)
        model32 = init_model(cfg, specs, g)
        for dtype, tag, tol in ((F32, "f32", 1e-2), (F64, "f64", 1e-10)):
            before = {k: v.to(dtype) if v.is_floating_point() else v.clone()
                      for k, v in model32.state_dict().items()
                      if k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")}
            model, acts, xd, yd, loss = run_case(cfg, specs, model32, x, y, dtype)
            tensors, meta = to_bundle(cfg, specs, model, before, acts, xd, yd, loss, dtype)
            path = os.path.join(args.out, f"{cfg['case']}.{tag}.safetensors")
            st.save(path, tensors, meta)
            chk = spec_check(cfg, specs, model, before, acts, xd, yd, loss)
            wk = max(chk, key=chk.get)
            if tag == "f64":
                worst = max(worst, chk[wk])
            print(f"{cfg['case']:>20}.{tag}: loss={loss.item():.6f} "
                  f"max|out|={acts[-1].abs().max().item():.2f} "
                  f"formulas-vs-autograd worst={chk[wk]:.1e} ({wk}) size={os.path.getsize(path)}")
            bad = {k: e for k, e in chk.items() if not e <= tol}
            if bad:
                raise RuntimeError(f"documented formulas disagree with autograd: {bad}")

    for cfg in OPT_CASES:
        if wanted is not None and "optim_" + cfg["case"] not in wanted:
            continue
        specs = parse_stack(cfg["layers"])
        g = torch.Generator().manual_seed(cfg["seed"])
        X, Y = draw_xy(cfg, specs, g, lead=(STEPS,))
        model32 = init_model(cfg, specs, g)
        for dtype, tag in ((F32, "f32"), (F64, "f64")):
            tensors, meta = run_optim(cfg, specs, model32, X, Y, dtype)
            path = os.path.join(args.out, f"optim_{cfg['case']}.{tag}.safetensors")
            st.save(path, tensors, meta)
            ls = tensors["losses"]
            print(f"{'optim_' + cfg['case']:>20}.{tag}: loss {ls[0].item():.6f} -> "
                  f"{ls[-1].item():.6f} size={os.path.getsize(path)}")
    print(f"done; worst f64 formulas-vs-autograd relative diff {worst:.2e}")


if __name__ == "__main__":
    main()
