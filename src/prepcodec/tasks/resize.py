"""Differentiable resizing shared by every task: models need fixed input sizes, `Task` accepts any size.

All functions take float NCHW tensors and keep the autograd graph, so a loss on the model input sends gradients
back to every pixel of the original image (and through it to the preprocessing network).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_to(x: torch.Tensor, size: Size, mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """Resize NCHW `x` to exactly `size` ((h, w) or a square side), ignoring aspect ratio.

    Antialiasing matters when shrinking large photos: without it the model sees aliasing that no codec made.
    """
    h, w = _hw(size)
    if x.shape[-2:] == (h, w):
        return x
    align = None if mode in ("nearest", "area") else False
    aa = antialias and mode in ("bilinear", "bicubic")
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=align, antialias=aa)


def resize_short_side(x: torch.Tensor, short: int, mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """Resize so the shorter side becomes `short`, keeping the aspect ratio (longer side rounded)."""
    h, w = x.shape[-2:]
    scale = short / min(h, w)
    return resize_to(x, (max(1, round(h * scale)), max(1, round(w * scale))), mode=mode, antialias=antialias)


def center_crop(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Central `size` window of `x` (which must be at least that large)."""
    h, w = _hw(size)
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise ValueError(f"cannot crop {h}x{w} from {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def crop_short_side(size: int, crop_ratio: float) -> int:
    """The shorter side `resize_center_crop` resizes to before cutting its `size` window (256 for 224 at 0.875)."""
    return max(size, math.floor(size / crop_ratio + 0.5))


def resize_center_crop(
    x: torch.Tensor, size: int, crop_ratio: float = 0.875, mode: str = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """The standard ImageNet evaluation transform, differentiable: shorter side to size/crop_ratio, centre crop.

    With crop_ratio=0.875 and size 224 this is "resize 256, crop 224"; crop_ratio=1 fits the shorter side and
    crops only the longer one.
    """
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    short = crop_short_side(size, crop_ratio)
    return center_crop(resize_short_side(x, short, mode=mode, antialias=antialias), size)


def crop_frame(image_hw: tuple[int, int], size: int, crop_ratio: float = 0.875) -> tuple[int, int, int, int]:
    """Where `resize_center_crop(x, size, crop_ratio)` takes its window: (resized h, resized w, top, left)."""
    H, W = image_hw
    scale = crop_short_side(size, crop_ratio) / min(H, W)
    rh, rw = max(1, round(H * scale)), max(1, round(W * scale))
    return rh, rw, (rh - size) // 2, (rw - size) // 2


def seen_window(image_hw: tuple[int, int], size: int, crop_ratio: float = 0.875) -> tuple[int, int, int, int]:
    """The rows and columns of the original image `resize_center_crop` reads, as (top, bottom, left, right), end
    exclusive: the centre window mapped back, widened by the resize kernel's reach (none when no resize happens).
    Pixels outside it never reach the model, whatever they hold."""
    H, W = image_hw
    rh, rw, top, left = crop_frame(image_hw, size, crop_ratio)
    if (rh, rw) == (H, W):
        return top, top + size, left, left + size
    sy, sx = rh / H, rw / W
    reach = math.ceil(2 / min(sy, sx, 1.0)) + 1  # bicubic taps span 2 output pixels either side (antialiased)
    return (max(0, math.floor(top / sy) - reach), min(H, math.ceil((top + size) / sy) + reach),
            max(0, math.floor(left / sx) - reach), min(W, math.ceil((left + size) / sx) + reach))


def uncrop_map(m: torch.Tensor, image_hw: tuple[int, int], size: int, crop_ratio: float = 0.875) -> torch.Tensor:
    """Place a map over the model input of `resize_center_crop` back on the original image: 0 where the crop
    never looked.

    A class-activation map covers the centre crop the classifier saw, not the whole picture; stretching it over the
    image misplaces it (16 px at the edge of a 256² ImageNet image) and claims the classifier attended to pixels it
    never received.
    """
    rh, rw, top, left = crop_frame(image_hw, size, crop_ratio)
    inside = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    framed = F.pad(inside, (left, rw - size - left, top, rh - size - top))
    if (rh, rw) == tuple(image_hw):
        return framed
    return F.interpolate(framed, size=tuple(image_hw), mode="bilinear", align_corners=False)


def letterbox(
    x: torch.Tensor, size: Size, fill: float = 0.0, mode: str = "bilinear", antialias: bool = True
) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Fit `x` inside `size` keeping its aspect ratio, pad the rest with `fill` (centred).

    Returns (padded image, scale, (pad_left, pad_top)); a point (u, v) in the padded image maps back to input
    pixels as ((u - pad_left) / scale, (v - pad_top) / scale) — see `unletterbox_boxes`.
    """
    h, w = _hw(size)
    H, W = x.shape[-2:]
    scale = min(h / H, w / W)
    nh, nw = max(1, min(h, round(H * scale))), max(1, min(w, round(W * scale)))
    resized = resize_to(x, (nh, nw), mode=mode, antialias=antialias)
    top, left = (h - nh) // 2, (w - nw) // 2
    out = F.pad(resized, (left, w - nw - left, top, h - nh - top), value=fill)
    return out, scale, (left, top)


def unletterbox_boxes(
    boxes: torch.Tensor, scale: float, pad: tuple[int, int], image_hw: tuple[int, int] | None = None
) -> torch.Tensor:
    """Map (K,4) xyxy boxes from letterboxed coordinates back to input pixels, clipped to the image if given."""
    left, top = pad
    offset = boxes.new_tensor([left, top, left, top])
    out = (boxes - offset) / scale
    if image_hw is not None:
        H, W = image_hw
        out = torch.stack(
            [out[:, 0].clamp(0, W), out[:, 1].clamp(0, H), out[:, 2].clamp(0, W), out[:, 3].clamp(0, H)], dim=1
        )
    return out
