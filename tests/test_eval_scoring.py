"""Task metrics from records: COCO AP equals pycocotools', also on resampled image multisets (the bootstrap)."""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from prepcodec.eval.records import ImageRecord
from prepcodec.eval.scoring import GroundTruth, LevelScorer

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PREPCODEC_SHARED_DATA", ROOT.parent / "shared" / "data"))
COCO_DIR = SHARED / "coco-val-subset"
needs_coco = pytest.mark.skipif(not (COCO_DIR / "instances.json").is_file(), reason=f"{COCO_DIR} absent")


def _rec(i: int, file: str, pred: dict, teacher: dict | None = None, label: int | None = None) -> ImageRecord:
    return ImageRecord(image=f"{i:03d}", file=file, label=label, level=30.0, nbytes=1000 + i, height=100,
                       width=100, bpp=0.8 + i / 1000, psnr=30.0, ms_ssim=0.9, pred=pred, teacher=teacher or pred)


def _detections_from_gt(data: dict) -> dict[int, dict]:
    """Deterministic, imperfect detector: GT boxes shifted by an id-dependent amount, every 5th box missed,
    a false positive per image, scores that do not follow quality."""
    per_image: dict[int, dict] = {im["id"]: {"boxes": [], "scores": [], "category_ids": []} for im in data["images"]}
    for a in data["annotations"]:
        if a["id"] % 5 == 0:
            continue
        x, y, w, h = a["bbox"]
        s = (a["id"] % 7) / 20.0
        d = per_image[a["image_id"]]
        d["boxes"].append([x + s * w, y + s * h, x + w + s * w / 2, y + h])
        d["scores"].append(0.3 + (a["id"] % 11) / 16)
        d["category_ids"].append(a["category_id"])
    for im in data["images"]:
        d = per_image[im["id"]]
        d["boxes"].append([0.0, 0.0, im["width"] / 3, im["height"] / 3])
        d["scores"].append(0.5)
        d["category_ids"].append(1)
    return per_image


def _pycocotools_stats(data: dict, dets: dict[int, dict], image_ids: list[int]) -> tuple[float, float]:
    """Reference: pycocotools on a data set where each (possibly repeated) image gets a fresh id."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, res = [], [], []
    by_img: dict[int, list] = {}
    for a in data["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for new_id, old in enumerate(image_ids):
        images.append({"id": new_id})
        for a in by_img.get(old, []):
            anns.append({**a, "id": len(anns) + 1, "image_id": new_id})
        d = dets[old]
        for (x1, y1, x2, y2), s, c in zip(d["boxes"], d["scores"], d["category_ids"], strict=True):
            res.append({"image_id": new_id, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": data["categories"]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.shared_data
@needs_coco
def test_box_map_matches_pycocotools_on_full_set_and_on_resamples():
    data = json.loads((COCO_DIR / "instances.json").read_text())
    dets = _detections_from_gt(data)
    images = sorted(data["images"], key=lambda im: im["file_name"])
    records = [_rec(i, im["file_name"], dets[im["id"]]) for i, im in enumerate(images)]
    scorer = LevelScorer(records, GroundTruth(instances_json=COCO_DIR / "instances.json"))
    assert scorer.metrics == ["psnr", "ms_ssim", "map", "map50"]
    ref = _pycocotools_stats(data, dets, [im["id"] for im in images])
    assert 0.05 < ref[0] < 0.95
    assert scorer.score("map") == pytest.approx(ref[0], abs=1e-12)
    assert scorer.score("map50") == pytest.approx(ref[1], abs=1e-12)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(images), len(images))  # with repeats, as the bootstrap draws
    ref_b = _pycocotools_stats(data, dets, [images[i]["id"] for i in idx])
    assert scorer.score("map", idx) == pytest.approx(ref_b[0], abs=1e-12)
    assert scorer.score("map50", idx) == pytest.approx(ref_b[1], abs=1e-12)
    coco = scorer._coco["map"][0]
    assert coco.precision(idx) is coco.precision(idx.copy())  # AP and AP50 of one resample: one accumulation
    assert scorer.score("map") == pytest.approx(ref[0], abs=1e-12)  # and a new index set is not served stale


def test_classification_metrics_are_per_image_means():
    labels = [3, 3, 7, 1]
    preds = [3, 5, 7, 2]
    teachers = [3, 5, 1, 2]
    recs = [_rec(i, f"{i}.png", {"top1": p, "score": 0.5}, {"top1": t, "score": 0.9}, label=lab)
            for i, (p, t, lab) in enumerate(zip(preds, teachers, labels, strict=True))]
    s = LevelScorer(recs)
    assert s.score("top1") == 0.5 and s.score("agreement") == 0.75
    assert s.score("top1", np.array([0, 0, 2])) == 1.0
    assert s.mean_bpp() == pytest.approx(np.mean([r.bpp for r in recs]))
    unlabelled = LevelScorer([_rec(0, "a.png", {"top1": 1, "score": 1.0})])
    assert unlabelled.metrics == ["psnr", "ms_ssim", "agreement"]


@pytest.mark.shared_data
@needs_coco
def test_pose_ap_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = COCO_DIR / "person_keypoints.json"
    data = json.loads(path.read_text())
    images = sorted(data["images"], key=lambda im: im["file_name"])
    first_person: dict[int, dict] = {}
    for a in data["annotations"]:
        if a["num_keypoints"] > 0:
            first_person.setdefault(a["image_id"], a)
    records, res = [], []
    for i, im in enumerate(images):
        a = first_person.get(im["id"])
        kp = np.zeros((17, 3))
        if a is not None:  # a single-person pose model: the first person, slightly off, confident where visible
            gt = np.asarray(a["keypoints"], float).reshape(17, 3)
            kp[:, 0] = gt[:, 0] + (i % 4) * 2.0
            kp[:, 1] = gt[:, 1] - (i % 3) * 3.0
            kp[:, 2] = np.where(gt[:, 2] > 0, 0.9, 0.1)
        else:
            kp[:, 0], kp[:, 1], kp[:, 2] = im["width"] / 2, im["height"] / 2, 0.05
        records.append(_rec(i, im["file_name"], {"keypoints": kp.tolist()}))
        flat = np.column_stack([kp[:, 0], kp[:, 1], np.ones(17)]).ravel().tolist()
        res.append({"image_id": im["id"], "category_id": 1, "keypoints": flat, "score": float(kp[:, 2].mean())})
    scorer = LevelScorer(records, GroundTruth(keypoints_json=path))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(res), "keypoints")
        ev.params.imgIds = [im["id"] for im in images]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.05 < ev.stats[0] < 0.99
    assert scorer.score("pose_ap") == pytest.approx(float(ev.stats[0]), abs=1e-12)
