"""Task predictions as people and programs read them: the stable JSON form (`predict --json`), text, drawings.

The JSON keys are a stable interface (DESIGN.md): `top5` [{index, name, score}] (classification), `boxes`
[{xyxy, category_id, name, score}] (detection, input pixels), `keypoints` [{name, xy, score}] in COCO order (pose).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prepcodec.errors import InputError

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
SKELETON = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
    (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip
DRAW_MIN_SCORE = 0.3  # boxes / keypoints below this score are not drawn


def _r(v: float, nd: int) -> float:
    return round(float(v), nd)


def prediction_json(kind: str, pred: dict[str, Any]) -> dict[str, Any]:
    """The stable JSON form of one prediction (without `image`), chosen by task kind."""
    import torch
    if kind == "classification":
        top5 = pred["top5"]
        return {"top5": [{"index": int(t["index"]), "name": t["name"], "score": _r(t["score"], 6)} for t in top5]}
    if kind == "detection":
        return {
            "boxes": [
                {"xyxy": [_r(v, 2) for v in box], "category_id": int(cid), "name": name, "score": _r(score, 6)}
                for box, cid, name, score in zip(
                    pred["boxes"].tolist(), pred["category_ids"].tolist(), pred["names"], pred["scores"].tolist(),
                    strict=True,
                )
            ]
        }
    if kind == "pose":
        kps = pred["keypoints"].tolist()
        return {
            "keypoints": [
                {"name": COCO_KEYPOINTS[i] if len(kps) == len(COCO_KEYPOINTS) else str(i), "xy": [_r(x, 2), _r(y, 2)],
                 "score": _r(s, 6)}
                for i, (x, y, s) in enumerate(kps)
            ]
        }
    if kind == "segmentation" and isinstance(pred.get("mask"), torch.Tensor):
        mask = pred["mask"].float()
        return {"mask_shape": list(mask.shape), "foreground_fraction": _r((mask >= 0.5).float().mean(), 6)}
    raise InputError(f"no JSON form for predictions of task kind {kind!r}")


def prediction_text(kind: str, pred: dict[str, Any]) -> list[str]:
    """Human-readable lines for one prediction."""
    js = prediction_json(kind, pred)
    if kind == "classification":
        return [f"{t['score']:7.2%}  {t['name']} ({t['index']})" for t in js["top5"]]
    if kind == "detection":
        return [f"{b['score']:7.2%}  {b['name']} ({b['category_id']}) at {b['xyxy']}" for b in js["boxes"]] or ["-"]
    if kind == "pose":
        return [f"{k['score']:7.2%}  {k['name']} at {k['xy']}" for k in js["keypoints"]]
    return [f"{k}: {v}" for k, v in js.items()]


def draw_prediction(rgb: np.ndarray, kind: str, pred: dict[str, Any], min_score: float = DRAW_MIN_SCORE) -> np.ndarray:
    """A copy of `rgb` with boxes (+ labels), keypoints (+ skeleton) or a mask tint drawn on it."""
    import torch
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 300))
    if kind == "detection":
        for box in prediction_json(kind, pred)["boxes"]:
            if box["score"] >= min_score:
                x1, y1, x2, y2 = box["xyxy"]
                draw.rectangle((x1, y1, x2, y2), outline=(255, 40, 40), width=width)
                label = f"{box['name']} {box['score']:.2f}"
                tx, ty = x1 + width, max(0.0, y1 - 12 - width)
                draw.rectangle(draw.textbbox((tx, ty), label), fill=(255, 40, 40))
                draw.text((tx, ty), label, fill=(255, 255, 255))
    elif kind == "pose":
        kps = pred["keypoints"].tolist()
        for a, b in SKELETON:
            if max(a, b) < len(kps) and min(kps[a][2], kps[b][2]) >= min_score:
                draw.line((kps[a][0], kps[a][1], kps[b][0], kps[b][1]), fill=(40, 220, 40), width=width)
        r = 2 * width
        for x, y, s in kps:
            if s >= min_score:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 40, 40))
    elif kind == "segmentation" and isinstance(pred.get("mask"), torch.Tensor):
        mask = pred["mask"].float().cpu().numpy()
        if mask.shape == rgb.shape[:2]:  # dim what is not the segmented foreground
            keep = np.where(mask >= 0.5, 1.0, 0.3)[..., None]
            return (rgb.astype(np.float32) * keep).round().astype(np.uint8)
    return np.asarray(im)
