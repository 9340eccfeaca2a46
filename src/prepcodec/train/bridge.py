"""The one straight-through substitution that lets a network learn through a non-differentiable real codec.

Forward values come from the real codec (its decoded image and its real bits); gradients come from the proxy:
    x̂ = x̂_proxy + (x̂_codec − x̂_proxy).detach(),   bits = bits_proxy + (bits_codec − bits_proxy).detach()
Everything that trains through a codec goes through `substitute` / `CodecBridge`, so there is exactly one place
where this trick lives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ProxyFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def substitute(proxy_value: torch.Tensor, real_value: torch.Tensor) -> torch.Tensor:
    """Return a tensor whose value is `real_value` and whose gradient is that of `proxy_value`."""
    real_value = real_value.to(device=proxy_value.device, dtype=proxy_value.dtype)
    return proxy_value + (real_value - proxy_value).detach()


class CodecBridge:
    """Real codec forward, proxy backward: `bridge(x, qp) -> (x̂, bits per image)`.

    `proxy(x, qp) -> (x̂_proxy, bits_proxy)` is any differentiable stand-in (learned hyperprior or analytic JPEG);
    `real(x, qp) -> (x̂_codec, bits_codec)` is the real codec's batch round-trip, e.g.
    `functools.partial(pool.roundtrip_tensor, "hevc", preset="fast")` with levels mapped from the HEVC QP.
    """

    def __init__(self, proxy: ProxyFn, real: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        self.proxy = proxy
        self.real = real

    def __call__(self, x: torch.Tensor, qp: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        qp_t = torch.as_tensor(qp, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        x_proxy, bits_proxy = self.proxy(x, qp_t)
        with torch.no_grad():
            x_real, bits_real = self.real(x.detach(), qp_t)
        return substitute(x_proxy, x_real), substitute(bits_proxy, bits_real)
