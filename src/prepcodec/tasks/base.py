"""The task contract: a downstream vision model that predicts, scores, and gives image gradients.

Images are float RGB in [0, 1], NCHW, any size; the task resizes / letterboxes differentiably.
Targets are ground truth or pseudo-labels (the same model's predictions on the uncompressed image).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from prepcodec.errors import InputError


class Task(ABC):
    """A pretrained vision model behind one interface (see module docstring)."""

    name: str
    kind: str  # "classification" | "detection" | "pose" | "segmentation"

    @abstractmethod
    def predict(self, images: torch.Tensor) -> list[Any]:
        """Per-image predictions (no gradient)."""

    @abstractmethod
    def pseudo_targets(self, images: torch.Tensor) -> Any:
        """Teacher targets from uncompressed images, in the form `loss` and `metric` accept."""

    @abstractmethod
    def loss(self, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar loss, differentiable w.r.t. `images`."""

    @abstractmethod
    def metric(self, predictions: list[Any], targets: Any) -> float:
        """Task accuracy (top-1, mAP, OKS-AP, mIoU) of predictions against targets."""

    def to(self, device: str | torch.device) -> Task:
        """Move the model to a device; returns self."""
        return self

    # --- evidence amplification (npp.evidence): what the model reads, and how strongly it reads it --------------
    def evidence_read(self, images: torch.Tensor) -> Any:
        """What the model reads on (uncompressed) images — a classifier's top-1 class, a detector's confident
        detections — in the form `evidence_score` takes. No gradient."""
        raise InputError(f"{self.name} ({self.kind}): evidence amplification is defined for classifiers and "
                         "detectors only")

    def predict_and_read(self, images: torch.Tensor) -> tuple[list[Any], Any]:
        """`predict` and `evidence_read` of the same images. An ROI network reads both on one picture (its
        attention and its evidence); a task that gets both from one forward pass overrides this."""
        return self.predict(images), self.evidence_read(images)

    def evidence_score(self, images: torch.Tensor, read: Any) -> torch.Tensor:
        """The summed log-likelihood of `read` on `images` (scalar), differentiable w.r.t. `images`: what the
        amplification climbs."""
        raise InputError(f"{self.name} ({self.kind}): evidence amplification is defined for classifiers and "
                         "detectors only")


def check_device(device: str) -> str:
    """A `--device` value prepcodec can run on ("cpu", "cuda", "cuda:N"), or InputError in one line."""
    import re

    text = str(device).strip().lower()
    if text != "cpu" and not re.fullmatch(r"cuda(:\d+)?", text):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return text
