"""What the NPP is distilled towards, one adapter per kind of task, so the trainer never asks which kind it has.

A classifier's target is its 1000 probabilities on the uncompressed crop: small, so they are computed once and
stored in the crop bank (`BankedTeacher`). A detector's target is its full heads (CenterNet: 128x128x84 values,
2.7 MB a crop in float16), too large to bank, so it is recomputed from the uncompressed crop in every step — one
more forward pass, no gradient (`RecomputedTeacher`). Both give the trainer the same four things: the bank rows,
the per-image D_task, a validation batch's loss and agreement part, and the agreement over the set.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from prepcodec.errors import InputError

TEACHER_BATCH = 32
TASK_LOSSES = ("kl", "top1", "confident")


class BankedTeacher:
    """A classifier's teacher, stored per crop. D_task compares with its probabilities (KL) or, `kind="top1"`,
    with its top-1 class (cross-entropy). KL keeps the whole distribution, which is stricter than what top-1
    accuracy asks: on the validation crops ROI blur (−28 % bits at equal top-1 on imagenet-eval) scores +18 % at
    equal KL (docs/training.md)."""

    KINDS = ("kl", "top1")  # the task losses this adapter computes; the trainer's config check says it first
    WRONG_KIND = ("task loss {kind!r} is a detector's (its confident detections as certain); a classifier's hard "
                  "target is 'top1'")

    def __init__(self, task, kind: str = "kl") -> None:
        if kind not in TASK_LOSSES:
            raise InputError(f"unknown task loss {kind!r}; choose from {', '.join(TASK_LOSSES)}")
        if kind not in self.KINDS:
            raise InputError(self.WRONG_KIND.format(kind=kind))
        self.task, self.kind = task, kind

    def rows(self, crops: np.ndarray, progress: bool, desc: str) -> np.ndarray:
        """The teacher's outputs on uint8 crops (N, S, S, 3), float16, one row per crop."""
        rows = []
        for s in tqdm(range(0, len(crops), TEACHER_BATCH), desc=desc, disable=not progress, unit="batch"):
            x = torch.from_numpy(crops[s : s + TEACHER_BATCH]).permute(0, 3, 1, 2).float() / 255.0
            rows.append(torch.as_tensor(self.task.pseudo_targets(x)).float().cpu().numpy().astype(np.float16))
        return np.concatenate(rows)

    def targets(self, x: torch.Tensor, teacher: torch.Tensor):
        """What `task.loss` compares the decoded crops with (x, the uncompressed crops, is not needed)."""
        return teacher.argmax(dim=1) if self.kind == "top1" else teacher

    def distortion(self, x: torch.Tensor, x_hat: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per-image D_task of the decoded crops x_hat of the crops x."""
        return self.task.loss(x_hat, self.targets(x, teacher), reduction="none")

    def batch_terms(self, x: torch.Tensor, x_hat: torch.Tensor, teacher: torch.Tensor,
                    targets: object = None) -> tuple[float, object]:
        """A validation batch's summed task loss and its part of the agreement (the count of top-1 matches).
        `targets`: `self.targets(x, teacher)` when the caller already has it (several decodes of one batch)."""
        logits = self.task.logits(x_hat)  # once: the task loss and the agreement both come from it
        targets = self.targets(x, teacher) if targets is None else targets
        loss = self.task.loss_from_logits(logits, targets, "none")
        return float(loss.sum()), float((logits.argmax(1) == teacher.argmax(1)).sum())

    def agreement(self, parts: list, n: int) -> float:
        """Top-1 agreement with the teacher over the n validation images."""
        return sum(parts) / n


class RecomputedTeacher(BankedTeacher):
    """A detector's teacher: its heads on the uncompressed crop, recomputed per batch (nothing is banked); the
    agreement is COCO mAP@[.5:.95] of the decoded crops' boxes against the teacher's boxes.

    `kind="kl"` distils the heads as they are (soft targets: a decoded crop scoring a detection *above* the teacher
    is penalised like one scoring it below); `kind="confident"` sets the teacher's confident detections (score >=
    0.3, the boxes the agreement is measured against) to certain, everything else as it was: what mAP against those
    boxes asks, as `top1` is what top-1 agreement asks of a classifier. Measured (runs det-C and det-D,
    docs/training.md, "Session 13"): the two differ by < 0.2 %, and both turn the evidence stage's gain down at
    every QP — neither sees the mAP it buys at high QP."""

    KINDS = ("kl", "confident")
    WRONG_KIND = "a detector distils its own heads (task loss 'kl' or 'confident'), not {kind!r}"

    def rows(self, crops: np.ndarray, progress: bool, desc: str) -> np.ndarray:
        return np.zeros((len(crops), 0), np.float16)

    def targets(self, x: torch.Tensor, teacher: torch.Tensor):
        targets = self.task.pseudo_targets(x.detach())
        return self.task.confident_targets(targets) if self.kind == "confident" else targets

    def batch_terms(self, x: torch.Tensor, x_hat: torch.Tensor, teacher: torch.Tensor,
                    targets: object = None) -> tuple[float, object]:
        """The summed loss and (the batch's predictions, the teacher's) for one mAP over the set; `targets` as in
        the base class (here it saves the teacher's forward pass)."""
        targets = self.targets(x, teacher) if targets is None else targets
        loss, preds = self.task.loss_and_predictions(x_hat, targets, reduction="none")
        return float(loss.sum()), (preds, targets.predictions)

    def agreement(self, parts: list, n: int) -> float:
        from prepcodec.tasks.coco_eval import detection_map, gt_from_predictions
        from prepcodec.tasks.detection import TEACHER_THRESHOLD

        preds = [p for batch, _ in parts for p in batch]
        teacher = [p for _, batch in parts for p in batch]
        return detection_map(preds, gt_from_predictions(teacher, TEACHER_THRESHOLD))["map"]


def teacher_for(task, kind: str = "kl") -> BankedTeacher:
    """The adapter for `task`: banked for a classifier, recomputed for a detector."""
    cls = BankedTeacher if getattr(task, "kind", None) == "classification" else RecomputedTeacher
    return cls(task, kind)
