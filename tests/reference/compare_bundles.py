#!/usr/bin/python3
"""Compare two folders of safetensors bundles (e.g. committed vs regenerated).

Usage: /usr/bin/python3 compare_bundles.py DIR_A DIR_B

For every *.safetensors file in DIR_A the same file must exist in DIR_B with the
same tensor names, shapes, dtypes and metadata (torch_version may differ; a
difference is only reported). Integer tensors must be equal exactly; float
tensors must agree to

    max|a - b| / scale  <=  tol

where a is the DIR_A tensor and
  * scale = max|a|, except for tensors that are zero by construction and hold
    only rounding noise (db1 and dlogit_maxes of the makemore bundles, measured
    against dhprebn and dlogits; the names a stack bundle lists in its
    `near_zero` metadata, measured against the largest gradient of the bundle);
  * tol = 1e-12 for F64; for F32 the larger of 1e-6 and 8x PyTorch's own float32
    error on that tensor (|f32 - f64| / scale against the twin .f64 bundle in
    DIR_A, which holds the same inputs): a float32 result regenerated on another
    CPU (other vector kernels, another BLAS) may round differently, but not by
    more than a few times (8) the error float32 already makes there.
NaN/inf must sit in the same places in both.
Prints one line per bundle; exits 1 on any failure (2 on usage errors).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

TOL = {"F64": 1e-12, "F32": 1e-6, "F16": 1e-3}
TINY = 1e-300
IGNORED_META = {"torch_version"}


# tensors that are zero by construction, and the tensor whose scale they are measured against
NEAR_ZERO = {"db1": "dhprebn", "dlogit_maxes": "dlogits"}


def scale_of(name, tensors, meta):
    """The magnitude a tensor's differences are measured against (see the module doc)."""
    ref = NEAR_ZERO.get(name)
    if ref is not None and ref in tensors:
        return max_abs(tensors[ref])
    near = [x for x in meta.get("near_zero", "").split(",") if x]
    if name in near:
        return max([max_abs(v) for k, v in tensors.items() if k.startswith("grad.") and k not in near] or [TINY])
    return max_abs(tensors[name])


def max_abs(a):
    a64 = np.asarray(a, dtype=np.float64)
    f = np.isfinite(a64)
    return float(np.abs(a64[f]).max()) if f.any() else TINY


def rel_diff(a, b, scale=None):
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    fa, fb = np.isfinite(a64), np.isfinite(b64)
    if not np.array_equal(fa, fb):
        return float("inf")
    # non-finite entries must be identical (same inf sign, or both NaN)
    nf = ~fa
    if nf.any():
        same = (a64[nf] == b64[nf]) | (np.isnan(a64[nf]) & np.isnan(b64[nf]))
        if not same.all():
            return float("inf")
    if not fa.any():
        return 0.0
    diff = np.abs(a64[fa] - b64[fa]).max()
    if scale is None:
        scale = np.abs(a64[fa]).max()
    return float(diff / max(scale, TINY))


def compare_file(pa, pb):
    """Returns (ok, message)."""
    ta, ma = st.load(pa)
    tb, mb = st.load(pb)
    twin = {}
    if pa.endswith(".f32.safetensors") and os.path.exists(pa[:-len(".f32.safetensors")] + ".f64.safetensors"):
        twin, _ = st.load(pa[:-len(".f32.safetensors")] + ".f64.safetensors")
    da, db = st.dtypes(pa), st.dtypes(pb)
    problems = []
    notes = []
    if set(ta) != set(tb):
        missing = sorted(set(ta) - set(tb))
        extra = sorted(set(tb) - set(ta))
        problems.append(f"tensor names differ (missing in B: {missing}, extra in B: {extra})")
    for k in sorted(set(ma) | set(mb)):
        if ma.get(k) != mb.get(k):
            msg = f"metadata {k}: {ma.get(k)!r} vs {mb.get(k)!r}"
            (notes if k in IGNORED_META else problems).append(msg)
    worst_name, worst = None, 0.0
    for name in sorted(set(ta) & set(tb)):
        a, b = ta[name], tb[name]
        if da[name] != db[name]:
            problems.append(f"{name}: dtype {da[name]} vs {db[name]}")
            continue
        if a.shape != b.shape:
            problems.append(f"{name}: shape {list(a.shape)} vs {list(b.shape)}")
            continue
        if da[name] in TOL:
            scale = scale_of(name, ta, ma)
            r = rel_diff(a, b, scale)
            tol = TOL[da[name]]
            if da[name] == "F32" and name in twin and twin[name].shape == a.shape:
                own = rel_diff(twin[name], a, scale)  # PyTorch's own float32 error on this tensor
                if own == own:
                    tol = max(tol, 8 * own)
            if r > tol or not r == r:
                problems.append(f"{name}: relative diff {r:.3e} > {tol:.1e}")
            if r > worst:
                worst_name, worst = name, r
        elif not np.array_equal(a, b):
            problems.append(f"{name}: integer/bool values differ")
    summary = f"{len(ta)} tensors, worst rel diff {worst:.2e}" + (
        f" ({worst_name})" if worst_name else " (all floats bit-equal)")
    if notes:
        summary += "; note: " + "; ".join(notes)
    if problems:
        return False, summary + "\n    " + "\n    ".join(problems)
    return True, summary


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    dir_a, dir_b = argv[1], argv[2]
    if not os.path.isdir(dir_a) or not os.path.isdir(dir_b):
        print("both arguments must be directories", file=sys.stderr)
        return 2
    files = sorted(f for f in os.listdir(dir_a) if f.endswith(".safetensors"))
    if not files:
        print(f"FAIL no .safetensors files in {dir_a}")
        return 1
    failed = 0
    for f in files:
        pb = os.path.join(dir_b, f)
        if not os.path.exists(pb):
            print(f"FAIL {f}: missing in {dir_b}")
            failed += 1
            continue
        try:
            ok, msg = compare_file(os.path.join(dir_a, f), pb)
        except Exception as e:  # malformed file etc.
            ok, msg = False, f"error: {e}"
        print(f"{'ok  ' if ok else 'FAIL'} {f}: {msg}")
        failed += not ok
    extra = sorted(f for f in os.listdir(dir_b)
                   if f.endswith(".safetensors") and f not in files)
    for f in extra:
        print(f"note {f}: only in {dir_b}")
    print(f"{len(files) - failed}/{len(files)} bundles match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
