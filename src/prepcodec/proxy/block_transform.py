"""A mean-scale hyperprior whose transforms are HEVC's: YCbCr 4:2:0 and an orthonormal block DCT.

Why: a GDN proxy has to *learn* a transform as good as x265's from scratch, and on the compute we have it stays a
weaker codec (1-6 dB below x265 at equal QP, docs/proxy.md), so its RD curve sits far from the real one. HEVC is a
block-transform codec whose quantiser step doubles every 6 QP; a proxy built from the same parts gets the distortion
side right by construction and only has to learn what is codec-specific:

- analysis: RGB -> BT.601 full-range YCbCr (the matrix `codecs.yuv` feeds x265), 2x2 box-pooled chroma (4:2:0),
  an orthonormal DCT of 16x16 luma and 8x8 chroma blocks -> 256 + 64 + 64 = 384 latent channels at stride 16
  (fixed bases: a block DCT is invertible, so the synthesis is exact);
- quantiser: the latent is multiplied by a per-coefficient, QP-continuous gain that starts at HEVC's step law
  (step = 2^((QP-4)/6) in 8-bit levels) and is trained, so dead-zone/RDOQ-like effects per frequency are learnable;
- entropy model: CompressAI's `EntropyBottleneck` + `GaussianConditional` with a learned hyperprior predicting each
  coefficient's mean and scale (the stand-in for HEVC's intra prediction and CABAC contexts);
- synthesis: inverse DCT, bilinear (centre-sited) chroma upsampling as our decoder does, and a small QP-aware
  residual CNN (zero-initialised) that learns the in-loop filters' (deblocking, SAO) effect;
- reported bits: `overhead + exp(s(qp)) * entropy bits`, a learned per-QP scale (zero-initialised MLP) and a
  constant for the headers (x265 writes ~750 bits of VPS/SPS/PPS/SEI even for a flat image), because real bits
  are what the rate-matching loss compares against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from compressai.layers import conv3x3
from compressai.models.utils import conv, deconv
from torch import nn

from prepcodec.codecs.yuv import RGB2YUV, YUV2RGB
from prepcodec.errors import InputError
from prepcodec.proxy.models import ProxyCodec, ProxyConfig

HEADER_BITS = 750.0  # x265 stream overhead measured on flat images (docs/proxy.md)


def dct_basis(n: int) -> torch.Tensor:
    """Orthonormal 2-D DCT-II basis as conv weights (n*n, 1, n, n), frequency-major (row k, column l)."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return torch.einsum("ka,lb->klab", d, d).reshape(n * n, 1, n, n).float()


class BlockDCTAnalysis(nn.Module):
    """RGB [0,1] (N,3,H,W), H and W multiples of the block -> DCT coefficients (N, b^2 + 2(b/2)^2, H/b, W/b)."""

    def __init__(self, block: int):
        super().__init__()
        if block % 2 or block < 4:
            raise InputError(f"DCT block must be an even size >= 4, got {block}")
        self.block = block
        self.register_buffer("rgb2yuv", torch.tensor(RGB2YUV, dtype=torch.float32), persistent=False)
        self.register_buffer("luma", dct_basis(block), persistent=False)
        self.register_buffer("chroma", dct_basis(block // 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycc = torch.einsum("cd,ndhw->nchw", self.rgb2yuv, x)
        y = ycc[:, :1] - 0.5
        c = F.avg_pool2d(ycc[:, 1:], 2)
        b, cb = self.block, self.block // 2
        cy = F.conv2d(y, self.luma, stride=b)
        cc = F.conv2d(c.reshape(-1, 1, *c.shape[2:]), self.chroma, stride=cb)
        cc = cc.reshape(x.shape[0], -1, *cc.shape[2:])
        return torch.cat([cy, cc], 1)


class BlockDCTSynthesis(nn.Module):
    """Inverse of `BlockDCTAnalysis` (exact up to quantisation) + a QP-aware residual in-loop filter."""

    def __init__(self, block: int, width: int = 16):
        super().__init__()
        self.block = block
        self.register_buffer("yuv2rgb", torch.tensor(YUV2RGB, dtype=torch.float32), persistent=False)
        self.register_buffer("luma", dct_basis(block), persistent=False)
        self.register_buffer("chroma", dct_basis(block // 2), persistent=False)
        self.filter = nn.Sequential(  # 5x5 receptive field: enough for a deblocking-like smoothing at block edges
            nn.Conv2d(4, width, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(width, 3, 3, padding=1),
        )
        nn.init.zeros_(self.filter[-1].weight)
        nn.init.zeros_(self.filter[-1].bias)

    def forward(self, coefs: torch.Tensor, qp_unit: torch.Tensor) -> torch.Tensor:
        """`qp_unit`: (N,) QP mapped to [0, 1] over the proxy's QP range (the filter's strength input)."""
        b, cb = self.block, self.block // 2
        n = coefs.shape[0]
        y = F.conv_transpose2d(coefs[:, : b * b], self.luma, stride=b) + 0.5
        c = coefs[:, b * b :].reshape(n * 2, cb * cb, *coefs.shape[2:])
        c = F.conv_transpose2d(c, self.chroma, stride=cb).reshape(n, 2, y.shape[2] // 2, y.shape[3] // 2)
        c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)  # centre-sited, as we decode
        rgb = torch.einsum("cd,ndhw->nchw", self.yuv2rgb, torch.cat([y, c], 1))
        t = qp_unit[:, None, None, None].expand(-1, 1, *rgb.shape[2:])
        return rgb + self.filter(torch.cat([rgb, t], 1))


class DctProxyCodec(ProxyCodec):
    """The QP-conditioned mean-scale hyperprior of `ProxyCodec` on a block-DCT latent (see the module docstring)."""

    def __init__(self, config: ProxyConfig, hidden: int = 192):
        if config.block != 16:  # the latent stride (and the padding/bit cropping of ProxyCodec) is 16
            raise InputError(f"the dct proxy needs 16x16 luma blocks (latent stride 16), got {config.block}")
        m = config.block**2 + 2 * (config.block // 2) ** 2
        if config.M != m:
            raise InputError(f"a {config.block}px block DCT has {m} coefficients, config says M={config.M}")
        super().__init__(config)  # builds GDN transforms and a wide h_s that are replaced below (~0.17 s, once)
        n = config.N
        self.g_a = BlockDCTAnalysis(config.block)
        self.g_s = BlockDCTSynthesis(config.block)
        self.h_a = nn.Sequential(conv3x3(m, n), nn.LeakyReLU(inplace=True), conv(n, n), nn.LeakyReLU(inplace=True),
                                 conv(n, n))
        self.h_s = nn.Sequential(deconv(n, n), nn.LeakyReLU(inplace=True), deconv(n, hidden),
                                 nn.LeakyReLU(inplace=True), conv3x3(hidden, 2 * m))
        with torch.no_grad():  # HEVC's step law in [0,1] units: gain = 255 / 2^((qp - 4) / 6) at every frequency
            mid = 0.5 * (config.qp_min + config.qp_max)
            self.gain.offset.fill_(math.log(255.0) - (mid - 4) / 6 * math.log(2.0))
        self.rate_scale = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 1))
        nn.init.zeros_(self.rate_scale[2].weight)
        nn.init.zeros_(self.rate_scale[2].bias)
        self.log_overhead = nn.Parameter(torch.tensor(math.log(HEADER_BITS)))

    def _qp_unit(self, qp: torch.Tensor) -> torch.Tensor:
        return (qp - self.config.qp_min) / (self.config.qp_max - self.config.qp_min)

    def synthesis(self, y: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        return self.g_s(y, self._qp_unit(qp))

    def calibrate_bits(self, bits: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        scale = torch.exp(self.rate_scale(self._qp_unit(qp)[:, None])[:, 0])
        return torch.exp(self.log_overhead) + scale * bits
