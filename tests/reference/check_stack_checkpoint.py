#!/usr/bin/python3
"""PyTorch loads an HpBackprop layer-stack checkpoint and agrees with its eval loss.

Usage: check_stack_checkpoint.py CHECKPOINT.safetensors DATA.safetensors [-- COMMAND...]

CHECKPOINT: tensors under the state_dict names of docs/stacks.md ({i}.weight,
{i}.bias, {i}.running_mean, {i}.running_var, {i}.num_batches_tracked) and metadata
`layers` (text form), `loss` (and for word models `vocab`, `block_size`, which are
only reported). Optional metadata `bn_momentum` is ignored (no effect in eval).
Floats may be F32 or F64 (computed in float64 here); num_batches_tracked must be
I64 of shape [] (checked here: torch itself would also accept shape [1]).

DATA: safetensors with `x` (I32/I64 [n,B] ids when the first layer is an embedding,
else F32/F64 [n,D]) and `y` (I32/I64 [n] for cross_entropy, F32/F64 [n,k] for mse
and bce_with_logits, absent for mean), as in the grads bundles.

Steps:
 1. build the torch.nn.Sequential that `layers` means (stacks_lib.py), in float64;
 2. load_state_dict(checkpoint, strict=True): fails on any missing, unexpected or
    mis-shaped tensor, so success proves PyTorch takes the file as it is;
 3. eval mode (batch norm uses the running statistics; the Bessel layer's eval is
    (x - running_mean) / sqrt(running_var + eps) * weight + bias), mean loss on DATA
    (the data loss only: no L2 penalty);
 4. with `-- COMMAND...`: run `COMMAND eval --model CHECKPOINT --data DATA`, take the
    first number after the word `loss` in its stdout and compare, relative
    tolerance 1e-5. Without a command only steps 1-3 run (the PyTorch half).
Exit 0 on success, 1 on failure, 2 on usage errors.
"""

import os
import re
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from stacks_lib import build_sequential, loss_value, parse_stack  # noqa: E402

RTOL = 1e-5
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_LOSS_RE = re.compile(r"\bloss\b.*?(" + _FLOAT + ")", re.IGNORECASE | re.DOTALL)


def _torch(a):
    a = np.ascontiguousarray(a)
    t = torch.from_numpy(a)
    return t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)


def load_model(path):
    """-> (model in eval mode, float64; metadata). Raises on load_state_dict errors."""
    tensors, meta = st.load(path)
    for key in ("layers", "loss"):
        if key not in meta:
            raise ValueError(f"{path}: metadata has no '{key}'")
    specs = parse_stack(meta["layers"])
    dts = st.dtypes(path)
    for k, dt in sorted(dts.items()):
        want = ("I64",) if k.endswith(".num_batches_tracked") else ("F32", "F64")
        if dt not in want:
            raise ValueError(f"tensor '{k}' is {dt}, expected {' or '.join(want)}")
        # torch would also take shape [1] here (a legacy path in load_state_dict);
        # docs/stacks.md says an I64 scalar, shape [].
        if k.endswith(".num_batches_tracked") and tensors[k].shape != ():
            raise ValueError(f"tensor '{k}' has shape {list(tensors[k].shape)}, expected []")
    model = build_sequential(specs).to(torch.float64)
    state = {k: _torch(v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def torch_loss(model, meta, data_path):
    tensors, _ = st.load(data_path)
    if "x" not in tensors:
        raise ValueError(f"{data_path}: no tensor 'x'")
    x = _torch(tensors["x"])
    y = _torch(tensors["y"]) if "y" in tensors else None
    if (y is None) != (meta["loss"] == "mean"):
        raise ValueError(f"{data_path}: 'y' must be present unless the loss is 'mean'")
    with torch.no_grad():
        return loss_value(model(x), y, meta["loss"]).item(), x.shape[0]


def parse_loss(stdout):
    m = _LOSS_RE.search(stdout)
    return float(m.group(1)) if m else None


def main(argv):
    if "--" in argv:
        cut = argv.index("--")
        args, cmd = argv[:cut], argv[cut + 1:]
        if not cmd:
            print(__doc__, file=sys.stderr)
            return 2
    else:
        args, cmd = argv, None
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ckpt, data = args
    torch.set_num_threads(1)
    try:
        model, meta = load_model(ckpt)
    except Exception as e:  # strict load_state_dict, parse errors, bad file
        print(f"checkpoint {ckpt}: PyTorch cannot load it: {e}")
        return 1
    extra = "".join(f", {k}={meta[k]!r}" for k in ("vocab", "block_size") if k in meta)
    try:
        ref, n = torch_loss(model, meta, data)
    except Exception as e:
        print(f"checkpoint {ckpt}: PyTorch loaded it (strict) but cannot evaluate {data}: {e}")
        return 1
    print(f"checkpoint {ckpt}: load_state_dict(strict=True) OK; layers={meta['layers']!r}, "
          f"loss={meta['loss']}{extra}; PyTorch eval loss {ref:.9g} over {n} rows")
    if cmd is None:
        return 0
    full = cmd + ["eval", "--model", ckpt, "--data", data]
    out = subprocess.run(full, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"command failed (exit {out.returncode}): {' '.join(full)}\n{out.stdout}{out.stderr}")
        return 1
    ours = parse_loss(out.stdout)
    if ours is None:
        print(f"no number after 'loss' in the command's output:\n{out.stdout}")
        return 1
    rel = abs(ours - ref) / max(abs(ref), 1e-300)
    ok = rel <= RTOL
    print(f"hpbackprop eval loss {ours:.9g}; relative difference {rel:.2e} "
          f"(tolerance {RTOL:.0e}): {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
