"""COCO object detectors from the `human` TF.js models: CenterNet (MobileNetV3) and NanoDet, as `Task`s.

Both graphs are cut before their own post-processing, so the heads stay differentiable; decoding runs in torch.
Images of any size are letterboxed (aspect kept, zero padding) to the model input; boxes map back to input pixels.

Loss (distillation to the teacher, i.e. the same model on the uncompressed image; `pseudo_targets` stores the
teacher's heads and its boxes):
- class heads: quality focal loss (Li et al., GFL, 2020), soft BCE weighted by |teacher - student|^2, normalised
  by the number of teacher positives (score >= 0.3): zero exactly when the student reproduces the teacher;
- CenterNet sizes: L1 on the (l, t, r, b) head in output-grid units, weighted by the teacher's peak class score,
  x 0.1 (CenterNet's size-loss weight);
- NanoDet boxes: KL divergence of the per-side distance distributions (distribution focal loss, soft form),
  weighted by the teacher's class score.
`metric` is COCO mAP@[.5:.95] against the teacher's boxes scoring >= 0.3 (or against ground truth boxes given as
a list of {"boxes", "category_ids"} dicts).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from prepcodec.tasks.coco_eval import COCO_IDS, COCO_NAMES, detection_map, gt_from_predictions
from prepcodec.tasks.registry import register_task
from prepcodec.tasks.resize import letterbox, unletterbox_boxes
from prepcodec.tasks.tfjs.task import TfjsTask

TEACHER_THRESHOLD = 0.3
CERTAIN_LOGIT = 20.0  # sigmoid = 1 - 2e-9: a score of 1 that keeps the BCE finite


@dataclass
class DetectionTargets:
    """Teacher outputs on the uncompressed images: raw heads (for the loss) and decoded boxes (for the metric)."""

    heads: list[torch.Tensor]
    predictions: list[dict]


def quality_focal_loss(logits: torch.Tensor, soft: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Summed GFL quality focal loss of student logits against soft teacher probabilities."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    return ((soft - prob).abs().pow(beta) * bce).sum()


class _Detector(TfjsTask):
    kind = "detection"
    input_size: int

    def __init__(self, device="cpu", score_threshold: float = 0.05, max_detections: int = 100) -> None:
        super().__init__(device)
        self.score_threshold = score_threshold
        self.max_detections = max_detections

    @abstractmethod
    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input tensor from a letterboxed [0, 1] NCHW batch."""

    @abstractmethod
    def _decode(self, heads: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image (boxes xyxy in letterbox pixels, scores, contiguous class indices)."""

    @abstractmethod
    def _loss(self, heads: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        """Distillation loss of student heads against teacher heads."""

    def _heads(self, images: torch.Tensor) -> tuple[list[torch.Tensor], float, tuple[int, int]]:
        x = self._prepare(images)
        boxed, scale, pad = letterbox(x, self.input_size, fill=0.0)
        return list(self.net(self._net_input(boxed))), scale, pad

    def _predictions(self, heads: list[torch.Tensor], scale: float, pad, hw) -> list[dict]:
        out = []
        for boxes, scores, cls in self._decode([h.detach() for h in heads]):
            boxes = unletterbox_boxes(boxes, scale, pad, hw)
            ids = torch.tensor([COCO_IDS[i] for i in cls.tolist()], dtype=torch.int64)
            out.append({"boxes": boxes.cpu(), "scores": scores.cpu(), "category_ids": ids,
                        "names": [COCO_NAMES[i] for i in cls.tolist()]})
        return out

    def _heads_and_predictions(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[dict]]:
        """One forward pass: the raw heads (for a loss) and the boxes decoded back onto the images."""
        heads, scale, pad = self._heads(images)
        return heads, self._predictions(heads, scale, pad, tuple(images.shape[-2:]))

    def predict(self, images: torch.Tensor) -> list[dict]:
        with torch.no_grad():
            return self._heads_and_predictions(images)[1]

    def pseudo_targets(self, images: torch.Tensor) -> DetectionTargets:
        with torch.no_grad():
            heads, preds = self._heads_and_predictions(images)
        return DetectionTargets([h.detach() for h in heads], preds)

    def loss(self, images: torch.Tensor, targets: DetectionTargets, reduction: str = "mean") -> torch.Tensor:
        """Distillation loss to the teacher's heads; `reduction="none"` gives one value per image (the NPP trainer
        weights them by a per-image, QP-dependent lambda)."""
        heads, _, _ = self._heads(images)
        return self._reduced_loss(heads, targets, reduction)

    def loss_and_predictions(self, images: torch.Tensor, targets: DetectionTargets,
                             reduction: str = "mean") -> tuple[torch.Tensor, list[dict]]:
        """`loss` and `predict` from one forward pass (validation needs both)."""
        heads, preds = self._heads_and_predictions(images)
        return self._reduced_loss(heads, targets, reduction), preds

    def _reduced_loss(self, heads: list[torch.Tensor], targets: DetectionTargets, reduction: str) -> torch.Tensor:
        teacher = [t.to(self.device) for t in targets.heads]
        if reduction == "mean":
            return self._loss(heads, teacher)
        if reduction != "none":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return torch.stack([self._loss([h[i : i + 1] for h in heads], [t[i : i + 1] for t in teacher])
                            for i in range(heads[0].shape[0])])

    def confident_targets(self, targets: DetectionTargets) -> DetectionTargets:
        """`targets` with the teacher's confident detections (the (cell, class) entries scoring >= TEACHER_THRESHOLD,
        `_confident`) at score 1 (logit CERTAIN_LOGIT) and every other entry as it was: the hard targets of the
        trainer's `--task-loss confident`. The soft distillation penalises a detection scored above the teacher as
        much as one below; mAP against the teacher's boxes only asks that these be found and ranked first."""
        heads = [h.clone() for h in targets.heads]
        for logits, mask in zip(self._class_logits(heads), self._confident_entries(heads), strict=True):
            logits[mask] = CERTAIN_LOGIT  # the class-logit views write through into the cloned heads
        return DetectionTargets(heads, targets.predictions)

    def evidence_read(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per class head, a boolean mask of the (cell, class) entries the detector is confident in on `images`
        (score >= TEACHER_THRESHOLD, the detections its distillation treats as positives)."""
        with torch.no_grad():
            heads, _, _ = self._heads(images)
        return self._confident_entries(heads)

    def predict_and_read(self, images: torch.Tensor) -> tuple[list[dict], list[torch.Tensor]]:
        """`predict` and `evidence_read` from one forward pass (the same heads: bit-identical to the two calls)."""
        with torch.no_grad():
            heads, preds = self._heads_and_predictions(images)
        return preds, self._confident_entries(heads)

    def _confident_entries(self, heads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per class head, where `heads` score a detection >= TEACHER_THRESHOLD (boolean, the head's shape)."""
        return self._confident(self._class_logits(heads))

    def evidence_score(self, images: torch.Tensor, read: list[torch.Tensor]) -> torch.Tensor:
        """Summed log-sigmoid of the class logits at the confident entries `read`: their detection scores."""
        heads, _, _ = self._heads(images)
        return sum(F.logsigmoid(logits)[mask].sum() for logits, mask in
                   zip(self._class_logits(heads), read, strict=True))

    @abstractmethod
    def _class_logits(self, heads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The class-logit part of each head (N, h, w, 80)."""

    @abstractmethod
    def _confident(self, class_logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per class head, where a detection scores >= TEACHER_THRESHOLD (boolean, the head's shape)."""

    def metric(self, predictions: list[dict], targets: Any) -> float:
        gt = gt_from_predictions(targets.predictions, TEACHER_THRESHOLD) if isinstance(
            targets, DetectionTargets) else targets
        return detection_map(predictions, gt)["map"]


class CenterNet(_Detector):
    """CenterNet, MobileNetV3 backbone, 512x512 input in 0..255, 128x128 heads: class logits and (l,t,r,b) sizes."""

    name = "centernet"
    model_file = "models/centernet.json"
    outputs = ("tower_0/CenternetHead/centernet_cls_output/BiasAdd", "tower_0/wh")
    input_size = 512
    stride = 4

    def _net_input(self, x):
        return x.permute(0, 2, 3, 1) * 255.0

    def _decode(self, heads):
        logits, wh = heads
        n, h, w, c = logits.shape
        peaks = self._peaks(logits)
        scores, idx = peaks.reshape(n, -1).topk(min(self.max_detections, h * w * c), dim=1)
        out = []
        for b in range(n):
            keep = scores[b] >= self.score_threshold
            i, s = idx[b][keep], scores[b][keep]
            cls, cell = i % c, i // c
            y, x = (cell // w).float() * self.stride, (cell % w).float() * self.stride
            ltrb = wh[b].reshape(-1, 4)[cell]
            boxes = torch.stack([x - ltrb[:, 0], y - ltrb[:, 1], x + ltrb[:, 2], y + ltrb[:, 3]], dim=1)
            out.append((boxes, s, cls))
        return out

    def _peaks(self, logits: torch.Tensor) -> torch.Tensor:
        """Heatmap scores at their 3x3 local maxima, 0 elsewhere: CenterNet's detections before the top-k."""
        hm = torch.sigmoid(logits)
        return hm * (F.max_pool2d(hm.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1) == hm)

    def _class_logits(self, heads):
        return [heads[0]]

    def _confident(self, class_logits):
        return [self._peaks(class_logits[0]) >= TEACHER_THRESHOLD]

    def _loss(self, heads, teacher):
        logits, wh = heads
        t_logits, t_wh = teacher
        soft = torch.sigmoid(t_logits)
        num_pos = (soft >= TEACHER_THRESHOLD).sum().clamp(min=1)
        weight = soft.amax(dim=-1, keepdim=True)
        size = (weight * (wh - t_wh).abs()).sum() / self.stride
        return (quality_focal_loss(logits, soft) + 0.1 * size) / num_pos


class NanoDet(_Detector):
    """NanoDet (GFL head, reg_max 10), 416x416 NCHW input, strides 8/16/32; heads are 80 logits + 4x11 bins."""

    name = "nanodet"
    model_file = "models/nanodet.json"
    outputs = ("PartitionedCall/Add_29", "PartitionedCall/Add_33", "PartitionedCall/Add_37")
    input_size = 416
    strides = (8, 16, 32)
    bins = 11
    # the original training normalisation: BGR, mean/std in 0..255
    mean = (103.53, 116.28, 123.675)
    std = (57.375, 57.12, 58.395)
    nms_iou = 0.6

    def _net_input(self, x):
        bgr = x.flip(1) * 255.0
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
        return (bgr - mean) / std

    def _distances(self, box: torch.Tensor) -> torch.Tensor:
        """(..., 44) bin logits -> (..., 4) expected distances in bins (l, t, r, b)."""
        prob = box.reshape(*box.shape[:-1], 4, self.bins).softmax(-1)
        return prob @ torch.arange(self.bins, device=box.device, dtype=prob.dtype)

    def _decode(self, heads):
        n = heads[0].shape[0]
        all_boxes, all_scores = [], []
        for head, stride in zip(heads, self.strides, strict=True):
            _, h, w, _ = head.shape
            ys, xs = torch.meshgrid(torch.arange(h, device=head.device), torch.arange(w, device=head.device),
                                    indexing="ij")
            cx, cy = ((xs + 0.5) * stride).reshape(-1), ((ys + 0.5) * stride).reshape(-1)
            d = self._distances(head[..., 80:]).reshape(n, -1, 4) * stride
            all_boxes.append(torch.stack([cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]], -1))
            all_scores.append(torch.sigmoid(head[..., :80]).reshape(n, -1, 80))
        boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
        out = []
        for b in range(n):
            s, i = scores[b].reshape(-1).topk(min(1000, scores[b].numel()))
            keep = s >= self.score_threshold
            s, i = s[keep], i[keep]
            bx, cls = boxes[b][i // 80], i % 80
            k = batched_nms(bx, s, cls, self.nms_iou)[: self.max_detections]
            out.append((bx[k], s[k], cls[k]))
        return out

    def _class_logits(self, heads):
        return [head[..., :80] for head in heads]

    def _confident(self, class_logits):
        return [torch.sigmoid(logits) >= TEACHER_THRESHOLD for logits in class_logits]

    def _loss(self, heads, teacher):
        cls_loss = box_loss = 0.0
        num_pos = sum((torch.sigmoid(t[..., :80]) >= TEACHER_THRESHOLD).sum() for t in teacher).clamp(min=1)
        for head, t in zip(heads, teacher, strict=True):
            soft = torch.sigmoid(t[..., :80])
            cls_loss = cls_loss + quality_focal_loss(head[..., :80], soft)
            shape = (*head.shape[:-1], 4, self.bins)
            t_prob = t[..., 80:].reshape(shape).softmax(-1)
            kl = (t_prob * (t_prob.clamp_min(1e-12).log() - head[..., 80:].reshape(shape).log_softmax(-1))).sum(-1)
            box_loss = box_loss + (soft.amax(-1, keepdim=True) * kl).sum() / 4
        return (cls_loss + box_loss) / num_pos


@register_task("centernet", kind="detection", description="CenterNet MobileNetV3, COCO 80 classes (TF.js, human)")
def _centernet(device: str = "cpu", **kw) -> CenterNet:
    return CenterNet(device=device, **kw)


@register_task("nanodet", kind="detection", description="NanoDet GFL, COCO 80 classes (TF.js, human)")
def _nanodet(device: str = "cpu", **kw) -> NanoDet:
    return NanoDet(device=device, **kw)


def draw_detections(rgb, prediction: dict, min_score: float = 0.3):
    """A PIL image of `rgb` (uint8 HxWx3) with the boxes scoring >= min_score drawn and labelled (for docs/CLI)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(img)
    colors = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")
    for k, (box, name, score) in enumerate(zip(prediction["boxes"].tolist(), prediction["names"],
                                               prediction["scores"].tolist(), strict=True)):
        if score < min_score:
            continue
        color = colors[k % len(colors)]
        draw.rectangle(box, outline=color, width=3)
        label = f"{name} {score:.2f}"
        x0, y0 = box[0], max(0, box[1] - 12)
        draw.rectangle(draw.textbbox((x0, y0), label), fill=color)
        draw.text((x0, y0), label, fill="white")
    return img


def detection_sheet(task_name: str, names=("kodim23.png", "coffee.png", "astronaut.png"), height: int = 300):
    """Bundled photos side by side with `task_name`'s detections drawn: the docs/img figures."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from prepcodec.tasks.registry import create_task

    task = create_task(task_name)
    tiles = []
    for name in names:
        rgb = np.asarray(Image.open(Path(__file__).parents[1] / "data" / "samples" / name).convert("RGB"))
        pred = task.predict(torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1)[None])[0]
        tiles.append(draw_detections(rgb, pred).resize((round(rgb.shape[1] * height / rgb.shape[0]), height)))
    sheet = Image.new("RGB", (sum(t.width for t in tiles), height), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (sum(t.width for t in tiles[:k]), 0))
    return sheet.quantize(colors=256)


if __name__ == "__main__":  # python -m prepcodec.tasks.detection docs/img
    import sys

    for model in ("centernet", "nanodet"):
        detection_sheet(model).save(f"{sys.argv[1] if len(sys.argv) > 1 else '.'}/detections-{model}.png")
