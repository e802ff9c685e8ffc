"""Layer stacks of docs/stacks.md as torch.nn.Sequential (shared by stack_oracle.py
and check_stack_checkpoint.py).

    parse_stack("embedding:27x10,flatten,linear:30x64,batchnorm:64,tanh,linear:64x27")
    build_sequential(specs, bn_momentum=0.001)   -> torch.nn.Sequential
    loss_value(out, y, loss_name)                -> scalar tensor (no L2 penalty)
    l2_penalty(model, specs, l2)                 -> scalar tensor

state_dict names are those of the Sequential: {i}.weight, {i}.bias,
{i}.running_mean, {i}.running_var, {i}.num_batches_tracked, i = 0-based layer index.
"""

import torch
import torch.nn.functional as F

EPS = 1e-5
DEFAULT_BN_MOMENTUM = 0.001
LOSSES = ("cross_entropy", "mse", "bce_with_logits", "mean")


class StackError(ValueError):
    pass


def _int(tok, what, text):
    try:
        v = int(tok)
    except ValueError:
        raise StackError(f"layer '{text}': {what} '{tok}' is not an integer") from None
    if v <= 0 or str(v) != tok:
        raise StackError(f"layer '{text}': {what} '{tok}' must be a positive integer")
    return v


def _dims(tok, text):
    parts = tok.split("x")
    if len(parts) != 2:
        raise StackError(f"layer '{text}': expected AxB, got '{tok}'")
    return _int(parts[0], "first size", text), _int(parts[1], "second size", text)


def parse_layer(text):
    """One layer of the text form -> dict(kind=..., ...)."""
    parts = text.strip().split(":")
    kind = parts[0]
    if kind == "embedding" and len(parts) == 2:
        V, E = _dims(parts[1], text)
        return dict(kind=kind, V=V, E=E, text=text)
    if kind == "flatten" and len(parts) == 1:
        return dict(kind=kind, text=text)
    if kind == "linear" and len(parts) in (2, 3):
        IN, OUT = _dims(parts[1], text)
        if len(parts) == 3 and parts[2] != "nobias":
            raise StackError(f"layer '{text}': unknown option '{parts[2]}' (only 'nobias')")
        return dict(kind=kind, IN=IN, OUT=OUT, bias=len(parts) == 2, text=text)
    if kind == "batchnorm" and len(parts) in (2, 3):
        Fw = _int(parts[1], "width", text)
        if len(parts) == 3 and parts[2] != "biased":
            raise StackError(f"layer '{text}': unknown option '{parts[2]}' (only 'biased')")
        return dict(kind=kind, F=Fw, biased=len(parts) == 3, text=text)
    if kind in ("tanh", "relu", "sigmoid") and len(parts) == 1:
        return dict(kind=kind, text=text)
    if kind == "layernorm" and len(parts) == 2:
        return dict(kind=kind, F=_int(parts[1], "width", text), text=text)
    if kind == "dropout" and len(parts) == 2:
        try:
            p = float(parts[1])
        except ValueError:
            raise StackError(f"layer '{text}': rate '{parts[1]}' is not a number") from None
        if not 0 <= p < 1:
            raise StackError(f"layer '{text}': rate {p} is not in [0, 1)")
        # the library keeps the rate as a float32: its mask threshold and scale come from that value
        import numpy as np
        return dict(kind=kind, p=float(np.float32(p)), text=text)
    raise StackError(f"unknown layer '{text}'")


def parse_stack(text):
    """Text form -> list of layer dicts, with the widths checked along the stack.
    Shape tracked: (kind, width, embedding width): ('seq', None, E) after an
    embedding, ('flat', None, E) after flatten (width B*E; B is only known from
    the data), ('flat', D, None) after a linear or batch norm."""
    if not text or not text.strip():
        raise StackError("empty stack")
    specs = [parse_layer(t) for t in text.split(",")]
    shape, prev = None, None  # None: whatever the first layer accepts
    for i, s in enumerate(specs):
        where = f"layer {i} '{s['text']}'"
        after = f" after layer {i - 1} '{prev['text']}'" if prev else ""
        k = s["kind"]
        if k == "embedding":
            if i != 0:
                raise StackError(f"{where}: an embedding must be the first layer")
            shape = ("seq", None, s["E"])
        elif k == "flatten":
            if shape is None or shape[0] != "seq":
                raise StackError(f"{where}: flatten needs [n,B,E] input (an embedding){after}")
            shape = ("flat", None, shape[2])  # width B*E, B unknown
        elif shape is not None and shape[0] == "seq":
            raise StackError(f"{where} gets [n,B,E] input{after}; "
                             f"put 'flatten' between them")
        elif k == "linear":
            if shape is not None:
                D, E = shape[1], shape[2]
                if D is not None and D != s["IN"]:
                    raise StackError(f"{where} expects width {s['IN']} but gets {D}{after}")
                if D is None and E is not None and s["IN"] % E != 0:
                    raise StackError(f"{where} expects width {s['IN']}, not a multiple of "
                                     f"the embedding width {E}{after}")
            shape = ("flat", s["OUT"], None)
        elif k in ("batchnorm", "layernorm"):
            if shape is not None and shape[1] is not None and shape[1] != s["F"]:
                raise StackError(f"{where} expects width {s['F']} but gets {shape[1]}{after}")
            if shape is not None and shape[1] is None and s["F"] % shape[2] != 0:
                raise StackError(f"{where} expects width {s['F']}, not a multiple of "
                                 f"the embedding width {shape[2]}{after}")
            shape = ("flat", s["F"], None)
        prev = s
    if shape is not None and shape[0] == "seq":
        raise StackError("stack ends with [n,B,E] (an embedding without flatten)")
    return specs


class BesselBatchNorm(torch.nn.Module):
    """docs/makemore.md §2 batch norm (variance over n-1 in training), with the parameter
    and buffer names of torch.nn.BatchNorm1d so state_dicts are interchangeable.
    Eval: (x - running_mean) / sqrt(running_var + eps) * weight + bias."""

    def __init__(self, num_features, eps=EPS, momentum=DEFAULT_BN_MOMENTUM):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if not self.training:
            return (x - self.running_mean) * (self.running_var + self.eps) ** -0.5 \
                * self.weight + self.bias
        n = x.shape[0]
        if n < 2:
            raise ValueError("Bessel batch norm needs n >= 2 rows in training mode")
        bnmeani = 1 / n * x.sum(0, keepdim=True)
        bndiff = x - bnmeani
        bndiff2 = bndiff ** 2
        bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
        bnvar_inv = (bnvar + self.eps) ** -0.5
        bnraw = bndiff * bnvar_inv
        with torch.no_grad():
            m = self.momentum
            # same expression order as PyTorch's CPU batch-norm update
            self.running_mean.copy_(m * bnmeani.squeeze(0) + (1 - m) * self.running_mean)
            self.running_var.copy_(m * bnvar.squeeze(0) + (1 - m) * self.running_var)
            self.num_batches_tracked.add_(1)
        return self.weight * bnraw + self.bias

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, bessel"


class MaskDropout(torch.nn.Module):
    """torch.nn.Dropout(p) with the library's mask: y = x * mask / (1 - p) in training,
    the identity in eval. The mask is philox_mask(x.numel(), p, seed, layer, step) with
    `seed` and `step` set by the caller, so PyTorch and the library drop the same
    elements; the last mask is kept in `last_mask` (uint8, x's shape)."""

    def __init__(self, p, layer):
        super().__init__()
        self.p, self.layer = p, layer
        self.seed, self.step = 42, 0
        self.last_mask = None

    def forward(self, x):
        if not self.training:
            return x
        import numpy as np
        m = philox_mask(x.numel(), self.p, self.seed, self.layer, self.step).reshape(tuple(x.shape))
        self.last_mask = m
        return x * torch.from_numpy(m.astype(np.float64)).to(x.dtype) * (1.0 / (1.0 - self.p))


# Philox4x32-10 (Salmon et al., SC'11), vectorised with numpy: the dropout masks of
# docs/stacks.md. Element i of dropout layer `layer` at optimiser step `step` is kept
# when word i % 4 of philox(counter=(i//4, 0, step_lo, step_hi), key=(seed, layer)) is
# at least round(p * 2^32) (clamped to 2^32 - 1).
_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_U32 = 0xFFFFFFFF


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Vectorised over numpy uint64 arrays holding 32-bit values; returns 4 arrays."""
    import numpy as np
    c = [np.asarray(v, dtype=np.uint64) & _U32 for v in (c0, c1, c2, c3)]
    k0, k1 = int(k0) & _U32, int(k1) & _U32
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & _U32, (k1 + _W1) & _U32
        p0 = c[0] * np.uint64(_M0)
        p1 = c[2] * np.uint64(_M1)
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(_U32)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(_U32)
        c = [hi1 ^ c[1] ^ np.uint64(k0), lo1, hi0 ^ c[3] ^ np.uint64(k1), lo0]
    return c


def philox_mask(count, p, seed, layer, step):
    """uint8 keep-mask (1 kept) of `count` elements (docs/stacks.md)."""
    import numpy as np
    groups = (count + 3) // 4
    g = np.arange(groups, dtype=np.uint64)
    words = philox4x32_10(g, np.zeros_like(g), np.full_like(g, step & _U32), np.full_like(g, step >> 32), seed, layer)
    flat = np.stack(words, axis=1).reshape(-1)[:count]
    threshold = min(_U32, int(round(p * 4294967296.0)))
    return (flat >= np.uint64(threshold)).astype(np.uint8)


def build_sequential(specs, bn_momentum=DEFAULT_BN_MOMENTUM, mask_dropout=False):
    """The Sequential of a stack; dropout layers are torch.nn.Dropout, or MaskDropout
    (masks set from outside) with mask_dropout."""
    mods = []
    for s in specs:
        k = s["kind"]
        if k == "embedding":
            mods.append(torch.nn.Embedding(s["V"], s["E"]))
        elif k == "flatten":
            mods.append(torch.nn.Flatten(1))
        elif k == "linear":
            mods.append(torch.nn.Linear(s["IN"], s["OUT"], bias=s["bias"]))
        elif k == "batchnorm":
            if s["biased"]:
                mods.append(torch.nn.BatchNorm1d(s["F"], eps=EPS, momentum=bn_momentum))
            else:
                mods.append(BesselBatchNorm(s["F"], eps=EPS, momentum=bn_momentum))
        elif k == "layernorm":
            mods.append(torch.nn.LayerNorm(s["F"], eps=EPS))
        elif k == "dropout":
            mods.append(MaskDropout(s["p"], len(mods)) if mask_dropout else torch.nn.Dropout(s["p"]))
        else:
            mods.append({"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU,
                         "sigmoid": torch.nn.Sigmoid}[k]())
    return torch.nn.Sequential(*mods)


def loss_value(out, y, loss_name):
    """Mean loss of docs/stacks.md (without the L2 penalty)."""
    if loss_name == "cross_entropy":
        return F.cross_entropy(out, y)
    if loss_name == "mse":
        return F.mse_loss(out, y)
    if loss_name == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(out, y)
    if loss_name == "mean":
        return out.mean()
    raise StackError(f"unknown loss '{loss_name}' (one of {', '.join(LOSSES)})")


def l2_penalty(model, specs, l2):
    """l2 * sum(W^2) over every linear layer's weight (docs/stacks.md)."""
    total = None
    for i, s in enumerate(specs):
        if s["kind"] == "linear":
            t = (model[i].weight ** 2).sum()
            total = t if total is None else total + t
    return None if total is None or l2 == 0 else l2 * total
