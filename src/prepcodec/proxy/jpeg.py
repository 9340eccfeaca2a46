"""An analytic, differentiable JPEG (baseline JFIF, 4:2:0) with a rate model fitted to real JPEG bytes.

It mirrors what libjpeg does step by step (RGB->YCbCr, 2x2 box chroma pooling, level shift, 8x8 DCT, IJG tables
scaled by quality, rounding, dequantisation, IDCT, triangular ("fancy") chroma upsampling, YCbCr->RGB), so its
hard-rounded output is within ~40+ dB of Pillow's decode and its gradients follow JPEG's real behaviour. The rate
has no closed form (Huffman/run-length coding), so it is a linear model in per-image features of the quantised
coefficients v = coef/Q, the AC ones separately for luma and chroma (they have their own Huffman tables):

    bits = a_Y * sum_AC log2(1 + |v|) + b_Y * sum_AC soft[|v| > 0.5] + c_Y * sum_AC soft[|v| > 1.5]   (luma)
         + a_C * ...                  + b_C * ...                     + c_C * ...                      (Cb + Cr)
         + d * sum log2(1 + |dDC|)   DC is coded as the difference to the previous block (raster order)
         + e                         headers and Huffman tables

(log2(1 + |v|): magnitude bits; soft[|v| > 0.5]: one Huffman symbol per nonzero coefficient; soft[|v| > 1.5]:
larger magnitudes use longer (run, size) codes; soft[.] is a sigmoid, so every term is differentiable), fitted by
non-negative least squares with relative error (`fit_rate_model`) on training photos. The features were chosen on
held-out training images (`scripts/jpeg_rate_feature_selection.py`, `docs/proxy.md`), never on Kodak, which is the
proxies' test set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prepcodec.errors import InputError

RATE_MODEL_PATH = Path(__file__).parent / "weights" / "jpeg_rate.json"

_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
]  # fmt: skip
SOFT_NZ_SHARPNESS = 8.0
RATE_FEATURES = (
    "luma_ac_log_magnitude", "luma_ac_nonzero", "luma_ac_above_one",
    "chroma_ac_log_magnitude", "chroma_ac_nonzero", "chroma_ac_above_one",
    "dc_diff_log", "constant",
)


def quant_tables(quality: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IJG tables scaled by quality (libjpeg `jpeg_quality_scaling`, baseline clamp to 1..255), natural order."""
    q = int(round(float(quality)))
    if not 1 <= q <= 100:
        raise InputError(f"JPEG quality must be in [1, 100], got {quality}")
    scale = 5000 // q if q < 50 else 200 - 2 * q
    tabs = []
    for base in (_LUMA, _CHROMA):
        t = (torch.tensor(base, dtype=torch.float64) * scale + 50).div(100).floor().clamp(1, 255)
        tabs.append(t.reshape(8, 8).float())
    return tabs[0], tabs[1]


def _dct_matrix() -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * torch.pi / 16) * (2 / 8) ** 0.5
    d[0] /= 2**0.5
    return d.float()


_DCT = _dct_matrix()


def _blocks(p: torch.Tensor) -> torch.Tensor:
    """(N,H,W) -> (N,H/8,W/8,8,8)."""
    n, h, w = p.shape
    return p.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(b: torch.Tensor) -> torch.Tensor:
    n, hb, wb, _, _ = b.shape
    return b.permute(0, 1, 3, 2, 4).reshape(n, hb * 8, wb * 8)


def ycbcr420(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB (N,3,H,W) in [0,1] -> (Y (N,H',W'), CbCr (N,2,H'/2,W'/2)) in 0..255, as libjpeg codes it.

    Replicate-padded to whole 16x16 MCUs, JFIF full-range YCbCr, 2x2 box-averaged chroma (4:2:0).
    """
    h, w = x.shape[2:]
    ph, pw = (-h) % 16, (-w) % 16
    rgb = (F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x) * 255.0
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return y, F.avg_pool2d(torch.stack([cb, cr], 1), 2)


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.round(v) - v).detach()


class JpegProxy(nn.Module):
    """`proxy(x, quality) -> (x_hat, bits per image)`; x float RGB (N,3,H,W) in [0,1], any size.

    `rounding="ste"` rounds for real (straight-through gradient); `"noise"` adds uniform noise (training-style).
    """

    def __init__(self, rate_coefs: Sequence[float] | None = None, rounding: str = "ste"):
        super().__init__()
        if rounding not in ("ste", "noise"):
            raise InputError(f"rounding must be 'ste' or 'noise', got {rounding!r}")
        self.rounding = rounding
        coefs = list(rate_coefs if rate_coefs is not None else load_rate_model()["coefs"])
        if len(coefs) != len(RATE_FEATURES):
            raise InputError(f"JPEG rate model needs {len(RATE_FEATURES)} coefficients ({', '.join(RATE_FEATURES)}), "
                             f"got {len(coefs)}; refit it with `prepcodec proxy fit-jpeg`")
        self.register_buffer("rate_coefs", torch.tensor(coefs, dtype=torch.float32))

    def features(self, x: torch.Tensor, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hat, per-image rate features (N, 8) in the order of `RATE_FEATURES`)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"JPEG proxy expects (N,3,H,W) RGB, got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        y, cbcr = ycbcr420(x)
        qy, qc = (t.to(x) for t in quant_tables(quality))
        d = _DCT.to(x)
        ac_mask = torch.ones(8, 8, device=x.device, dtype=x.dtype)
        ac_mask[0, 0] = 0
        planes, feats = [], []
        for plane, q in ((y, qy), (cbcr[:, 0], qc), (cbcr[:, 1], qc)):
            coef = d @ _blocks(plane - 128) @ d.T
            v = coef / q
            if self.rounding == "ste":
                vq = _round_ste(v)
            else:
                vq = v + torch.empty_like(v).uniform_(-0.5, 0.5)
            planes.append(_unblocks(d.T @ (vq * q) @ d) + 128)
            ac = v.abs() * ac_mask
            dc = v[..., 0, 0].flatten(1)
            dc_diff = torch.cat([dc[:, :1], dc[:, 1:] - dc[:, :-1]], 1).abs()
            feats.append(
                torch.stack(
                    [
                        torch.log2(1 + ac).sum((1, 2, 3, 4)),
                        (torch.sigmoid(SOFT_NZ_SHARPNESS * (ac - 0.5)) * ac_mask).sum((1, 2, 3, 4)),
                        (torch.sigmoid(SOFT_NZ_SHARPNESS * (ac - 1.5)) * ac_mask).sum((1, 2, 3, 4)),
                        torch.log2(1 + dc_diff).sum(1),
                    ],
                    1,
                )
            )
        y_hat = planes[0]
        c_hat = F.interpolate(torch.stack(planes[1:], 1), scale_factor=2, mode="bilinear", align_corners=False)
        cb_h, cr_h = c_hat[:, 0] - 128, c_hat[:, 1] - 128
        out = torch.stack(
            [y_hat + 1.402 * cr_h, y_hat - 0.344136 * cb_h - 0.714136 * cr_h, y_hat + 1.772 * cb_h], 1
        )
        x_hat = (out / 255.0)[:, :, :h, :w]
        x_hat = x_hat + (x_hat.clamp(0, 1) - x_hat).detach()  # clamp value, keep gradient at the borders
        luma, chroma = feats[0], feats[1] + feats[2]  # luma and chroma have their own Huffman tables
        f = torch.cat([luma[:, :3], chroma[:, :3], luma[:, 3:] + chroma[:, 3:], torch.ones_like(luma[:, :1])], 1)
        return x_hat, f

    def forward(self, x: torch.Tensor, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat, f = self.features(x, quality)
        return x_hat, f @ self.rate_coefs.to(f)


def real_jpeg(rgb: np.ndarray, quality: int, preset: str = "eval") -> bytes:
    """The real JPEG bytes the proxy imitates: prepcodec's jpeg codec (baseline, 4:2:0)."""
    from prepcodec.codecs import get_codec

    return get_codec("jpeg").encode(rgb, int(quality), preset)


def fit_rate_model(
    images: Sequence[np.ndarray],
    qualities: Sequence[int],
    encode: Callable[[np.ndarray, int], bytes] = real_jpeg,
) -> dict:
    """Non-negative least-squares fit of the rate coefficients to real bits, weighted by 1/bits (relative error).

    Non-negative so that no feature can lower the rate (the header constant stays >= 0 and small crops never get
    negative bits).
    """
    from scipy.optimize import nnls

    proxy = JpegProxy(rate_coefs=(0.0,) * len(RATE_FEATURES))
    rows, bits = [], []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
            for q in qualities:
                _, f = proxy.features(x, q)
                rows.append(f[0].double().tolist())
                bits.append(8.0 * len(encode(img, q)))
    a_mat, y = np.asarray(rows), np.asarray(bits)
    wts = 1.0 / y
    coefs, _ = nnls(a_mat * wts[:, None], y * wts)
    pred = a_mat @ coefs
    r = float(np.corrcoef(np.log(np.maximum(pred, 1.0)), np.log(y))[0, 1])
    return {"features": list(RATE_FEATURES), "coefs": [float(v) for v in coefs], "n": len(y),
            "pearson_log_bits": r, "qualities": list(qualities)}


def load_rate_model(path: Path = RATE_MODEL_PATH) -> dict:
    """The shipped fitted rate model; falls back to a rough prior when it has not been fitted yet."""
    if path.exists():
        return json.loads(path.read_text())
    prior = [0.5, 2.0, 5.0, 0.5, 2.0, 5.0, 2.0, 2000.0]  # roughly the fitted values, for an unfitted checkout
    return {"features": list(RATE_FEATURES), "coefs": prior, "n": 0, "pearson_log_bits": None}
