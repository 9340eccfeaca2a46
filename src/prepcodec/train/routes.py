"""Gradient routes through the codec: how the NPP's output x̄ becomes (x̂, bits) with a gradient back to x̄.

| route   | forward values           | image gradient     | rate gradient | what it is                              |
|---------|--------------------------|--------------------|---------------|-----------------------------------------|
| `real`  | real codec (x̂, bits)     | proxy              | proxy         | the paper's method (default)            |
| `proxy` | proxy (x̂, bits)          | proxy              | proxy         | the paper's "NPP+Minnen" ablation       |
| `ste`   | real codec (x̂, bits)     | identity (x̂ ≈ x̄)   | proxy         | straight-through image, learned rate    |

Every route that uses the real codec goes through `bridge.substitute`, the one straight-through substitution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from prepcodec.errors import InputError
from prepcodec.train.bridge import CodecBridge, substitute

ROUTES = ("real", "proxy", "ste")
RealFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class CodecPath(nn.Module):
    """`path(x̄, qp) -> (x̂, bits per image)` along one of `ROUTES`; the proxy is frozen (no parameter grads)."""

    def __init__(self, route: str, proxy: nn.Module, real: RealFn | None) -> None:
        super().__init__()
        if route not in ROUTES:
            raise InputError(f"unknown gradient route {route!r}; choose from {', '.join(ROUTES)}")
        if route != "proxy" and real is None:
            raise InputError(f"route {route!r} needs the real codec")
        self.route = route
        self.proxy = proxy.eval()
        for p in self.proxy.parameters():
            p.requires_grad_(False)
        self.real = real
        self._bridge = CodecBridge(self.proxy, real) if real is not None else None

    def train(self, mode: bool = True) -> CodecPath:  # the proxy stays in eval mode (hard rounding, as evaluated)
        super().train(mode)
        self.proxy.eval()
        return self

    def forward(self, x_bar: torch.Tensor, qp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.route == "real":
            return self._bridge(x_bar, qp)
        x_proxy, bits_proxy = self.proxy(x_bar, qp)
        if self.route == "proxy":
            return x_proxy, bits_proxy
        with torch.no_grad():
            x_real, bits_real = self.real(x_bar.detach(), qp)
        return substitute(x_bar, x_real), substitute(bits_proxy, bits_real)


def real_codec(pool, codec: str, preset: str) -> RealFn:
    """The real codec's batch round-trip at HEVC-axis QPs, mapped to the codec's own level."""
    from prepcodec.codecs.registry import get_codec

    c = get_codec(codec)

    def run(x: torch.Tensor, qp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = [c.from_hevc_qp(float(q)) for q in qp.reshape(-1).tolist()]
        return pool.roundtrip_tensor(codec, x, levels, preset=preset)

    return run
