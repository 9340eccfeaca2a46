"""An exported NPP run by onnxruntime: uint8 RGB + QP -> uint8 RGB, without torch (the edge install).

The ONNX file is what `prepcodec export onnx` writes (`export.onnx_export`): inputs `image` (N, 3, H, W) float in
[0, 1] and `qp` (N,) float, output `preprocessed`, dynamic N/H/W, and prepcodec metadata (format, version, the
network's name and weights hash). A file without that metadata (another model, a truncated download) is refused in
one line before anything runs. Nothing here imports torch: a camera or edge box needs numpy, onnxruntime and the
codec backends only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prepcodec.errors import BackendUnavailable, InputError
from prepcodec.filehash import file_sha256

ONNX_FORMAT = "prepcodec-npp-onnx"
ONNX_VERSION = 1
INPUTS = ("image", "qp")
OUTPUT = "preprocessed"
MIN_SIDE = 64  # the graph pads to multiples of 32 with reflection, which needs an image larger than the pad


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("running an .onnx NPP needs onnxruntime: pip install onnxruntime "
                                 "(or the light install, docs/deploy.md)") from None
    return onnxruntime


def read_metadata(session) -> dict:
    """The prepcodec metadata of a loaded session; InputError when the file is not a prepcodec NPP export."""
    try:
        meta = session.get_modelmeta().custom_metadata_map
    except UnicodeDecodeError:  # a damaged metadata string (found by tests/test_fuzz.py)
        raise InputError("its metadata is not valid UTF-8 (a damaged file)") from None
    if meta.get("format") != ONNX_FORMAT:
        raise InputError("not a prepcodec NPP export (no prepcodec metadata): write one with "
                         "`prepcodec export onnx --npp NAME OUT.onnx`")
    if meta.get("version") != str(ONNX_VERSION):
        raise InputError(f"prepcodec ONNX export version {meta.get('version')!r}; this version reads {ONNX_VERSION}")
    names = tuple(i.name for i in session.get_inputs())
    outs = tuple(o.name for o in session.get_outputs())
    if names != INPUTS or outs != (OUTPUT,):
        raise InputError(f"inputs {names} / outputs {outs} are not an NPP's {INPUTS} / ({OUTPUT!r},)")
    return meta


class OnnxNPP:
    """Callable `(rgb uint8 HxWx3, qp) -> rgb uint8`, the same interface `encode` gives a torch NPP preprocessor."""

    qp_aware = True
    is_identity = False

    def __init__(self, path: str | os.PathLike) -> None:
        ort = _runtime()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign protobuf
            raise InputError(f"{self.path}: not a readable ONNX model ({type(exc).__name__})") from None
        try:
            self.meta = read_metadata(self.session)
        except InputError as exc:
            raise InputError(f"{self.path}: {exc}") from None
        self.sha256 = file_sha256(self.path)
        self.spec = f"npp:{self.meta.get('name', self.path.stem)}@onnx-{self.sha256[:12]}"

    def run(self, x: np.ndarray, qp: np.ndarray) -> np.ndarray:
        """Float (N, 3, H, W) in [0, 1] and (N,) QPs -> float (N, 3, H, W) in [0, 1]."""
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise InputError(f"the ONNX NPP needs images of at least {MIN_SIDE} px a side, got {w}x{h}")
        feed = {"image": np.ascontiguousarray(x, np.float32), "qp": np.ascontiguousarray(qp, np.float32)}
        try:
            out = self.session.run([OUTPUT], feed)[0]
        except Exception as exc:  # a graph that loads but cannot run (a damaged file): onnxruntime's own types
            raise InputError(f"{self.path}: onnxruntime could not run it ({type(exc).__name__})") from None
        if out.shape != x.shape:
            raise InputError(f"{self.path}: output {out.shape} does not match the input {x.shape}")
        return out

    def __call__(self, rgb: np.ndarray, qp: float | None = None) -> np.ndarray:
        if qp is None:
            raise InputError(f"{self.spec} is QP-aware: give the HEVC-axis QP it preprocesses for")
        x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)
        y = self.run(x, np.array([qp], np.float32))
        return np.rint(np.clip(y[0], 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0).copy()

    def __repr__(self) -> str:
        return f"OnnxNPP({self.spec!r})"
