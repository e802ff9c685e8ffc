#!/usr/bin/python3
"""Self-test of check_stack_checkpoint.py without the C# side.

Writes checkpoints with st.py from the committed stack bundles (parameters and
running buffers as F32, num_batches_tracked as I64 [], metadata layers/loss), and
checks that
  - PyTorch loads them with load_state_dict(strict=True) and the script exits 0;
  - its eval loss equals an independent numpy forward (eval-mode batch norm from
    the running statistics, docs/stacks.md), relative 1e-12;
  - a fake `eval` command printing the right loss passes, a wrong one fails;
  - broken checkpoints fail: missing tensor, unexpected tensor (a bias on a
    ':nobias' linear), transposed linear weight, num_batches_tracked of shape [1]
    or dtype F32, missing 'layers' metadata.
Usage: /usr/bin/python3 test_check_stack_checkpoint.py [BUNDLE_DIR]   (exit 0 = pass)
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402
from stacks_lib import EPS, parse_stack  # noqa: E402

PY = sys.executable
SCRIPT = os.path.join(HERE, "check_stack_checkpoint.py")
CASES = ["makemore", "makemore_biased", "odd", "deep", "linreg", "logreg",
         "linear_sigmoid_mean", "wide_vocab", "bn_biased_mse", "tanh_mean"]

FAKE_EVAL = r'''
import sys
sys.path.insert(0, {here!r})
from test_check_stack_checkpoint import numpy_eval_loss
a = sys.argv[1:]
assert a[0] == "eval" and a[1] == "--model" and a[3] == "--data", a
print("eval: n=?  loss " + repr(numpy_eval_loss(a[2], a[4]) * {factor!r}) + " (nats)")
'''


def numpy_eval_loss(ckpt, data):
    """Independent float64 eval forward of a stack checkpoint (numpy only)."""
    P, meta = st.load(ckpt)
    D, _ = st.load(data)
    P = {k: v.astype(np.float64) for k, v in P.items()}
    h = D["x"]
    for i, s in enumerate(parse_stack(meta["layers"])):
        k = s["kind"]
        if k == "embedding":
            h = P[f"{i}.weight"][h.astype(np.int64)]
        elif k == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif k == "linear":
            h = h.astype(np.float64) @ P[f"{i}.weight"].T
            if s["bias"]:
                h = h + P[f"{i}.bias"]
        elif k == "batchnorm":
            h = (h - P[f"{i}.running_mean"]) / np.sqrt(P[f"{i}.running_var"] + EPS) \
                * P[f"{i}.weight"] + P[f"{i}.bias"]
        elif k == "tanh":
            h = np.tanh(h)
        elif k == "relu":
            h = np.maximum(h, 0)
        elif k == "sigmoid":
            h = 1 / (1 + np.exp(-h))
    loss = meta["loss"]
    if loss == "cross_entropy":
        y = D["y"].astype(np.int64)
        m = h.max(1, keepdims=True)
        lse = np.log(np.exp(h - m).sum(1)) + m[:, 0]
        return float((lse - h[np.arange(len(y)), y]).mean())
    if loss == "mse":
        return float(((h - D["y"]) ** 2).mean())
    if loss == "bce_with_logits":
        t = D["y"].astype(np.float64)
        return float((np.maximum(h, 0) - h * t + np.log1p(np.exp(-np.abs(h)))).mean())
    return float(h.mean())


def write_pair(bundle, tmp, case, mutate=None):
    T, M = st.load(bundle)
    specs = parse_stack(M["layers"])
    state = {}
    for i, s in enumerate(specs):
        names = {"embedding": ["weight"], "linear": ["weight"] + (["bias"] if s.get("bias") else []),
                 "batchnorm": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
                 }.get(s["kind"], [])
        for nm in names:
            v = T[f"{i}.{nm}"]
            # after.* running buffers: what a checkpoint saved after the step would hold
            if nm in ("running_mean", "running_var"):
                v = T[f"after.{i}.{nm}"]
            state[f"{i}.{nm}"] = v.astype(np.int64) if nm == "num_batches_tracked" \
                else v.astype(np.float32)
    meta = {"layers": M["layers"], "loss": M["loss"]}
    if specs[0]["kind"] == "embedding":
        meta.update(vocab="." + "abcdefghijklmnopqrstuvwxyz"[:specs[0]["V"] - 1],
                    block_size=str(T["x"].shape[1]))
    if mutate:
        mutate(state, meta)
    ck = os.path.join(tmp, f"{case}.ckpt.safetensors")
    da = os.path.join(tmp, f"{case}.data.safetensors")
    st.save(ck, state, meta)
    data = {"x": T["x"]}
    if "y" in T:
        data["y"] = T["y"]
    st.save(da, data, {})
    return ck, da


def run(args):
    r = subprocess.run([PY, SCRIPT] + args, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def main(argv):
    bdir = argv[0] if argv else os.path.join(HERE, "stacks")
    failures = 0

    def expect(what, rc_want, rc, out):
        nonlocal failures
        ok = rc == rc_want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}: exit {rc} (want {rc_want})"
              + ("" if ok else f"\n    {out}"))
        return ok

    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            ck, da = write_pair(os.path.join(bdir, f"{case}.f32.safetensors"), tmp, case)
            rc, out = run([ck, da])
            if expect(f"{case}: strict load + eval", 0, rc, out):
                ref = float(out.rsplit("PyTorch eval loss ", 1)[1].split()[0])
                mine = numpy_eval_loss(ck, da)
                rel = abs(ref - mine) / abs(mine)
                expect(f"{case}: PyTorch eval loss {ref:.9g} vs numpy {mine:.9g} "
                       f"(rel {rel:.1e})", 0, 0 if rel <= 1e-8 else 1, out)
        ck, da = write_pair(os.path.join(bdir, "odd.f32.safetensors"), tmp, "cmd")
        for factor, want in ((1.0, 0), (1.0 + 3e-6, 0), (1.0 + 3e-5, 1)):
            fake = os.path.join(tmp, f"fake{want}{factor}.py")
            with open(fake, "w") as f:
                f.write(FAKE_EVAL.format(here=HERE, factor=factor))
            rc, out = run([ck, da, "--", PY, fake])
            expect(f"fake eval command, loss x {factor!r}", want, rc, out)
        rc, out = run([ck, da, "--", PY, "-c", "print('no number here')"])
        expect("command output without 'loss'", 1, rc, out)

        def drop(s, m):
            del s["1.running_var"]

        def extra_bias(s, m):
            s["3.bias"] = np.zeros(33, np.float32)  # layer 3 is linear:13x33:nobias

        def transpose(s, m):
            s["0.weight"] = np.ascontiguousarray(s["0.weight"].T)

        def nbt_shape(s, m):
            s["1.num_batches_tracked"] = np.zeros(1, np.int64)

        def nbt_dtype(s, m):
            s["1.num_batches_tracked"] = np.float32(0)

        def no_layers(s, m):
            del m["layers"]

        for name, mut in (("missing running_var", drop), ("bias on a nobias linear", extra_bias),
                          ("transposed linear weight", transpose),
                          ("num_batches_tracked shape [1]", nbt_shape),
                          ("num_batches_tracked F32", nbt_dtype), ("no 'layers' metadata", no_layers)):
            ck, da = write_pair(os.path.join(bdir, "odd.f32.safetensors"), tmp, "bad", mut)
            rc, out = run([ck, da])
            expect(f"rejects {name}", 1, rc, out)
            print("      " + " ".join(out.splitlines()[:2])[:200])
    print("PASS" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
