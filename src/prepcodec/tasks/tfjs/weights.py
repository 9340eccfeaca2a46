"""Decode the binary weight shards of a TF.js model per its `weightsManifest`.

Each manifest group lists shard files (concatenated in order) and the weights packed in them, back to back.
A weight may be stored quantised: `quantization.dtype` float16 (IEEE half), or uint8/uint16 affine
(`value = q * scale + min`); it is decoded to its `original_dtype` (float32 here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prepcodec.errors import InputError

_PLAIN = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "int64": np.int64}
_QUANT = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def decode_weight(buf: memoryview | bytes, offset: int, spec: dict) -> tuple[np.ndarray, int]:
    """Decode one manifest entry starting at `offset`; returns (array, bytes consumed)."""
    shape = [int(s) for s in spec.get("shape", [])]
    count = int(np.prod(shape)) if shape else 1
    quant = spec.get("quantization")
    name = spec.get("name", "?")
    if quant:
        qdtype = _QUANT.get(quant.get("dtype", ""))
        if qdtype is None:
            raise InputError(f"weight {name}: unsupported quantization dtype {quant.get('dtype')!r}")
        nbytes = count * np.dtype(qdtype).itemsize
        raw = np.frombuffer(buf, dtype=qdtype, count=count, offset=offset)
        if qdtype is np.float16:
            arr = raw.astype(np.float32)
        else:
            arr = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
        target = _PLAIN.get(quant.get("original_dtype", spec["dtype"]), np.float32)
        if target is np.int32:
            arr = np.rint(arr)
        arr = arr.astype(target)
    else:
        dtype = _PLAIN.get(spec["dtype"])
        if dtype is None:
            raise InputError(f"weight {name}: unsupported dtype {spec['dtype']!r}")
        nbytes = count * np.dtype(dtype).itemsize
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).copy()
    return arr.reshape(shape), nbytes


def load_weights(manifest: list[dict], folder: str | Path) -> dict[str, np.ndarray]:
    """All weights of a manifest, by name; InputError on a missing or short shard."""
    folder = Path(folder)
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            data = b"".join((folder / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise InputError(f"weight shard missing: {exc}") from exc
        offset = 0
        for spec in group["weights"]:
            try:
                arr, used = decode_weight(data, offset, spec)
            except ValueError as exc:  # np.frombuffer past the end of the shard
                raise InputError(f"weight shard in {folder} is truncated at {spec.get('name')}") from exc
            out[spec["name"]] = arr
            offset += used
        if offset != len(data):
            raise InputError(f"weight shards {group['paths']} hold {len(data)} bytes, manifest says {offset}")
    return out
