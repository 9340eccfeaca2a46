"""Rate and distortion of one decoded image: bpp from the real bytes, PSNR (RGB, Y) and MS-SSIM.

All quality metrics take two RGB uint8 HxWx3 arrays of the same shape (reference first) and use peak 255.
"""

from __future__ import annotations

import math

import numpy as np

from prepcodec.errors import InputError
from prepcodec.eval.lpips import lpips

# BT.601 luma weights on full-range RGB (the codecs feed their encoders full-range BT.601 YCbCr).
_BT601 = np.array([0.299, 0.587, 0.114])
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_C1, _C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
_MS_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
# five scales with an 11-px window need the shorter side > (11 - 1) * 2**4, as in pytorch-msssim
MS_SSIM_MIN_SIDE = (_SSIM_WINDOW - 1) * 2**4 + 1


def bpp(nbytes: int, h: int, w: int) -> float:
    """Bits per pixel of a bitstream of `nbytes` real bytes for an HxW image (8 * bytes / (H * W))."""
    if h < 1 or w < 1:
        raise InputError(f"bpp of an empty {w}x{h} image")
    if nbytes < 0:
        raise InputError(f"negative byte count {nbytes}")
    return 8.0 * nbytes / (h * w)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise InputError(f"expected two RGB uint8 HxWx3 arrays, got shape {a.shape} dtypes {a.dtype}/{b.dtype}")
    if a.size == 0:
        raise InputError("empty images")
    return a.astype(np.float64), b.astype(np.float64)


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all three RGB channels (one MSE over every sample); inf for identical images."""
    x, y = _pair(a, b)
    return _psnr_from_mse(float(np.mean((x - y) ** 2)))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B as float64 in [0, 255] (not rounded)."""
    return np.asarray(rgb, dtype=np.float64) @ _BT601


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of the full-range BT.601 luma (computed in float, not rounded); inf for identical images."""
    x, y = _pair(a, b)
    return _psnr_from_mse(float(np.mean((luma(x) - luma(y)) ** 2)))


def _gaussian_window(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    c = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(c**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable Gaussian over H and W of an HxWxC array, 'valid' part only (as pytorch-msssim's conv)."""
    from scipy.ndimage import correlate1d

    h = len(win) // 2
    y = correlate1d(x, win, axis=0, mode="constant")[h : x.shape[0] - h]
    return correlate1d(y, win, axis=1, mode="constant")[:, h : x.shape[1] - h]


def _ssim_terms(x: np.ndarray, y: np.ndarray, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of two HxWxC float images (peak 255)."""
    mx, my = _filter_valid(x, win), _filter_valid(y, win)
    sxx = _filter_valid(x * x, win) - mx * mx
    syy = _filter_valid(y * y, win) - my * my
    sxy = _filter_valid(x * y, win) - mx * my
    cs = (2 * sxy + _C2) / (sxx + syy + _C2)
    ssim_map = (2 * mx * my + _C1) / (mx * mx + my * my + _C1) * cs
    return ssim_map.mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling with zero padding of odd sides (torch avg_pool2d(2, padding=side % 2))."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    if ph or pw:
        x = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x[: 2 * h, : 2 * w].reshape(h, 2, w, 2, x.shape[2]).mean(axis=(1, 3))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (5 scales, 11-px Gaussian window sigma 1.5, standard weights, RGB channels averaged) in [0, 1].

    This is pytorch-msssim's algorithm (`ms_ssim(X, Y, data_range=255)`) ported to numpy/scipy: the tests check
    it equals pytorch-msssim to 1e-5 on real photos, and it runs several times faster on CPU without torch's
    thread pool (the sweeps call it once per image and level).

    Small images fall back cleanly: when the shorter side is below `MS_SSIM_MIN_SIDE` (161 px) five scales do not
    fit, so single-scale SSIM (same 11-px window) is returned instead; below 11 px even one window does not fit,
    so SSIM is computed with one uniform window covering the whole image (`global_ssim`). Those values are SSIM,
    not MS-SSIM: do not average them with MS-SSIM of large images.
    """
    x, y = _pair(a, b)
    side = min(x.shape[:2])
    if side < _SSIM_WINDOW:
        return global_ssim(a, b)
    win = _gaussian_window()
    if side < MS_SSIM_MIN_SIDE:
        return float(_ssim_terms(x, y, win)[0].mean())
    mcs = []
    for scale in range(len(_MS_WEIGHTS)):
        ssim_c, cs_c = _ssim_terms(x, y, win)
        if scale < len(_MS_WEIGHTS) - 1:
            mcs.append(np.maximum(cs_c, 0.0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    terms = np.stack([*mcs, np.maximum(ssim_c, 0.0)])  # (scales, channels)
    return float(np.prod(terms ** _MS_WEIGHTS[:, None], axis=0).mean())


def global_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with a single uniform window over the whole image, per RGB channel, averaged (for tiny images)."""
    x, y = _pair(a, b)
    mx, my = x.mean(axis=(0, 1)), y.mean(axis=(0, 1))
    vx, vy = x.var(axis=(0, 1)), y.var(axis=(0, 1))
    cov = ((x - mx) * (y - my)).mean(axis=(0, 1))
    s = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx**2 + my**2 + _C1) * (vx + vy + _C2))
    return float(s.mean())


def fsim(a: np.ndarray, b: np.ndarray) -> float:
    """FSIMc (feature similarity with chrominance, Zhang et al. 2011) via piq, in [0, 1].

    A human-vision metric that weighs phase congruency and gradient magnitude, so it tracks edges and texture
    better than PSNR. piq's implementation is used as is (it downsamples large images the way the authors'
    reference code does); float32 on CPU, so the value is deterministic.
    """
    try:
        import piq
        import torch
    except ImportError as exc:  # pragma: no cover - piq is a declared dependency
        raise InputError(f"FSIM needs the piq package ({exc})") from None
    x, y = _pair(a, b)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None] / 255.0, dtype=np.float32))
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1)[None] / 255.0, dtype=np.float32))
    with torch.no_grad():
        return float(piq.fsim(tx, ty, data_range=1.0, chromatic=True))


# Full-reference metrics a sweep can add per image on request (`prepcodec eval --fidelity fsim,lpips`); PSNR and
# MS-SSIM are always measured. LPIPS-Alex is a distance (lower is better); its weights come from
# `prepcodec models fetch --lpips`.
EXTRA_FIDELITY = {"fsim": fsim, "lpips": lpips}
