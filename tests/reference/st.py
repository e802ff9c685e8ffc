"""Minimal, dependency-light safetensors reader/writer (numpy only).

File layout:
    8 bytes   little-endian u64 N = header length
    N bytes   UTF-8 JSON header, padded with spaces to a multiple of 8 bytes
              {"name": {"dtype": ..., "shape": [...], "data_offsets": [begin, end]},
               ..., "__metadata__": {str: str}}
    rest      raw little-endian tensor data; offsets are relative to the start
              of this data section.

The writer is deterministic: tensors are laid out in sorted-name order, the JSON
header has sorted keys and compact separators, so equal inputs give equal bytes.
"""

import json
import struct

import numpy as np

# safetensors dtype string <-> numpy little-endian dtype
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_BY_KIND = {(v.kind, v.itemsize): k for k, v in _DTYPES.items()}

METADATA_KEY = "__metadata__"


def _to_numpy(x):
    """Accept numpy arrays, numpy scalars, or anything with .detach()/.numpy() (torch)."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)


def dtype_name(arr):
    """safetensors dtype string of a numpy array."""
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _BY_KIND:
        raise TypeError(f"unsupported dtype {arr.dtype}")
    return _BY_KIND[key]


def dumps(tensors, metadata=None):
    """Serialise {name: array-like} (+ optional {str: str} metadata) to bytes."""
    if METADATA_KEY in tensors:
        raise ValueError(f"'{METADATA_KEY}' is reserved")
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = _to_numpy(tensors[name])
        st_dtype = dtype_name(arr)
        data = np.ascontiguousarray(arr, dtype=_DTYPES[st_dtype]).tobytes(order="C")
        header[name] = {
            "dtype": st_dtype,
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata keys and values must be strings")
        header[METADATA_KEY] = dict(metadata)
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    return struct.pack("<Q", len(hbytes)) + hbytes + b"".join(chunks)


def save(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(dumps(tensors, metadata))


def loads(buf):
    """Parse bytes -> (tensors {name: numpy array}, metadata {str: str}).

    Checks that the header is well formed and that the data regions exactly tile
    the data section (no gaps, no overlaps, no trailing bytes).
    """
    if len(buf) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError("header length exceeds file size")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data = memoryview(buf)[8 + n:]
    metadata = header.pop(METADATA_KEY, {}) or {}
    tensors = {}
    spans = []
    for name, info in header.items():
        st_dtype = info["dtype"]
        if st_dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported dtype {st_dtype}")
        dt = _DTYPES[st_dtype]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        count = 1
        for s in shape:
            count *= s
        if end - begin != count * dt.itemsize or begin < 0 or end > len(data):
            raise ValueError(f"{name}: data_offsets {begin},{end} do not match "
                             f"shape {list(shape)} / dtype {st_dtype}")
        spans.append((begin, end))
        tensors[name] = np.frombuffer(data[begin:end], dtype=dt).reshape(shape).copy()
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise ValueError("data regions overlap or leave gaps")
        pos = end
    if pos != len(data):
        raise ValueError("trailing bytes after the last tensor")
    return tensors, metadata


def load(path):
    with open(path, "rb") as f:
        return loads(f.read())


def dtypes(path):
    """{name: safetensors dtype string} without materialising data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop(METADATA_KEY, None)
    return {k: v["dtype"] for k, v in header.items()}
