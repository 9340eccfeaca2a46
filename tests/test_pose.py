"""MoveNet pose task on real photos: agreement with the graph's own decoder, anatomy, gradients, metrics."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prepcodec
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.tasks.coco_eval import keypoint_oks_ap, keypoints_gt_from_coco_json, pck
from prepcodec.tasks.pose import KEYPOINT_NAMES, PoseTargets
from prepcodec.tasks.registry import create_task
from prepcodec.tasks.tfjs import load_tfjs_model
from prepcodec.tasks.weights import npm_model_file

SAMPLES = Path(prepcodec.__file__).parent / "data" / "samples"
SHARED = Path(os.environ.get("PREPCODEC_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def photo(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return photo(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def task():
    return create_task("movenet")


@pytest.mark.weights
def test_decoder_matches_the_graphs_own_postprocessing(task):
    """The torch decoder reproduces the graph's ArgMax/GatherNd decoding (its 'Identity' output, batch 1)."""
    ref = load_tfjs_model(npm_model_file("models/movenet-lightning.json"), ["Identity"],
                          inputs=["StatefulPartitionedCall/stack"])
    x = torch.nn.functional.interpolate(photo(SAMPLES / "kodim04.png"), (192, 192), mode="bilinear")
    with torch.no_grad():
        heads, _, _ = task._heads(x)
        mine = task._decode(heads)[0]
        (graph,) = ref(x.permute(0, 2, 3, 1) * 255)
    yxs = graph[0, 0]  # (17, 3): y, x normalised, score
    torch.testing.assert_close(mine[:, 0] / 192, yxs[:, 1], atol=1e-3, rtol=0)
    torch.testing.assert_close(mine[:, 1] / 192, yxs[:, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(mine[:, 2], yxs[:, 2], atol=1e-5, rtol=0)


@pytest.mark.weights
def test_keypoints_sit_on_the_person(task):
    """kodim04: a woman's head and shoulders; eyes above shoulders, face keypoints confident and inside the image."""
    x = photo(SAMPLES / "kodim04.png")
    kp = task.predict(x)[0]["keypoints"]
    assert kp.shape == (17, 3)
    idx = {n: i for i, n in enumerate(KEYPOINT_NAMES)}
    for part in ("nose", "left_eye", "right_eye"):
        assert kp[idx[part], 2] > 0.3, part
    assert kp[idx["nose"], 1] < kp[idx["left_shoulder"], 1] and kp[idx["nose"], 1] < kp[idx["right_shoulder"], 1]
    assert kp[idx["left_eye"], 0] > kp[idx["right_eye"], 0]  # the person's left eye is on the image's right
    h, w = x.shape[-2:]
    assert ((kp[:, 0] >= 0) & (kp[:, 0] <= w) & (kp[:, 1] >= 0) & (kp[:, 1] <= h)).all()


@pytest.mark.weights
def test_gradient_teacher_metric_and_batching(task):
    a = photo(SAMPLES / "astronaut.png")
    b = photo(SAMPLES / "kodim04.png")[..., 100:612, :]
    batch = torch.cat([a, b])
    targets = task.pseudo_targets(batch)
    assert isinstance(targets, PoseTargets)
    assert task.metric(task.predict(batch), targets) == 1.0
    for single, batched in zip(task.predict(a) + task.predict(b), targets.predictions, strict=True):
        torch.testing.assert_close(single["keypoints"], batched["keypoints"], atol=1e-2, rtol=1e-4)
    x = jpeg(a, 8).requires_grad_(True)
    loss = task.loss(x, PoseTargets([h[:1] for h in targets.heads], targets.predictions[:1]))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.weights
def test_pck_falls_with_jpeg_quality(task):
    images = [photo(SAMPLES / n) for n in ("astronaut.png", "kodim04.png")]
    targets = [task.pseudo_targets(x) for x in images]

    def score(q):
        preds = [task.predict(jpeg(x, q))[0] for x in images]
        return pck(preds, [t.predictions[0] for t in targets])

    sweep = [score(q) for q in (75, 15, 2)]
    assert sweep[-1] < 1.0 and sweep == sorted(sweep, reverse=True), sweep


@pytest.mark.weights
def test_input_errors_and_tiny_image(task):
    with pytest.raises(InputError):
        task.predict(torch.zeros(1, 3, 16, 16, dtype=torch.int32))
    with pytest.raises(InputError):
        task.predict(torch.full((1, 3, 16, 16), 2.0))
    kp = task.predict(torch.rand(1, 3, 8, 8))[0]["keypoints"]
    assert kp.shape == (17, 3) and (kp[:, :2] >= 0).all() and (kp[:, :2] <= 8).all()


def test_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing, match="prepcodec models fetch"):
        create_task("movenet")


def test_oks_ap_and_pck_units():
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(50, 250, (17, 2)), np.full((17, 1), 2.0)], 1)
    gt = [{"keypoints": kp[None], "boxes": np.array([[50.0, 50, 250, 250]]), "areas": np.array([40000.0])}]
    same = [{"keypoints": torch.from_numpy(np.concatenate([kp[:, :2], np.full((17, 1), 0.9)], 1))}]
    assert keypoint_oks_ap(same, gt) == pytest.approx(1.0)
    moved = [{"keypoints": same[0]["keypoints"] + torch.tensor([30.0, 0, 0])}]
    assert keypoint_oks_ap(moved, gt) < 0.5
    teacher = [{"keypoints": same[0]["keypoints"]}]
    assert pck(same, teacher) == 1.0 and pck(moved, teacher) == 0.0


@pytest.mark.weights
@pytest.mark.shared_data
def test_oks_ap_on_coco_persons(task):
    """Single-person images of the COCO subset (exactly one annotated person with keypoints): OKS-AP well above 0."""
    folder = SHARED / "coco-val-subset"
    if not (folder / "person_keypoints.json").is_file():
        pytest.skip("coco-val-subset not present")
    doc = json.loads((folder / "person_keypoints.json").read_text())
    counts: dict[int, list] = {}
    for a in doc["annotations"]:
        counts.setdefault(a["image_id"], []).append(a["num_keypoints"])
    singles = [im["file_name"] for im in doc["images"] if len(counts.get(im["id"], [])) == 1
               and counts[im["id"]][0] >= 8][:4]
    if not singles:
        pytest.skip("no single-person image in the subset")
    gts = keypoints_gt_from_coco_json(folder / "person_keypoints.json", singles)
    preds = [task.predict(photo(folder / "images" / name))[0] for name in singles]
    assert keypoint_oks_ap(preds, gts) > 0.3
