"""A QP-conditioned mean-scale hyperprior (CompressAI layers) that imitates one real codec across HEVC QP 22-47.

One network covers the whole QP range: the latent is multiplied by a per-channel gain before rounding and divided
by it after (the variable-rate "gain unit" idea of CompressAI's `latent_codecs/gain`), but the gain is a
continuous function of QP instead of a table of discrete levels. Its log starts as HEVC's own step-size law
(the quantiser step doubles every 6 QP) plus a small learned per-channel correction, so a freshly initialised
proxy already spends fewer bits at higher QP and training only has to learn the codec-specific shape.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# compressai imports torch_geometric, whose module-level `torch.jit.script` calls warn on every start with this
# torch; the warning is about their code, not ours, and would print before every command that loads a proxy
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from compressai.models.google import MeanScaleHyperprior
    from compressai.ops import quantize_ste

from prepcodec.errors import InputError

QP_MIN, QP_MAX = 22.0, 47.0
STRIDE = 64  # g_a downsamples 16x, h_a another 4x


@dataclass(frozen=True)
class ProxyConfig:
    """Everything needed to rebuild a proxy (stored next to its weights)."""

    codec: str = "hevc"
    size: str = "small"
    N: int = 64
    M: int = 96
    qp_min: float = QP_MIN
    qp_max: float = QP_MAX
    arch: str = "gdn"  # "gdn": CompressAI's GDN transforms; "dct": block DCT (proxy.block_transform)
    block: int = 16  # "dct" only: luma block side (chroma blocks are half of it on the 4:2:0 planes)

    def to_dict(self) -> dict:
        return asdict(self)


SIZES: dict[str, dict] = {
    "small": {"N": 64, "M": 96},  # GDN transforms, trains on CPU
    "large": {"N": 128, "M": 192},  # GDN transforms, for a GPU
    "dct": {"N": 64, "M": 384, "arch": "dct", "block": 16},  # block-DCT transforms: 256 luma + 2 x 64 chroma
}


def make_config(codec: str = "hevc", size: str = "small") -> ProxyConfig:
    """Config for a named size; InputError for an unknown one."""
    if size not in SIZES:
        raise InputError(f"unknown proxy size {size!r}; choose from {', '.join(SIZES)}")
    return ProxyConfig(codec=codec, size=size, **SIZES[size])


class QPGain(nn.Module):
    """QP -> per-channel log gain: HEVC's step law (log2 step = (qp-4)/6) plus a zero-initialised MLP correction."""

    def __init__(self, channels: int, qp_min: float, qp_max: float, hidden: int = 32):
        super().__init__()
        self.qp_min, self.qp_max = qp_min, qp_max
        self.offset = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), -math.log(2.0) / 6.0))
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, qp: torch.Tensor) -> torch.Tensor:
        """(N,) QP -> (N, C, 1, 1) log gain."""
        mid = 0.5 * (self.qp_min + self.qp_max)
        t = (qp - mid) / (self.qp_max - self.qp_min)  # ~[-0.5, 0.5]
        log_gain = self.offset + self.slope * (qp - mid)[:, None] + self.mlp(t[:, None])
        return log_gain[:, :, None, None]


class ProxyCodec(MeanScaleHyperprior):
    """`proxy(x, qp) -> (x_hat, bits per image)`; differentiable w.r.t. x in both train and eval mode.

    Training mode: additive uniform noise for the rate terms (smooth), straight-through rounding for the decoder.
    Eval mode: hard rounding everywhere (straight-through gradients), so bits and x_hat are those of an actual
    quantised latent. Bits are -log2 likelihoods of y and z summed over the part of the latent that covers the
    image (the replicate padding to a multiple of 64 is not charged).
    """

    def __init__(self, config: ProxyConfig):
        super().__init__(N=config.N, M=config.M)
        self.config = config
        self.gain = QPGain(config.M, config.qp_min, config.qp_max)
        self.hyper_gain = QPGain(config.N, config.qp_min, config.qp_max)
        with torch.no_grad():  # the hyper-latent needs only a weak QP dependence to start
            self.hyper_gain.slope.mul_(0.25)
        # the bottleneck's quantiles only serve real entropy coding, which a proxy never does (and DDP
        # rejects parameters that get no gradient)
        self.entropy_bottleneck.quantiles.requires_grad_(False)

    def _qp_tensor(self, qp: float | torch.Tensor, n: int, ref: torch.Tensor) -> torch.Tensor:
        qp_t = torch.as_tensor(qp, dtype=ref.dtype, device=ref.device).reshape(-1)
        if qp_t.numel() == 1:
            qp_t = qp_t.expand(n)
        if qp_t.numel() != n:
            raise InputError(f"got {qp_t.numel()} QPs for {n} images")
        if bool(((qp_t < self.config.qp_min - 1e-6) | (qp_t > self.config.qp_max + 1e-6)).any()):
            raise InputError(f"QP must lie in [{self.config.qp_min:g}, {self.config.qp_max:g}]")
        return qp_t

    def forward(self, x: torch.Tensor, qp: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"proxy expects (N,3,H,W) RGB, got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        qp_t = self._qp_tensor(qp, n, x)
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x

        y = self.g_a(xp) * torch.exp(self.gain(qp_t))  # g_a: 16x down
        z = self.h_a(y) * torch.exp(self.hyper_gain(qp_t))
        z_q = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else quantize_ste(z)
        z_lik, _, _ = self.entropy_bottleneck._likelihood(
            z_q.permute(1, 0, 2, 3).reshape(z.shape[1], 1, -1)
        )
        z_lik = self.entropy_bottleneck.likelihood_lower_bound(z_lik)
        z_lik = z_lik.reshape(z.shape[1], n, *z.shape[2:]).permute(1, 0, 2, 3)
        z_hat = quantize_ste(z) if self.training else z_q
        params = self.h_s(z_hat * torch.exp(-self.hyper_gain(qp_t)))
        scales, means = params.chunk(2, 1)
        y_hat = quantize_ste(y - means) + means
        y_rate = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        y_lik = self.gaussian_conditional.likelihood_lower_bound(
            self.gaussian_conditional._likelihood(y_rate, scales, means)
        )
        x_hat = self.synthesis(y_hat * torch.exp(-self.gain(qp_t)), qp_t)[:, :, :h, :w].clamp(0, 1)
        hy, wy = -(-h // 16), -(-w // 16)
        hz, wz = -(-h // 64), -(-w // 64)
        bits = -(torch.log2(y_lik[:, :, :hy, :wy]).sum((1, 2, 3)) + torch.log2(z_lik[:, :, :hz, :wz]).sum((1, 2, 3)))
        return x_hat, self.calibrate_bits(bits, qp_t)

    def synthesis(self, y: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """Dequantised latent -> image (padded size); a hook for variants with QP-aware decoders."""
        return self.g_s(y)

    def calibrate_bits(self, bits: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """Entropy-model bits -> reported bits; the GDN proxy reports its entropy estimate as it is."""
        return bits


def build_proxy(config: ProxyConfig) -> ProxyCodec:
    """A freshly initialised proxy of the architecture `config.arch` names."""
    if config.arch == "gdn":
        return ProxyCodec(config)
    if config.arch == "dct":
        from prepcodec.proxy.block_transform import DctProxyCodec

        return DctProxyCodec(config)
    raise InputError(f"unknown proxy architecture {config.arch!r}")


def create_proxy(codec: str = "hevc", size: str = "small") -> ProxyCodec:
    """A freshly initialised proxy of a named size."""
    return build_proxy(make_config(codec, size))

