"""RGB <-> 8-bit YUV 4:2:0 (BT.601 full range) and edge-replication padding, done in numpy.

Doing the colour conversion ourselves (not swscale) keeps HEVC/VVC deterministic and identical across FFmpeg
builds, and lets encode and decode use exactly the same matrix.
"""

from __future__ import annotations

import numpy as np

# BT.601 full range ("JPEG" YCbCr), as used by BPG's default and by JFIF.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
RGB2YUV = np.array(
    [
        [_KR, _KG, _KB],
        [-0.5 * _KR / (1 - _KB), -0.5 * _KG / (1 - _KB), 0.5],
        [0.5, -0.5 * _KG / (1 - _KR), -0.5 * _KB / (1 - _KR)],
    ],
    dtype=np.float64,
)
YUV2RGB = np.linalg.inv(RGB2YUV)


def pad_to_multiple(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom/right by replicating edge pixels so H and W are multiples of `multiple` (never distorts)."""
    h, w = rgb.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return rgb
    return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 HxWx3 (H, W even) -> (Y HxW, U H/2xW/2, V H/2xW/2) uint8; chroma = 2x2 box average (centre sited)."""
    ycc = rgb.astype(np.float64) @ RGB2YUV.T
    ycc[..., 1:] += 128.0
    h, w = rgb.shape[:2]
    y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
    c = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    c = np.clip(np.rint(c), 0, 255).astype(np.uint8)
    return y, c[..., 0], c[..., 1]


def _upsample2(c: np.ndarray) -> np.ndarray:
    """Centre-sited 2x bilinear chroma upsampling (weights 3/4, 1/4), edges replicated."""
    c = c.astype(np.float64)
    p = np.pad(c, 1, mode="edge")
    # rows
    up = 0.75 * p[1:-1] + 0.25 * p[:-2]
    dn = 0.75 * p[1:-1] + 0.25 * p[2:]
    rows = np.empty((2 * c.shape[0], p.shape[1]), dtype=np.float64)
    rows[0::2], rows[1::2] = up, dn
    left = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
    right = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
    out = np.empty((rows.shape[0], 2 * c.shape[1]), dtype=np.float64)
    out[:, 0::2], out[:, 1::2] = left, right
    return out


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_yuv420` with the same matrix; returns RGB uint8 of Y's size."""
    h, w = y.shape
    ycc = np.empty((h, w, 3), dtype=np.float64)
    ycc[..., 0] = y
    ycc[..., 1] = _upsample2(u)[:h, :w] - 128.0
    ycc[..., 2] = _upsample2(v)[:h, :w] - 128.0
    rgb = ycc @ YUV2RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
