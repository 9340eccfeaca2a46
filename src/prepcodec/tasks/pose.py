"""MoveNet SinglePose Lightning (17 COCO keypoints) from the `human` TF.js model, as a `Task`.

The graph's input is int32 0..255; it is fed after its Cast (at the float NHWC tensor the graph normalises
itself), so gradients reach the pixels. Images are letterboxed to 192x192 (human pads to a square too). The
graph's own decoding (argmax over a centre heatmap, regression to raw keypoints, distance-weighted argmax over
the keypoint heatmaps, sub-cell offsets) is re-implemented in torch on the four heads so it batches.

Loss: heatmap distillation to the teacher (the same model on the uncompressed image): quality focal loss
(soft BCE x |teacher - student|^2, see detection.py) on the keypoint and centre heatmaps, plus L1 on the
keypoint offsets weighted by the teacher's heatmap, normalised per keypoint. Metric: PCK@0.1 against the
teacher's confident keypoints, or COCO OKS-AP against ground-truth persons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prepcodec.tasks.coco_eval import keypoint_oks_ap, pck
from prepcodec.tasks.detection import quality_focal_loss
from prepcodec.tasks.registry import register_task
from prepcodec.tasks.resize import letterbox
from prepcodec.tasks.tfjs.task import TfjsTask

_P = "StatefulPartitionedCall/"
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)


@dataclass
class PoseTargets:
    """Teacher heads (keypoint logits, centre logits, regression, offsets) and its decoded keypoints."""

    heads: list[torch.Tensor]
    predictions: list[dict]


class MoveNet(TfjsTask):
    name = "movenet"
    kind = "pose"
    model_file = "models/movenet-lightning.json"
    inputs = (_P + "stack",)
    outputs = (
        _P + "kpt_heatmap_0/conv2d_5/BiasAdd",  # (N,48,48,17) keypoint heatmap logits
        _P + "center_0/conv2d_4/BiasAdd",  # (N,48,48,1) person-centre logits
        _P + "kpt_regress_0/conv2d_6/BiasAdd",  # (N,48,48,34) centre -> keypoint (dy, dx) in cells
        _P + "kpt_offset_0/conv2d_7/BiasAdd",  # (N,48,48,34) sub-cell (dy, dx) per keypoint
        _P + "truediv_2",  # (N,48,48,1) centre score x the graph's centre-prior weight
    )
    input_size = 192
    # the graph adds this to the pixel distance before dividing the heatmap by it (add_5/y)
    distance_bias = 1.7998046875

    def _heads(self, images: torch.Tensor):
        x = self._prepare(images)
        boxed, scale, pad = letterbox(x, self.input_size, fill=0.0)
        return list(self.net(boxed.permute(0, 2, 3, 1) * 255.0)), scale, pad

    def _decode(self, heads: list[torch.Tensor]) -> torch.Tensor:
        """(N,17,3) keypoints (x, y, score) in letterboxed pixels."""
        kpt_logits, _, regress, offset, center = heads
        n, h, w, k = kpt_logits.shape
        idx = center.reshape(n, -1).argmax(1)
        cy, cx = idx // w, idx % w
        b = torch.arange(n, device=idx.device)
        reg = regress[b, cy, cx].reshape(n, k, 2)
        ry, rx = cy[:, None].float() + reg[..., 0], cx[:, None].float() + reg[..., 1]  # (N,17) raw positions
        gy = torch.arange(h, device=idx.device, dtype=reg.dtype).reshape(1, h, 1, 1)
        gx = torch.arange(w, device=idx.device, dtype=reg.dtype).reshape(1, 1, w, 1)
        dist = ((gy - ry[:, None, None, :]) ** 2 + (gx - rx[:, None, None, :]) ** 2).sqrt()
        heat = torch.sigmoid(kpt_logits)
        best = (heat / (dist + self.distance_bias)).reshape(n, h * w, k).argmax(1)  # (N,17)
        ky, kx = best // w, best % w
        kk = torch.arange(k, device=idx.device)[None].expand(n, k)
        bb = b[:, None].expand(n, k)
        off = offset.reshape(n, h, w, k, 2)[bb, ky, kx, kk]
        score = heat[bb, ky, kx, kk]
        cell = self.input_size / h
        y = (ky.float() + off[..., 0]) * cell
        x = (kx.float() + off[..., 1]) * cell
        return torch.stack([x, y, score], dim=-1)

    def _predictions(self, heads, scale: float, pad: tuple[int, int], hw) -> list[dict]:
        kp = self._decode([t.detach() for t in heads]).cpu()
        left, top = pad
        xs = ((kp[..., 0] - left) / scale).clamp(0, hw[1])
        ys = ((kp[..., 1] - top) / scale).clamp(0, hw[0])
        return [{"keypoints": torch.stack([x, y, s], dim=-1)} for x, y, s in zip(xs, ys, kp[..., 2], strict=True)]

    def predict(self, images: torch.Tensor) -> list[dict]:
        with torch.no_grad():
            heads, scale, pad = self._heads(images)
        return self._predictions(heads, scale, pad, tuple(images.shape[-2:]))

    def pseudo_targets(self, images: torch.Tensor) -> PoseTargets:
        with torch.no_grad():
            heads, scale, pad = self._heads(images)
        return PoseTargets([t.detach() for t in heads], self._predictions(heads, scale, pad, images.shape[-2:]))

    def loss(self, images: torch.Tensor, targets: PoseTargets) -> torch.Tensor:
        heads, _, _ = self._heads(images)
        kpt, ctr, _, off, _ = heads
        t_kpt, t_ctr, _, t_off, _ = (t.to(self.device) for t in targets.heads)
        soft = torch.sigmoid(t_kpt)
        hm = quality_focal_loss(kpt, soft) + quality_focal_loss(ctr, torch.sigmoid(t_ctr))
        n, h, w, k = kpt.shape
        l1 = (soft[..., None] * (off - t_off).reshape(n, h, w, k, 2).abs()).sum()
        return (hm + l1) / (n * k)

    def metric(self, predictions: list[dict], targets: Any) -> float:
        """PCK@0.1 vs the teacher (PoseTargets), or OKS-AP vs ground truth (list of {keypoints, boxes, areas})."""
        if isinstance(targets, PoseTargets):
            return pck(predictions, targets.predictions)
        return keypoint_oks_ap(predictions, targets)


@register_task("movenet", kind="pose", description="MoveNet SinglePose Lightning, 17 COCO keypoints (TF.js, human)")
def _movenet(device: str = "cpu", **kw) -> MoveNet:
    return MoveNet(device=device, **kw)
