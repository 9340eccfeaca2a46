"""Task accuracy from per-image records, for any subset of images (with repeats, for the bootstrap).

Classification metrics are means of per-image indicators. COCO metrics (box mAP, keypoint AP) run pycocotools'
per-image matching once (`COCOeval.evaluate`) and then re-accumulate precision/recall over any multiset of
images with the same algorithm as `COCOeval.accumulate`, so a bootstrap resample costs milliseconds and the
full-set value equals pycocotools' own.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prepcodec.eval.records import ImageRecord
from prepcodec.tasks.coco_eval import SEGMENT_COUNTS, miou_from_counts, segmentation_counts

TEACHER_SCORE_THRESHOLD = 0.3  # teacher detections / keypoints above this score are pseudo ground truth


def prediction_summary(kind: str, pred: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compact, JSON-able form of one task prediction (what records store).

    Segmentation is scored against the teacher's mask, which a summary cannot carry: the teacher's own summary is
    its foreground fraction, a decoded image's is its pixel counts against `reference` (the teacher's raw output).
    """
    if kind == "classification":
        top = pred["top5"][0]
        return {"top1": int(top["index"]), "score": float(top["score"])}
    if kind == "detection":
        return {
            "boxes": [[float(v) for v in b] for b in pred["boxes"].tolist()],
            "scores": [float(s) for s in pred["scores"].tolist()],
            "category_ids": [int(c) for c in pred["category_ids"].tolist()],
        }
    if kind == "pose":
        return {"keypoints": [[float(v) for v in k] for k in pred["keypoints"].tolist()]}
    if kind == "segmentation":
        if reference is None:
            return {"fg": float((pred["mask"].detach().cpu().numpy() >= 0.5).mean())}
        return segmentation_counts(pred["mask"], reference["mask"])
    if kind == "none":
        return {}
    raise ValueError(f"task kind {kind!r} has no evaluation metric yet")


@dataclass(frozen=True)
class GroundTruth:
    """COCO ground-truth files of a data set (None: compare against the teacher instead)."""

    instances_json: Path | None = None
    keypoints_json: Path | None = None


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _coco(dataset: dict[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


@dataclass(frozen=True)
class _CategoryMatches:
    """One category's detections of all images, concatenated in image order (as COCOeval.accumulate sees them)."""

    score: np.ndarray  # (D,)
    tp: np.ndarray  # (T, D) matched and not ignored, per IoU threshold
    fp: np.ndarray  # (T, D) unmatched and not ignored
    start: np.ndarray  # (n_images,) offset of each image's detections
    count: np.ndarray  # (n_images,) number of detections kept (<= maxDet)
    gt_count: np.ndarray  # (n_images,) non-ignored ground truths

    @staticmethod
    def build(evals: list[dict | None], n_images: int, max_det: int, n_t: int) -> _CategoryMatches:
        gt_count = np.zeros(n_images, dtype=np.int64)
        count = np.zeros(n_images, dtype=np.int64)
        scores, matches, ignores = [np.zeros(0)], [np.zeros((n_t, 0))], [np.zeros((n_t, 0))]
        for i, e in enumerate(evals):
            if e is None:
                continue
            gt_count[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            d = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
            count[i] = len(d)
            scores.append(d)
            matches.append(np.asarray(e["dtMatches"])[:, :max_det].reshape(n_t, len(d)))
            ignores.append(np.asarray(e["dtIgnore"])[:, :max_det].reshape(n_t, len(d)))
        dtm = np.concatenate(matches, axis=1) != 0
        dt_ig = np.concatenate(ignores, axis=1) != 0
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        return _CategoryMatches(np.concatenate(scores), dtm & ~dt_ig, ~dtm & ~dt_ig, start, count, gt_count)

    def select(self, idx: np.ndarray) -> np.ndarray:
        """Detection positions for images `idx` in order, sorted by score like accumulate (stable mergesort)."""
        n = self.count[idx]
        total = int(n.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        first = np.cumsum(n) - n  # where each drawn image's block starts in the selection
        pos = np.arange(total) + np.repeat(self.start[idx] - first, n)
        return pos[np.argsort(-self.score[pos], kind="mergesort")]


class CocoScorer:
    """Per-image COCO matching done once; AP over any multiset of images afterwards."""

    def __init__(self, gt: dict[str, Any], dets: list[dict[str, Any]], n_images: int, iou_type: str) -> None:
        from pycocotools.cocoeval import COCOeval

        self.n_images = n_images
        coco_gt = _coco(gt)
        coco_dt = _quiet(coco_gt.loadRes, dets) if dets else _coco({**gt, "annotations": []})
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = list(range(n_images))
        if iou_type == "keypoints":
            ev.params.catIds = [1]
        # only the "all" area range is scored: matching the other three ranges would triple the set-up time
        ev.params.areaRng, ev.params.areaRngLbl = ev.params.areaRng[:1], ev.params.areaRngLbl[:1]
        _quiet(ev.evaluate)
        p = ev.params
        self.iou_thrs = p.iouThrs
        self.rec_thrs = p.recThrs
        self.max_det = p.maxDets[-1]
        n_area = len(p.areaRng)
        # evalImgs is ordered [category][area range][image]; keep area range "all" (index 0). Per category, the
        # images' matches are concatenated once, so a resample is an index gather instead of a Python loop.
        self.per_cat: list[_CategoryMatches] = []
        for k in range(len(p.catIds)):
            base = k * n_area * n_images
            cat = _CategoryMatches.build(ev.evalImgs[base : base + n_images], n_images, self.max_det,
                                         len(self.iou_thrs))
            self.per_cat.append(cat)
        self._last: tuple[bytes, np.ndarray] | None = None  # map and map50 of one resample share one precision

    def precision(self, idx: np.ndarray) -> np.ndarray:
        """(T, R, K) precision like COCOeval.accumulate for area 'all' and the largest maxDet; -1 = no GT.

        `idx` is a multiset of image indices; an image drawn c times counts c times (its detections and ground
        truth repeated), which for idx = arange(n) reproduces pycocotools exactly. The last result is kept, so
        asking for AP and AP50 of the same images accumulates once (treat the returned array as read-only).
        """
        idx = np.asarray(idx, dtype=np.int64)
        key = idx.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        n_t, n_r = len(self.iou_thrs), len(self.rec_thrs)
        out = -np.ones((n_t, n_r, len(self.per_cat)))
        for k, cat in enumerate(self.per_cat):
            npig = int(cat.gt_count[idx].sum())
            if npig == 0:
                continue
            pos = cat.select(idx)
            tps, fps = cat.tp[:, pos], cat.fp[:, pos]
            tp = np.cumsum(tps, axis=1, dtype=np.float64)
            fp = np.cumsum(fps, axis=1, dtype=np.float64)
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope, as in accumulate
            n_d = pr.shape[1]
            inds = np.stack([np.searchsorted(rc[t], self.rec_thrs, side="left") for t in range(n_t)])
            ok = inds < n_d
            q = np.zeros((n_t, n_r))
            q[ok] = pr[np.nonzero(ok)[0], inds[ok]]
            out[:, :, k] = q
        out.flags.writeable = False
        self._last = (key, out)
        return out

    @staticmethod
    def _mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else float("nan")

    def ap(self, idx: np.ndarray) -> float:
        return self._mean(self.precision(idx))

    def ap50(self, idx: np.ndarray) -> float:
        return self._mean(self.precision(idx)[0])


def _box_gt_from_file(path: Path, files: list[str]) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    by_file = {im["file_name"]: im["id"] for im in data["images"]}
    remap = {by_file[f]: i for i, f in enumerate(files) if f in by_file}
    images = [{"id": i, "file_name": f} for i, f in enumerate(files)]
    anns = []
    for a in data["annotations"]:
        if a["image_id"] in remap:
            anns.append({**a, "image_id": remap[a["image_id"]], "id": len(anns) + 1})
    return {"images": images, "annotations": anns, "categories": data["categories"]}


def _box_gt_from_teacher(records: list[ImageRecord]) -> dict[str, Any]:
    anns, cats = [], set()
    for i, r in enumerate(records):
        t = r.teacher
        for box, score, cat in zip(t["boxes"], t["scores"], t["category_ids"], strict=True):
            if score >= TEACHER_SCORE_THRESHOLD:
                x1, y1, x2, y2 = box
                w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x1, y1, w, h],
                             "area": w * h, "iscrowd": 0})
                cats.add(cat)
    return {"images": [{"id": i} for i in range(len(records))], "annotations": anns,
            "categories": [{"id": c} for c in sorted(cats)]}


def _kp_gt_from_teacher(records: list[ImageRecord]) -> dict[str, Any]:
    anns = []
    for i, r in enumerate(records):
        kp = np.asarray(r.teacher["keypoints"])
        vis = kp[:, 2] >= TEACHER_SCORE_THRESHOLD
        if vis.sum() < 2:
            continue
        x0, y0 = kp[vis, 0].min(), kp[vis, 1].min()
        w, h = kp[vis, 0].max() - x0, kp[vis, 1].max() - y0
        flat = np.column_stack([kp[:, 0], kp[:, 1], np.where(vis, 2, 0)]).ravel().tolist()
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "keypoints": flat,
                     "num_keypoints": int(vis.sum()), "bbox": [x0, y0, w, h], "area": float(w * h), "iscrowd": 0})
    return {"images": [{"id": i} for i in range(len(records))], "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]}


def _detections(records: list[ImageRecord]) -> list[dict[str, Any]]:
    dets = []
    for i, r in enumerate(records):
        p = r.pred
        for box, score, cat in zip(p["boxes"], p["scores"], p["category_ids"], strict=True):
            x1, y1, x2, y2 = box
            dets.append({"image_id": i, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return dets


def _keypoint_dets(records: list[ImageRecord]) -> list[dict[str, Any]]:
    dets = []
    for i, r in enumerate(records):
        kp = np.asarray(r.pred["keypoints"])
        flat = np.column_stack([kp[:, 0], kp[:, 1], np.ones(len(kp))]).ravel().tolist()
        dets.append({"image_id": i, "category_id": 1, "keypoints": flat, "score": float(kp[:, 2].mean())})
    return dets


class LevelScorer:
    """All metrics of one level's records (sorted by image id), for any index multiset of those images.

    Per-image means: psnr, ms_ssim, fsim and lpips (when measured), and for classifiers agreement (with the teacher) and
    top1 (labelled sets).
    COCO metrics: map, map50 (detection), pose_ap (pose). Segmentation: miou, the two-class (background, person)
    mIoU against the teacher's mask over all pixels of the images (ratios of summed counts, `segmentation_counts`).
    """

    def __init__(self, records: list[ImageRecord], gt: GroundTruth | None = None) -> None:
        self.records = records
        self.bpp = np.array([r.bpp for r in records])
        self._per_image: dict[str, np.ndarray] = {}
        self._coco: dict[str, tuple[CocoScorer, str]] = {}
        self._counts: dict[str, np.ndarray] = {}
        gt = gt or GroundTruth()
        self._per_image["psnr"] = np.array([r.psnr for r in records])
        self._per_image["ms_ssim"] = np.array([r.ms_ssim for r in records])
        if records and all(r.fsim is not None for r in records):
            self._per_image["fsim"] = np.array([r.fsim for r in records])
        if records and all(r.lpips is not None for r in records):
            self._per_image["lpips"] = np.array([r.lpips for r in records])
        first = records[0].pred if records else {}
        files = [r.file for r in records]
        if "top1" in first:
            self._per_image["agreement"] = np.array([r.pred["top1"] == r.teacher["top1"] for r in records], float)
            if all(r.label is not None for r in records):
                self._per_image["top1"] = np.array([r.pred["top1"] == r.label for r in records], float)
        elif "boxes" in first:
            gt_data = _box_gt_from_file(gt.instances_json, files) if gt.instances_json else _box_gt_from_teacher(
                records)
            scorer = CocoScorer(gt_data, _detections(records), len(records), "bbox")
            self._coco["map"] = (scorer, "ap")
            self._coco["map50"] = (scorer, "ap50")
        elif "i_fg" in first:
            self._counts = {k: np.array([r.pred[k] for r in records], dtype=np.float64) for k in SEGMENT_COUNTS}
        elif "keypoints" in first:
            gt_data = _box_gt_from_file(gt.keypoints_json, files) if gt.keypoints_json else _kp_gt_from_teacher(
                records)
            self._coco["pose_ap"] = (CocoScorer(gt_data, _keypoint_dets(records), len(records), "keypoints"), "ap")

    @property
    def metrics(self) -> list[str]:
        return [*self._per_image, *self._coco, *(["miou"] if self._counts else [])]

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        """Metric over images `idx` (default: all): task metrics in [0, 1], PSNR in dB, MS-SSIM in [0, 1]."""
        if idx is None:
            idx = np.arange(len(self.records))
        if metric in self._per_image:
            return float(self._per_image[metric][idx].mean())
        if metric in self._coco:
            scorer, which = self._coco[metric]
            return getattr(scorer, which)(idx)
        if metric == "miou" and self._counts:
            return miou_from_counts(**{k: float(v[idx].sum()) for k, v in self._counts.items()})
        raise KeyError(metric)

    def mean_bpp(self, idx: np.ndarray | None = None) -> float:
        return float(self.bpp.mean() if idx is None else self.bpp[idx].mean())
