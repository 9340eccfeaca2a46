"""`prepcodec export onnx`: a trained NPP as an ONNX graph (QP as an input, dynamic size) that onnxruntime runs.

The TorchScript-based exporter (`dynamo=False`) is used: it needs only the `onnx` package, while the dynamo
exporter also pulls `onnxscript`, whose ml-dtypes wants numpy 2 (compressai pins numpy < 2). The graph is traced
once at 224x224; the NPP's shape arithmetic (padding to multiples of 32, the task trunk's "SAME" padding) is
written with integer ops so the trace stays valid at every size, which `verify_parity` checks on real photos at
several sizes before the file is kept. The file carries prepcodec metadata (`export.onnx_npp`), so `encode --npp
X.onnx` refuses an ONNX file of another model.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from prepcodec.errors import BackendUnavailable, InputError
from prepcodec.export.onnx_npp import INPUTS, ONNX_FORMAT, ONNX_VERSION, OUTPUT, OnnxNPP

OPSET = 17
TRACE_SIDE = 224
PARITY_TOL = 1e-4  # max |torch - onnxruntime| on [0, 1] outputs


class _Graph(torch.nn.Module):
    """(image, qp) -> preprocessed, the signature the ONNX file exposes."""

    def __init__(self, npp: torch.nn.Module) -> None:
        super().__init__()
        self.npp = npp

    def forward(self, image: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        return self.npp(image, qp)


def _metadata(model_proto, meta: dict[str, str]) -> None:
    for k, v in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v


def export_onnx(spec: str, out: str | os.PathLike, check_images: list[np.ndarray] | None = None) -> dict:
    """Export the NPP `spec` (shipped name or .pt) to `out` (.onnx), verify it against torch, write atomically.

    Returns {"path", "name", "weights_sha256", "parity": [(w, h, max_abs_diff), ...]}.
    """
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("ONNX export needs the onnx package: pip install 'onnx==1.23.2' "
                                 "'ml_dtypes==0.5.4' (ml_dtypes 0.5 keeps numpy < 2)") from None
    from prepcodec.atomic import atomic_path
    from prepcodec.npp.zoo import load_npp

    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"an ONNX export is written as .onnx, got {out}")
    net = load_npp(spec)
    model = net.model.eval()
    if model.config.roi:
        from prepcodec.tasks.registry import task_kind

        if task_kind(model.config.roi) != "classification":
            raise InputError(f"npp:{net.name} keeps {model.config.roi}'s boxes: the box decoding (top-k, NMS) has "
                             "no ONNX graph here; run this network with torch")
        if model.config.evidence_levels:
            raise InputError(f"npp:{net.name} amplifies the classifier's evidence along its input gradient (a "
                             "backward pass), which has no ONNX graph here; run this network with torch")
    example = (torch.rand(1, 3, TRACE_SIDE, TRACE_SIDE, generator=torch.Generator().manual_seed(0)),
               torch.tensor([34.0]))
    dyn = {"image": {0: "n", 2: "height", 3: "width"}, "qp": {0: "n"}, OUTPUT: {0: "n", 2: "height", 3: "width"}}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(_Graph(model), example, str(tmp), dynamo=False, input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        _metadata(proto, {"format": ONNX_FORMAT, "version": str(ONNX_VERSION), "name": net.name,
                          "weights_sha256": net.sha256, "config": json.dumps(asdict(model.config)),
                          "qp_axis": "hevc"})
        onnx.save(proto, str(tmp))
        parity = verify_parity(model, Path(tmp), check_images)
    return {"path": str(out), "name": net.name, "weights_sha256": net.sha256, "parity": parity}


def default_check_images() -> list[np.ndarray]:
    """The bundled photos (300x451 … 512x768) and an odd-sized crop: sizes the 224 trace never saw."""
    from prepcodec.data.images import load_image
    from prepcodec.data.samples import sample_paths

    images = [load_image(p) for p in sample_paths()]
    return [*images, np.ascontiguousarray(images[0][:201, :317])]


def verify_parity(model: torch.nn.Module, path: Path, images: list[np.ndarray] | None = None,
                  qps: tuple[float, ...] = (22.0, 34.0, 44.0)) -> list[tuple[int, int, float]]:
    """Max |torch − onnxruntime| per image (uint8 RGB, any size >= 64); InputError over PARITY_TOL."""
    runner = OnnxNPP(path)
    if not images:
        images = default_check_images()
    rows = []
    for rgb in images:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
        worst = 0.0
        for qp in qps:
            with torch.no_grad():
                ref = model(x, qp).numpy()
            got = runner.run(x.numpy(), np.array([qp], np.float32))
            worst = max(worst, float(np.abs(ref - got).max()))
        rows.append((int(rgb.shape[1]), int(rgb.shape[0]), worst))
        if worst > PARITY_TOL:
            raise InputError(f"ONNX export differs from torch by {worst:.2e} (> {PARITY_TOL:g}) on a "
                             f"{rgb.shape[1]}x{rgb.shape[0]} image; not written")
    return rows
