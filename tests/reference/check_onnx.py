#!/usr/bin/env python3
"""The ONNX checker over HpBackprop's exports: every .onnx file under the given folders (or the files given)
gets onnx.checker.check_model with full_check (the graph, every node against its operator's schema at the
model's opset, and shape inference in strict mode) and then onnx.shape_inference.infer_shapes with type
checking in strict mode, whose inferred shapes must agree with the ones the exporter declared (the inputs,
the outputs and every intermediate value); the outputs must keep the symbolic batch dimension N.

A model whose IR version or opset is newer than this onnx package knows (Debian bookworm's python3-onnx
1.12 knows IR 8 and opset 17; the exporter writes up to opset 21, IR 10) is counted as skipped: ONNX
Runtime, in the test suite, is what checks those. Exit 1 if any model fails or none was checked.

    python3 tests/reference/check_onnx.py FOLDER_OR_FILE...
"""
import glob
import os
import sys

import onnx
import onnx.checker
import onnx.defs
import onnx.shape_inference


def files(args):
    for a in args:
        if os.path.isdir(a):
            yield from sorted(glob.glob(os.path.join(a, "**", "*.onnx"), recursive=True))
        else:
            yield a


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in shape.dim]


def check(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    declared = {v.name: dims(v) for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)}
    found = {v.name: dims(v) for v in list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info)}
    for name, d in declared.items():
        if found.get(name) != d:
            raise ValueError(f"value '{name}': declared {d}, inferred {found.get(name)}")
    for o in model.graph.output:
        if dims(o)[0] != "N":
            raise ValueError(f"output '{o.name}' has shape {dims(o)}: the batch dimension is not the symbolic N")
    return model


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    max_opset, max_ir = onnx.defs.onnx_opset_version(), onnx.IR_VERSION
    passed, failed, skipped = 0, 0, 0
    by_opset = {}
    for path in files(sys.argv[1:]):
        head = onnx.load(path)
        opset = max(o.version for o in head.opset_import if o.domain in ("", "ai.onnx"))
        if opset > max_opset or head.ir_version > max_ir:
            skipped += 1
            continue
        try:
            check(path)
            passed += 1
            by_opset[opset] = by_opset.get(opset, 0) + 1
        except Exception as e:  # the checker raises several kinds; every one is a failure here
            failed += 1
            print(f"FAILED {path}: {type(e).__name__}: {e}")
    print(f"onnx {onnx.__version__} (opsets up to {max_opset}, IR up to {max_ir}), full check and strict shape inference: "
          f"checked per opset {dict(sorted(by_opset.items()))}; {skipped} newer than this checker skipped")
    print(f"ONNX checker: {passed} of {passed + failed} models pass, {failed} fail")
    if failed or not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
