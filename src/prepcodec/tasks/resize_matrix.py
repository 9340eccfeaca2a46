"""The classifier's crop geometry as matrix products built from the runtime image size: what an ONNX graph holds.

`resize.resize_center_crop` (antialiased bicubic, then a centre crop) and `resize.uncrop_map` (bilinear) are
`F.interpolate` calls; the TorchScript ONNX exporter has no operator for an antialiased bicubic resize, and a trace
would bake the crop offsets of the example size. Here every resize is a separable linear map `A_h @ x @ A_wᵀ` whose
rows are computed with tensor ops from the input's height and width, reproducing PyTorch's kernels (the
antialiased bicubic of `UpSampleKernel.cpp`, a = −0.5, and bilinear with align_corners=False) to float precision,
so one trace serves every size. Used by `npp.features.TaskCAM`, the part of the ROI-guided NPP that runs the
classifier; the task itself keeps the faster `F.interpolate`.
"""

from __future__ import annotations

import torch

from prepcodec.tasks.resize import crop_short_side

BICUBIC_A = -0.5  # PyTorch's (and PIL's) antialiased bicubic


def _as_float(n: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(n).to(torch.float32)


def _bicubic(t: torch.Tensor) -> torch.Tensor:
    t = t.abs()
    a = BICUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_aa_rows(n_in: int | torch.Tensor, n_out: int | torch.Tensor, start: int | torch.Tensor,
                    count: int) -> torch.Tensor:
    """(count, n_in) weights of output samples start … start+count−1 of an antialiased bicubic resize n_in → n_out."""
    scale = _as_float(n_in) / _as_float(n_out)
    inv = torch.where(scale >= 1, 1.0 / scale, torch.ones_like(scale))  # downscaling widens the kernel by scale
    centre = scale * (torch.arange(count, dtype=torch.float32) + _as_float(start) + 0.5)
    taps = torch.arange(n_in).float()
    w = _bicubic((taps[None, :] + 0.5 - centre[:, None]) * inv)
    return w / w.sum(dim=1, keepdim=True)


def bilinear_rows(n_in: int | torch.Tensor, n_out: int | torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of a bilinear resize (align_corners=False, no antialias), as `F.interpolate` does it."""
    scale = _as_float(n_in) / _as_float(n_out)
    src = (scale * (torch.arange(n_out).float() + 0.5) - 0.5).clamp_min(0)
    i0 = src.floor()
    i1 = torch.minimum(i0 + 1, _as_float(n_in) - 1)
    frac = src - i0
    taps = torch.arange(n_in).float()
    lower = (taps[None, :] == i0[:, None]).float() * (1 - frac)[:, None]
    return lower + (taps[None, :] == i1[:, None]).float() * frac[:, None]


def _frame(h: torch.Tensor, w: torch.Tensor, size: int, crop_ratio: float):
    """`resize.crop_frame` on tensors: (resized h, resized w, top, left)."""
    scale = crop_short_side(size, crop_ratio) / torch.minimum(h, w).float()
    rh, rw = torch.round(h.float() * scale).long(), torch.round(w.float() * scale).long()
    return rh, rw, (rh - size) // 2, (rw - size) // 2


def _sides(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(x.shape[-2]), torch.as_tensor(x.shape[-1])


def resize_center_crop_matrix(x: torch.Tensor, size: int, crop_ratio: float = 0.875) -> torch.Tensor:
    """`resize.resize_center_crop(x, size, crop_ratio)` (bicubic, antialiased) as two matrix products."""
    h, w = _sides(x)
    rh, rw, top, left = _frame(h, w, size, crop_ratio)
    rows = bicubic_aa_rows(h, rh, top, size).to(x)
    cols = bicubic_aa_rows(w, rw, left, size).to(x)
    return rows @ x @ cols.transpose(0, 1)


def _placement(n: torch.Tensor, resized: torch.Tensor, offset: torch.Tensor, size: int, cells: int) -> torch.Tensor:
    """(n, cells): a map of `cells` samples over the crop -> `size` crop pixels -> the resized frame (0 outside the
    crop) -> the image's n pixels, each step the bilinear resize `resize.uncrop_map` makes."""
    up = bilinear_rows(cells, size)  # (size, cells)
    place = (torch.arange(resized)[:, None] == torch.arange(size)[None, :] + offset).float()  # (resized, size)
    back = bilinear_rows(resized, n)  # (n, resized); the identity when resized == n
    return back @ (place @ up)


def uncrop_matrices(image: torch.Tensor, size: int, crop_ratio: float, cells: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows (H, cells_h), cols (W, cells_w)): a map m of `cells` samples over the crop lands on the image as
    rows @ m @ colsᵀ (`uncrop_map_matrix`); exposed so a caller can fold a separable filter of the result into them."""
    h, w = _sides(image)
    rh, rw, top, left = _frame(h, w, size, crop_ratio)
    return _placement(h, rh, top, size, cells[0]), _placement(w, rw, left, size, cells[1])


def uncrop_map_matrix(m: torch.Tensor, image: torch.Tensor, size: int, crop_ratio: float = 0.875) -> torch.Tensor:
    """`resize.uncrop_map(m, image.shape[-2:], size, crop_ratio)` as two matrix products (m: N, C, cells, cells)."""
    rows, cols = uncrop_matrices(image, size, crop_ratio, (m.shape[-2], m.shape[-1]))
    return rows.to(m) @ m @ cols.to(m).transpose(0, 1)
