"""Accuracy metrics for the TF.js tasks: COCO box mAP (pycocotools), keypoint OKS-AP and PCK, mask mIoU.

Ground truth is either a COCO json (the coco-val subset) or the teacher's own predictions on the uncompressed
images (pseudo-labels: boxes above `teacher_threshold` become ground truth), so the same metric serves the
labelled evaluation and the rate-accuracy sweeps on unlabelled photos. Everything is built in memory; the
pycocotools console output is silenced.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from prepcodec.errors import InputError

# the 80 COCO detection classes: contiguous index i -> (original category id, name)
COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple(
    zip(
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
         34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
         62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90],
        ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
         "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
         "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
         "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
         "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
         "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
         "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
         "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
         "teddy bear", "hair drier", "toothbrush"],
        strict=True,
    )
)
COCO_IDS = [c for c, _ in COCO_CATEGORIES]
COCO_NAMES = [n for _, n in COCO_CATEGORIES]
# COCO keypoint sigmas (person_keypoints), in the 17-keypoint order MoveNet uses
KPT_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _coco(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _categories() -> list[dict]:
    return [{"id": c, "name": n, "supercategory": "none"} for c, n in COCO_CATEGORIES]


def _evaluate(gt: dict, dets: list[dict], iou_type: str, sigmas: np.ndarray | None = None) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    coco_gt = _coco(gt)
    if not dets:
        return np.zeros(12)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = sigmas
        ev.params.imgIds = [im["id"] for im in gt["images"]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.maximum(ev.stats, 0.0)  # -1 (no ground truth at all) counts as 0


def gt_from_predictions(predictions: Sequence[dict], teacher_threshold: float = 0.3) -> list[dict]:
    """Teacher predictions -> per-image ground truth: boxes scoring at least `teacher_threshold`."""
    out = []
    for p in predictions:
        keep = _np(p["scores"]) >= teacher_threshold
        out.append({"boxes": _np(p["boxes"])[keep], "category_ids": _np(p["category_ids"])[keep]})
    return out


def gt_from_coco_json(path: str | Path, file_names: Sequence[str]) -> list[dict]:
    """Per-image ground truth (xyxy boxes, category ids, iscrowd) for the images named, from an instances json."""
    doc = json.loads(Path(path).read_text())
    by_name = {im["file_name"]: im["id"] for im in doc["images"]}
    anns: dict[int, list] = {}
    for a in doc["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    out = []
    for name in file_names:
        if name not in by_name:
            raise InputError(f"{name} is not an image of {path}")
        rows = anns.get(by_name[name], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in rows)], dtype=np.float64)
        out.append({
            "boxes": boxes.reshape(-1, 4),
            "category_ids": np.array([a["category_id"] for a in rows], dtype=np.int64),
            "iscrowd": np.array([a.get("iscrowd", 0) for a in rows], dtype=np.int64),
        })
    return out


def keypoints_gt_from_coco_json(path: str | Path, file_names: Sequence[str]) -> list[dict]:
    """Per-image persons ({"keypoints" (P,17,3), "boxes" (P,4) xyxy, "areas" (P,)}) from a person_keypoints json."""
    doc = json.loads(Path(path).read_text())
    by_name = {im["file_name"]: im["id"] for im in doc["images"]}
    persons: dict[int, list] = {}
    for a in doc["annotations"]:
        persons.setdefault(a["image_id"], []).append(a)
    out = []
    for name in file_names:
        if name not in by_name:
            raise InputError(f"{name} is not an image of {path}")
        rows = persons.get(by_name[name], [])
        out.append({
            "keypoints": np.array([a["keypoints"] for a in rows], dtype=np.float64).reshape(-1, 17, 3),
            "boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in rows)]).reshape(-1, 4),
            "areas": np.array([a["area"] for a in rows], dtype=np.float64),
        })
    return out


def detection_map(predictions: Sequence[dict], ground_truth: Sequence[dict]) -> dict[str, float]:
    """COCO bbox mAP@[.5:.95] and mAP@.5 of per-image predictions ({boxes xyxy, scores, category_ids})."""
    if len(predictions) != len(ground_truth):
        raise InputError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth images")
    images, anns, dets = [], [], []
    for i, (p, g) in enumerate(zip(predictions, ground_truth, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        crowd = _np(g.get("iscrowd", np.zeros(len(g["boxes"]))))
        for box, cat, cr in zip(_np(g["boxes"]).reshape(-1, 4), _np(g["category_ids"]), crowd, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(cat), "iscrowd": int(cr),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
        for box, cat, s in zip(_np(p["boxes"]).reshape(-1, 4), _np(p["category_ids"]), _np(p["scores"]), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            dets.append({"image_id": i + 1, "category_id": int(cat), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "score": float(s)})
    stats = _evaluate({"images": images, "annotations": anns, "categories": _categories()}, dets, "bbox")
    return {"map": float(stats[0]), "map50": float(stats[1])}


def keypoint_oks_ap(predictions: Sequence[dict], ground_truth: Sequence[dict]) -> float:
    """COCO keypoint AP (OKS) of single-person predictions ({keypoints (17,3) x,y,score}) against GT persons
    (per image: {"keypoints": (P,17,3) with visibility, "boxes": (P,4) xyxy, "areas": (P,)})."""
    images, anns, dets = [], [], []
    for i, (p, g) in enumerate(zip(predictions, ground_truth, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for k, box, area in zip(_np(g["keypoints"]).reshape(-1, 17, 3), _np(g["boxes"]).reshape(-1, 4),
                                _np(g["areas"]), strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "keypoints": [float(v) for v in k.reshape(-1)], "num_keypoints": int((k[:, 2] > 0).sum()),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(area)})
        kp = _np(p["keypoints"]).reshape(17, 3).astype(np.float64)
        flat = np.concatenate([kp[:, :2], np.ones((17, 1))], axis=1).reshape(-1)
        dets.append({"image_id": i + 1, "category_id": 1, "keypoints": [float(v) for v in flat],
                     "score": float(kp[:, 2].mean())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    return float(_evaluate(gt, dets, "keypoints", KPT_SIGMAS)[0])


def pck(predictions: Sequence[dict], targets: Sequence[dict], alpha: float = 0.1, min_score: float = 0.3) -> float:
    """PCK@alpha: share of the target's confident keypoints (score >= min_score) that the prediction places within
    alpha x the longer side of the target keypoints' bounding box. 1.0 when nothing is confident in the target."""
    hits = total = 0
    for p, t in zip(predictions, targets, strict=True):
        kp, kt = _np(p["keypoints"]).reshape(17, 3), _np(t["keypoints"]).reshape(17, 3)
        sel = kt[:, 2] >= min_score
        if not sel.any():
            continue
        pts = kt[sel, :2]
        scale = max(float((pts.max(0) - pts.min(0)).max()), 1.0)
        dist = np.linalg.norm(kp[sel, :2] - pts, axis=1)
        hits += int((dist <= alpha * scale).sum())
        total += int(sel.sum())
    return hits / total if total else 1.0


SEGMENT_COUNTS = ("i_fg", "u_fg", "i_bg", "u_bg")


def segmentation_counts(mask, reference, threshold: float = 0.5) -> dict[str, int]:
    """Pixel counts of one mask against a reference mask (probabilities in [0, 1], same size), per class.

    The two-class mIoU of a set of images is a ratio of sums of these counts, so an evaluation record that keeps
    only them (not the masks) still scores every subset, and every bootstrap resample, exactly.
    """
    pb, tb = _np(mask) >= threshold, _np(reference) >= threshold
    if pb.shape != tb.shape:
        raise InputError(f"mask shapes differ: {pb.shape} vs {tb.shape}")
    return {"i_fg": int((pb & tb).sum()), "u_fg": int((pb | tb).sum()),
            "i_bg": int((~pb & ~tb).sum()), "u_bg": int((~pb | ~tb).sum())}


def miou_from_counts(i_fg: float, u_fg: float, i_bg: float, u_bg: float) -> float:
    """Mean IoU over the classes present in prediction or reference (1.0 when neither has any pixel)."""
    ious = [i / u for i, u in ((i_bg, u_bg), (i_fg, u_fg)) if u > 0]
    return float(np.mean(ious)) if ious else 1.0


def mean_iou(pred_masks: Sequence, target_masks: Sequence, threshold: float = 0.5) -> float:
    """Two-class (background, foreground) mIoU over all pixels of all images; masks are probabilities in [0, 1]."""
    total = dict.fromkeys(SEGMENT_COUNTS, 0)
    for p, t in zip(pred_masks, target_masks, strict=True):
        for k, v in segmentation_counts(p, t, threshold).items():
            total[k] += v
    return miou_from_counts(**total)


def coco_subset_dir() -> Path:
    """The 79-image COCO val subset folder; DataMissing when absent."""
    from prepcodec.data.datasets import get_dataset

    return get_dataset("coco-val").instances_json.parent


def evaluate_detector(task_name: str, limit: int | None = None, device: str = "cpu") -> dict[str, float]:
    """mAP of a registered detector on the clean COCO subset images against their ground truth."""
    from PIL import Image
    from tqdm import tqdm

    from prepcodec.tasks.registry import create_task

    folder = coco_subset_dir()
    names = sorted(p.name for p in (folder / "images").glob("*.jpg"))[:limit]
    task = create_task(task_name, device=device)
    preds = []
    for name in tqdm(names, desc=task_name, unit="img"):
        rgb = np.asarray(Image.open(folder / "images" / name).convert("RGB"), dtype=np.float32) / 255.0
        preds.extend(task.predict(torch.from_numpy(rgb).permute(2, 0, 1)[None]))
    return detection_map(preds, gt_from_coco_json(folder / "instances.json", names))


if __name__ == "__main__":  # python -m prepcodec.tasks.coco_eval centernet nanodet
    import sys
    import time

    for arg in sys.argv[1:] or ["centernet", "nanodet"]:
        t0 = time.time()
        res = evaluate_detector(arg)
        print(f"{arg}: mAP@[.5:.95] {res['map']:.3f}  mAP@.5 {res['map50']:.3f}  ({time.time() - t0:.0f} s)")
