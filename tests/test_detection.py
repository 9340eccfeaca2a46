"""CenterNet and NanoDet tasks on real photos: sanity classes, gradients, batching, teacher metric, input checks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prepcodec
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.tasks.coco_eval import COCO_IDS, detection_map
from prepcodec.tasks.registry import create_task
from prepcodec.tasks.tfjs import load_tfjs_model
from prepcodec.tasks.weights import npm_model_file

SAMPLES = Path(prepcodec.__file__).parent / "data" / "samples"
SHARED = Path(os.environ.get("PREPCODEC_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DETECTORS = ["centernet", "nanodet"]


def photo(name: str, root: Path = SAMPLES) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(root / name).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return photo_from_bytes(buf.getvalue())


def photo_from_bytes(data: bytes) -> torch.Tensor:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


@pytest.fixture(scope="module", params=DETECTORS)
def task(request):
    return create_task(request.param)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


@pytest.mark.weights
@pytest.mark.parametrize("name,label,min_iou_box", [
    ("kodim23.png", "bird", (390, 100, 768, 512)),  # the right-hand parrot
    ("astronaut.png", "person", (0, 0, 380, 512)),
    ("chelsea.png", "cat", (0, 0, 451, 300)),
    ("coffee.png", "cup", (165, 15, 420, 270)),
])
def test_bundled_photos_find_their_object(task, name, label, min_iou_box):
    pred = task.predict(photo(name))[0]
    hits = [b for b, n, s in zip(pred["boxes"], pred["names"], pred["scores"], strict=True) if n == label and s >= 0.25]
    top = list(zip(pred["names"][:5], pred["scores"][:5].tolist(), strict=True))
    assert hits, f"{task.name} found no {label} in {name}: {top}"
    assert max(box_iou(b, torch.tensor(min_iou_box, dtype=torch.float32)) for b in hits) > 0.6
    h, w = photo(name).shape[-2:]
    assert (pred["boxes"][:, [0, 2]] <= w + 1e-3).all() and (pred["boxes"][:, [1, 3]] <= h + 1e-3).all()


@pytest.mark.weights
@pytest.mark.shared_data
@pytest.mark.parametrize("file,category_id", [("n02391049_zebra.JPEG", 24), ("n04146614_school_bus.JPEG", 6)])
def test_imagenet_zebra_and_bus(task, file, category_id):
    path = SHARED / "imagenet-samples" / file
    if not path.is_file():
        pytest.skip(f"{path} not present")
    pred = task.predict(photo(file, path.parent))[0]
    assert int(pred["category_ids"][0]) == category_id and float(pred["scores"][0]) > 0.5


@pytest.mark.weights
def test_input_gradient_finite_and_nonzero(task):
    clean = photo("chelsea.png")
    targets = task.pseudo_targets(clean)
    x = jpeg(clean, 10).requires_grad_(True)
    loss = task.loss(x, targets)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert float(task.loss(clean, targets)) < float(loss.detach())  # the teacher's own image is (near) the optimum


@pytest.mark.weights
def test_centernet_decoder_matches_the_graphs_own_postprocessing():
    """On a 512x512 image (no letterbox), the torch decoder equals the graph's TopK/Gather `tower_0/detections`."""
    task = create_task("centernet")
    ref = load_tfjs_model(npm_model_file("models/centernet.json"), ["tower_0/detections"])
    x = photo("astronaut.png")
    with torch.no_grad():
        (graph,) = ref(x.permute(0, 2, 3, 1) * 255)
    pred = task.predict(x)[0]
    k = len(pred["scores"])
    assert k >= 5
    torch.testing.assert_close(pred["boxes"][:5], graph[0, :5, :4].clamp(0, 512), atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(pred["scores"], graph[0, :k, 4], atol=1e-5, rtol=1e-5)
    assert pred["category_ids"].tolist() == [COCO_IDS[int(c)] for c in graph[0, :k, 5]]


@pytest.mark.weights
def test_batched_equals_single(task):
    a, b = photo("astronaut.png"), photo("kodim04.png")[..., 100:612, :]
    both = task.predict(torch.cat([a, b]))
    for single, batched in zip(task.predict(a) + task.predict(b), both, strict=True):
        assert single["names"] == batched["names"]
        torch.testing.assert_close(single["boxes"], batched["boxes"], atol=1e-2, rtol=1e-4)
        torch.testing.assert_close(single["scores"], batched["scores"], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.weights
def test_teacher_metric_is_one_and_falls_with_jpeg_quality(task):
    images = [photo(n) for n in ("kodim23.png", "astronaut.png", "coffee.png")]
    targets = [task.pseudo_targets(x) for x in images]

    def score(quality):
        preds = [task.predict(x if quality is None else jpeg(x, quality))[0] for x in images]
        gts = [{"boxes": t.predictions[0]["boxes"][t.predictions[0]["scores"] >= 0.3],
                "category_ids": t.predictions[0]["category_ids"][t.predictions[0]["scores"] >= 0.3]} for t in targets]
        return detection_map(preds, gts)["map"]

    clean = score(None)
    assert clean == pytest.approx(1.0, abs=1e-6)
    sweep = [score(q) for q in (60, 15, 3)]
    assert sweep[-1] < clean
    assert all(a >= b - 0.02 for a, b in zip([clean, *sweep], sweep, strict=False)), sweep


@pytest.mark.weights
def test_metric_through_task_api(task):
    x = photo("chelsea.png")
    t = task.pseudo_targets(x)
    assert task.metric(task.predict(x), t) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.weights
def test_tiny_image(task):
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pred = task.predict(x)
    assert len(pred) == 1 and pred[0]["boxes"].shape[1] == 4
    assert (pred[0]["boxes"] >= 0).all() and (pred[0]["boxes"] <= 8).all()


@pytest.mark.weights
@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 32, 32), "N x 3 x H x W"),
    (torch.zeros(1, 1, 32, 32), "N x 3 x H x W"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
    (torch.full((1, 3, 32, 32), 255.0), r"\[0, 1\]"),
    (np.zeros((1, 3, 32, 32), np.float32), "torch.Tensor"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
])
def test_bad_inputs_raise_input_error(task, bad, match):
    with pytest.raises(InputError, match=match):
        task.predict(bad)


@pytest.mark.parametrize("name", DETECTORS)
def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch, name):
    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing, match="prepcodec models fetch"):
        create_task(name)


def test_detection_map_teacher_against_itself_and_misses():
    gt = [{"boxes": torch.tensor([[10.0, 10, 60, 80], [100, 100, 150, 140]]), "category_ids": torch.tensor([1, 18])}]
    perfect = [{"boxes": gt[0]["boxes"], "scores": torch.tensor([0.9, 0.8]), "category_ids": gt[0]["category_ids"]}]
    assert detection_map(perfect, gt)["map"] == pytest.approx(1.0)
    shifted = [{**perfect[0], "boxes": gt[0]["boxes"] + 12}]
    res = detection_map(shifted, gt)
    assert res["map"] < 0.5 and res["map50"] <= 1.0
    wrong_class = [{**perfect[0], "category_ids": torch.tensor([2, 3])}]
    assert detection_map(wrong_class, gt)["map"] == 0.0


@pytest.mark.weights
def test_confident_targets_make_the_teachers_detections_certain_and_reward_raising_them(task):
    """`--task-loss confident`: the teacher's confident entries go to score 1, nothing else changes, and the loss
    of the teacher's own image is then > 0 and falls when those detections score higher (the soft loss is 0 there
    and rises either way)."""
    from prepcodec.tasks.detection import TEACHER_THRESHOLD

    x = photo("kodim23.png")
    soft = task.pseudo_targets(x)
    hard = task.confident_targets(soft)
    assert any(bool(m.any()) for m in task._confident_entries(soft.heads))  # the parrots
    for s, h, mask in zip(task._class_logits(soft.heads), task._class_logits(hard.heads),
                          task._confident_entries(soft.heads), strict=True):
        assert bool((torch.sigmoid(s[mask]) >= TEACHER_THRESHOLD).all())
        assert bool((torch.sigmoid(h[mask]) > 0.999).all())
        torch.testing.assert_close(h[~mask], s[~mask], rtol=0, atol=0)
    # outside the confident class entries (sizes, box bins, other cells and classes) nothing changed
    assert [s.shape for s in soft.heads] == [h.shape for h in hard.heads]
    assert sum(int((s != h).sum()) for s, h in zip(soft.heads, hard.heads, strict=True)) == sum(
        int(m.sum()) for m in task._confident_entries(soft.heads))
    assert float(task.loss(x, soft)) == pytest.approx(0.0, abs=1e-4)
    at_teacher = float(task.loss(x, hard))
    assert at_teacher > 0
    # raise exactly the confident logits (a student more certain of the teacher's detections): the hard loss falls
    raised = [h.clone() for h in soft.heads]
    for logits, mask in zip(task._class_logits(raised), task._confident_entries(soft.heads), strict=True):
        logits[mask] += 2.0
    assert float(task._loss(raised, hard.heads)) < float(task._loss(soft.heads, hard.heads))
    assert float(task._loss(raised, soft.heads)) > float(task._loss(soft.heads, soft.heads))
