"""Classical preprocessors a learned NPP must beat: uniform filters and ROI-guided suppression.

All filters work on float NCHW tensors in [0, 1] and are differentiable, so they can also sit in a training graph.
- `gaussian_blur`: separable Gaussian, reflect padding (the uniform low-pass baseline).
- `bilateral`: edge-preserving denoiser (removes the texture/noise that costs bits, keeps edges).
- ROI suppression, as in MPEG VCM reference software: keep the region the task attends to, computed on the
  uncompressed image (detector / pose boxes, or a Grad-CAM map for classifiers), and blur or flatten the rest.
- `fill_unseen`: flatten what a classifier's centre crop never reads (composable: `--pre SPEC+unseen`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prepcodec.tasks.base import Task
from prepcodec.tasks.resize import seen_window

ROI_SCORE_THRESHOLD = 0.3  # detections / keypoints above this score define the kept region
ROI_CAM_THRESHOLD = 0.5  # Grad-CAM (normalised to [0, 1]) above this is kept (the usual Grad-CAM cut)
# Grad-CAM placement: 2 = mapped through the classifier's resize + centre crop (1 stretched it over the image)
CAM_REVISION = "cam2"
ROI_MARGIN = 0.05  # boxes grow by this fraction of the image diagonal: context around objects helps detectors


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _reflect_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect padding that also works when the pad exceeds the image (falls back to replicate)."""
    h, w = x.shape[-2:]
    if pad[0] < w and pad[1] < w and pad[2] < h and pad[3] < h:
        return F.pad(x, pad, mode="reflect")
    return F.pad(x, pad, mode="replicate")


def _blur_passes(y: torch.Tensor, k: torch.Tensor, channels: int, shared_pad: bool) -> torch.Tensor:
    """Horizontal then vertical pass of kernel k over NCHW y: y already reflect-padded by k's radius on both axes
    (`shared_pad`), or padded here one axis at a time (reflect, replicate where the image is smaller than the pad)."""
    r = (k.numel() - 1) // 2
    # depthwise (groups = channels): the same sums as a single-channel conv over channels-as-images, which oneDNN ran
    # ~4x slower and which was most of an ROI network's inference (torch.profiler, roi-graded-mild at 512², one
    # thread, a loaded 2-core VM: ~575 -> ~155 ms a forward)
    row, col = k.view(1, 1, 1, -1).expand(channels, 1, 1, -1), k.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    y = F.conv2d(y if shared_pad else _reflect_pad(y, (r, r, 0, 0)), row, groups=channels)
    return F.conv2d(y if shared_pad else _reflect_pad(y, (0, 0, r, r)), col, groups=channels)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of NCHW `x`; sigma <= 0 returns x unchanged."""
    return gaussian_blurs(x, (sigma,))[sigma]


def gaussian_blur_1d(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """`gaussian_blur`'s pass along the last axis of v (any shape): the same kernel and padding, one axis."""
    if sigma <= 0:
        return v
    k = _gaussian_kernel(sigma, v.dtype, v.device)
    r = (k.numel() - 1) // 2
    y = _reflect_pad(v.reshape(-1, 1, 1, v.shape[-1]), (r, r, 0, 0))
    return F.conv2d(y, k.view(1, 1, 1, -1)).reshape(v.shape)


def gaussian_blurs(x: torch.Tensor, sigmas: tuple[float, ...]) -> dict[float, torch.Tensor]:
    """{sigma: gaussian_blur(x, sigma)} for several sigmas from one reflect padding of x (sigma <= 0: x itself).

    Reflect-padding by the largest radius and reading a window of it equals reflect-padding by a smaller one, and a
    horizontal pass over reflected rows is the reflected rows of the horizontal pass: so one pad of both axes serves
    every blur, where each blur padded twice (an ROI network's pads were ~9 % of its onnxruntime time at 512²). The
    sums are the same ones. An image smaller than the largest radius is padded per blur and axis, as before. A sigma
    given twice is blurred once."""
    out = {s: x for s in sigmas if s <= 0}
    kernels = {s: _gaussian_kernel(s, x.dtype, x.device) for s in sigmas if s > 0}
    if not kernels:
        return out
    shape = x.shape
    channels = int(shape[-3]) if x.dim() >= 3 else 1  # a constant in an ONNX trace: the kernel needs a static shape
    y = x.reshape(-1, channels, shape[-2], shape[-1])
    r_max = max((k.numel() - 1) // 2 for k in kernels.values())
    shared = r_max < shape[-2] and r_max < shape[-1]
    padded = F.pad(y, (r_max,) * 4, mode="reflect") if shared else y
    for s, k in kernels.items():
        o = r_max - (k.numel() - 1) // 2
        window = padded[..., o : padded.shape[-2] - o, o : padded.shape[-1] - o] if shared and o else padded
        out[s] = _blur_passes(window, k, channels, shared).reshape(shape)
    return out


def bilateral(x: torch.Tensor, sigma_s: float = 2.0, sigma_r: float = 0.1) -> torch.Tensor:
    """Bilateral filter (spatial sigma in pixels, range sigma in [0,1] intensity units), looped over offsets.

    The loop keeps memory at a few image-sized buffers, so native-resolution COCO images fit.
    """
    radius = max(1, int(math.ceil(2 * sigma_s)))
    xp = _reflect_pad(x, (radius, radius, radius, radius))
    h, w = x.shape[-2:]
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[:, :1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ws = math.exp(-(dx * dx + dy * dy) / (2 * sigma_s**2))
            shifted = xp[:, :, radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            dist2 = ((shifted - x) ** 2).sum(dim=1, keepdim=True)
            wgt = ws * torch.exp(-dist2 / (2 * sigma_r**2))
            num = num + wgt * shifted
            den = den + wgt
    return num / den


def boxes_mask(boxes: list[list[float]], h: int, w: int, margin: float = ROI_MARGIN) -> torch.Tensor:
    """(1,1,H,W) mask that is 1 inside the union of xyxy boxes grown by `margin` x image diagonal."""
    mask = torch.zeros(1, 1, h, w)
    grow = margin * math.hypot(h, w)
    for x1, y1, x2, y2 in boxes:
        c0, c1 = max(0, int(x1 - grow)), min(w, int(math.ceil(x2 + grow)))
        r0, r1 = max(0, int(y1 - grow)), min(h, int(math.ceil(y2 + grow)))
        if c1 > c0 and r1 > r0:
            mask[..., r0:r1, c0:c1] = 1.0
    return mask


def _find_last_conv(model: torch.nn.Module) -> torch.nn.Module | None:
    last = None
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            last = module
    return last


def grad_cam(task: Task, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (N,1,H,W) in [0,1] for the classifier's own top-1 class on uncompressed `x`.

    Uses the last Conv2d of `task.model`; the class score is -loss(x, teacher top-1), i.e. the log-probability
    of the predicted class (Grad-CAM on log-softmax instead of the raw logit). Falls back to input-gradient
    saliency when the task exposes no conv model.
    """
    targets = task.pseudo_targets(x)
    if isinstance(targets, torch.Tensor) and targets.ndim == 2:  # teacher probabilities -> hard top-1
        targets = targets.argmax(dim=1)
    model = getattr(task, "model", None)
    layer = _find_last_conv(model) if isinstance(model, torch.nn.Module) else None
    h, w = x.shape[-2:]
    if layer is None:
        xi = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():  # preprocessors run under no_grad
            (grad,) = torch.autograd.grad(task.loss(xi, targets), xi)
        cam = gaussian_blur(grad.abs().sum(dim=1, keepdim=True), sigma=max(h, w) / 32)
    else:
        feats: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: feats.append(out))
        try:
            with torch.enable_grad():
                loss = task.loss(x.detach().clone().requires_grad_(True), targets)
                (grad,) = torch.autograd.grad(loss, feats[-1])
        finally:
            handle.remove()
        act = feats[-1].detach()
        weights = (-grad).mean(dim=(2, 3), keepdim=True)  # d log p_c / dA, averaged spatially
        cam = F.relu((weights * act).sum(dim=1, keepdim=True))
        cam = _to_image(task, cam, (h, w))
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (cam / peak).detach()


def _to_image(task: Task, cam: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A map over the task's model input on the image: through the task's crop geometry when it has one."""
    if hasattr(task, "map_to_image"):
        return task.map_to_image(cam, hw)
    return F.interpolate(cam, size=hw, mode="bilinear", align_corners=False)


def task_boxes(task: Task, x: torch.Tensor, predictions: list[dict] | None = None) -> list[list[list[float]]]:
    """Per image, xyxy boxes of what a detection / pose task finds on uncompressed `x` (from its `predictions` of x
    when the caller already has them)."""
    out = []
    if predictions is None:
        with torch.no_grad():
            predictions = task.predict(x)
    for pred in predictions:
        boxes: list[list[float]] = []
        if "boxes" in pred:
            for box, score in zip(pred["boxes"].tolist(), pred["scores"].tolist(), strict=True):
                if score >= ROI_SCORE_THRESHOLD:
                    boxes.append(box)
        elif "keypoints" in pred:
            kp = pred["keypoints"]
            good = kp[kp[:, 2] >= ROI_SCORE_THRESHOLD]
            if len(good):
                boxes.append([good[:, 0].min().item(), good[:, 1].min().item(),
                              good[:, 0].max().item(), good[:, 1].max().item()])
        out.append(boxes)
    return out


def box_keep_mask(task: Task, x: torch.Tensor, predictions: list[dict] | None = None) -> torch.Tensor:
    """Hard (N,1,H,W) 0/1 mask of a detection / pose task's boxes on uncompressed `x` (grown by ROI_MARGIN)."""
    h, w = x.shape[-2:]
    hard = torch.cat([boxes_mask(b, h, w) for b in task_boxes(task, x, predictions)]).to(x.dtype)
    # nothing detected: keep everything rather than erase a scene the task could not parse
    empty = hard.flatten(1).amax(dim=1) == 0
    hard[empty] = 1.0
    return hard


def feathered(mask: torch.Tensor) -> torch.Tensor:
    """A keep-mask or attention map (N,1,H,W) with soft edges: blurred by 1 % of the image diagonal (>= 1 px)."""
    h, w = mask.shape[-2:]
    return gaussian_blur(mask, sigma=max(1.0, 0.01 * math.hypot(h, w)))


def roi_mask(task: Task, x: torch.Tensor, cam_threshold: float = ROI_CAM_THRESHOLD) -> torch.Tensor:
    """Soft (N,1,H,W) keep-mask: 1 where the task attends on uncompressed `x` (a classifier's Grad-CAM at or above
    `cam_threshold`, a detector's boxes), feathered edges."""
    if task.kind == "classification":
        hard = (grad_cam(task, x) >= cam_threshold).to(x.dtype)
    else:
        hard = box_keep_mask(task, x)
    return feathered(hard).clamp(0, 1)


# roi:graded: the blur a pixel gets falls as the classifier's Grad-CAM rises — (CAM at least, sigma) from the most to
# the least attended; chosen on the NPP validation split (held-out training images, docs/results.md), not on eval
GRADED_STEPS = ((0.5, 0.0), (0.25, 1.0), (0.1, 2.0), (0.0, 4.0))


def graded_steps(sigma_max: float = GRADED_STEPS[-1][1]) -> tuple[tuple[float, float], ...]:
    """GRADED_STEPS with every sigma scaled so the least attended pixels get `sigma_max` (`roi:graded:SIGMA_MAX`)."""
    top = GRADED_STEPS[-1][1]
    return tuple((level, sigma * sigma_max / top) for level, sigma in GRADED_STEPS)


def graded_blur(x: torch.Tensor, attention: torch.Tensor,
                steps: tuple[tuple[float, float], ...] = GRADED_STEPS) -> torch.Tensor:
    """Blur by attention (N,1,H,W in [0, 1]) in steps instead of keep-or-blur: a hard keep-mask that cuts through an
    object costs the classifier most of what it loses (roi:blur at QP 22), so the half-attended parts get a mild
    blur, not a strong one. The attention is feathered like roi_mask's edges before it is cut."""
    cam = feathered(attention)
    blurs = gaussian_blurs(x, tuple(sigma for _, sigma in steps))
    out = torch.zeros_like(x)
    left = torch.ones_like(cam)
    for i, (level, sigma) in enumerate(steps):
        take = left if i == len(steps) - 1 else left * (cam >= level).to(x.dtype)
        out = out + take * blurs[sigma]
        left = left - take
    return out


def fill_unseen(task: Task, x: torch.Tensor) -> torch.Tensor:
    """`x` with what a classifier's resize + centre crop never reads replaced by the read window's edge, replicated:
    bits the task cannot use cost next to nothing once flat (a 256² ImageNet image: the outer 16 px, 23 % of it)."""
    h, w = x.shape[-2:]
    top, bottom, left, right = seen_window((h, w), task.resolution, task.crop_ratio)
    return F.pad(x[..., top:bottom, left:right], (left, w - right, top, h - bottom), mode="replicate")


def suppress(x: torch.Tensor, mask: torch.Tensor, mode: str, strength: float) -> torch.Tensor:
    """Blend `x` (kept where mask=1) with a suppressed version: Gaussian blur of sigma `strength`, or
    ("flat") a blend towards the image's mean colour with weight `strength` in [0, 1]."""
    if mode == "blur":
        background = gaussian_blur(x, strength)
    elif mode == "flat":
        mean = x.mean(dim=(2, 3), keepdim=True)
        background = (1 - strength) * x + strength * mean
    else:
        raise ValueError(f"unknown suppression mode {mode!r}")
    return mask * x + (1 - mask) * background
