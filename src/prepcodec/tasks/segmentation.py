"""MediaPipe selfie (person) segmentation from the `human` TF.js model, as a `Task`.

As in human: the image is resized (not letterboxed) to 256x256, scaled to [0, 1], and the one-channel mask is
resized back to the input size. The graph is cut before its final sigmoid so the loss sees logits.
Predictions: per image {"mask": (H, W) person probability}. Loss: soft binary cross-entropy of the student's
mask logits against the teacher's mask probabilities (the same model on the uncompressed image), at model
resolution. Metric: two-class mIoU (background/person) of masks thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from prepcodec.tasks.coco_eval import mean_iou
from prepcodec.tasks.registry import register_task
from prepcodec.tasks.resize import resize_to
from prepcodec.tasks.tfjs.task import TfjsTask


@dataclass
class SegmentationTargets:
    """Teacher mask logits at model resolution (N,256,256,1) and its masks at input size."""

    logits: torch.Tensor
    masks: list[torch.Tensor]


class Selfie(TfjsTask):
    name = "selfie"
    kind = "segmentation"
    model_file = "models/selfie.json"
    outputs = ("segment_add",)
    input_size = 256

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to(self._prepare(images), self.input_size)
        return self.net(x.permute(0, 2, 3, 1))[0]

    @staticmethod
    def _masks(logits: torch.Tensor, hw) -> list[torch.Tensor]:
        up = F.interpolate(logits.permute(0, 3, 1, 2), size=tuple(hw), mode="bilinear", align_corners=False)
        return [m[0] for m in torch.sigmoid(up).cpu()]

    def predict(self, images: torch.Tensor) -> list[dict]:
        with torch.no_grad():
            return [{"mask": m} for m in self._masks(self._logits(images), images.shape[-2:])]

    def pseudo_targets(self, images: torch.Tensor) -> SegmentationTargets:
        with torch.no_grad():
            logits = self._logits(images)
        return SegmentationTargets(logits.detach(), self._masks(logits, images.shape[-2:]))

    def loss(self, images: torch.Tensor, targets: SegmentationTargets) -> torch.Tensor:
        soft = torch.sigmoid(targets.logits.to(self.device))
        return F.binary_cross_entropy_with_logits(self._logits(images), soft)

    def metric(self, predictions: list[dict], targets: Any) -> float:
        """mIoU against the teacher (SegmentationTargets) or against a list of ground-truth masks."""
        masks = targets.masks if isinstance(targets, SegmentationTargets) else targets
        return mean_iou([p["mask"] for p in predictions], masks)


@register_task("selfie", kind="segmentation", description="MediaPipe selfie person segmentation (TF.js, human)")
def _selfie(device: str = "cpu", **kw) -> Selfie:
    return Selfie(device=device, **kw)
