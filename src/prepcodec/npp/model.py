"""The neural preprocessing network (NPP) of Lu et al. (TCSVT 2024).

x -> x̄ = clamp(pixel(x) + unet(x, qp), 0, 1). The pixel-wise branch (two 1x1 convs with ReLU) can express colour
transforms cheaply; the U-Net branch adds spatially-varying edits (smoothing what the task model ignores). A
quantization-adaptive layer (a 2-layer MLP on the QP) scales the U-Net's feature channels, so one network serves
every QP. Initialised as the identity (pixel branch = identity, U-Net output conv = 0): training starts from
"no preprocessing", which is what the plain codec does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prepcodec.errors import InputError

QP_CENTER = 34.0  # HEVC QP the conditioning is centred on (middle of the paper's 28..41 range)
QP_SCALE = 10.0


@dataclass(frozen=True)
class NPPConfig:
    """Architecture hyper-parameters; stored next to the weights so a checkpoint rebuilds its own network."""

    base_channels: int = 16
    depth: int = 3  # number of down-sampling steps in the U-Net
    qp_hidden: int = 64


NPP_SIZES: dict[str, NPPConfig] = {
    "small": NPPConfig(base_channels=16, depth=3, qp_hidden=32),  # CPU training
    "paper": NPPConfig(base_channels=35, depth=4, qp_hidden=128),  # 9.49 M parameters (paper: ~9.4 M)
}


class QPAdaptive(nn.Module):
    """Per-channel scales from the QP: s = 2·sigmoid(MLP(qp_norm)), initialised to s = 1."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, feat: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        q = ((qp - QP_CENTER) / QP_SCALE).view(-1, 1).to(feat.dtype)
        scale = 2.0 * torch.sigmoid(self.fc2(F.relu(self.fc1(q))))
        return feat * scale.view(feat.shape[0], -1, 1, 1)


class _Block(nn.Module):
    """Two 3x3 convs with ReLU, then QP-adaptive channel scaling."""

    def __init__(self, cin: int, cout: int, qp_hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.qp = QPAdaptive(cout, qp_hidden)

    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        return self.qp(F.relu(self.conv2(F.relu(self.conv1(x)))), qp)


class NPP(nn.Module):
    """`NPP(x, qp) -> x̄`, x float RGB NCHW in [0, 1] of any size, qp a float or a per-image tensor (HEVC QP)."""

    def __init__(self, config: NPPConfig | None = None) -> None:
        super().__init__()
        self.config = config or NPPConfig()
        c, d, h = self.config.base_channels, self.config.depth, self.config.qp_hidden
        self.pix1 = nn.Conv2d(3, 3, 1)
        self.pix2 = nn.Conv2d(3, 3, 1)
        widths = [c * 2**i for i in range(d + 1)]
        self.down = nn.ModuleList([_Block(3 if i == 0 else widths[i - 1], widths[i], h) for i in range(d)])
        self.bottom = _Block(widths[d - 1], widths[d], h)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(d)])
        self.dec = nn.ModuleList([_Block(2 * widths[i], widths[i], h) for i in range(d)])
        self.out = nn.Conv2d(widths[0], 3, 1)
        self._init_identity()

    def _init_identity(self) -> None:
        with torch.no_grad():
            for conv in (self.pix1, self.pix2):
                conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
                conv.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor, qp: float | torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"NPP expects float RGB images shaped (N, 3, H, W), got {tuple(x.shape)}")
        n, _, height, width = x.shape
        qp_t = torch.as_tensor(qp, dtype=x.dtype, device=x.device).reshape(-1)
        qp_t = qp_t.expand(n) if qp_t.numel() == 1 else qp_t
        if qp_t.numel() != n:
            raise InputError(f"got {qp_t.numel()} QPs for {n} images")
        pixel = self.pix2(F.relu(self.pix1(x)))
        unit = 2**self.config.depth
        ph, pw = (-height) % unit, (-width) % unit
        mode = "reflect" if height > ph and width > pw else "replicate"
        h = F.pad(x, (0, pw, 0, ph), mode=mode) if (ph or pw) else x
        skips = []
        for block in self.down:
            h = block(h, qp_t)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h, qp_t)
        for i in reversed(range(self.config.depth)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], dim=1), qp_t)
        residual = self.out(h)[..., :height, :width]
        return (pixel + residual).clamp(0.0, 1.0)


def create_npp(size: str = "small") -> NPP:
    """Build an NPP by size name ("small" for CPU, "paper" for the paper's ~9.4 M parameters)."""
    if size not in NPP_SIZES:
        raise InputError(f"unknown NPP size {size!r}; known: {', '.join(NPP_SIZES)}")
    return NPP(NPP_SIZES[size])


def config_dict(model: NPP) -> dict:
    """JSON-able config, saved beside weights."""
    return asdict(model.config)
