"""Selfie segmentation task on real photos: the mask covers the person, gradients, batching, mIoU."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prepcodec
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.tasks.coco_eval import mean_iou
from prepcodec.tasks.registry import create_task

SAMPLES = Path(prepcodec.__file__).parent / "data" / "samples"


def photo(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255).permute(2, 0, 1)[None]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return photo(io.BytesIO(buf.getvalue()))


@pytest.fixture(scope="module")
def task():
    return create_task("selfie")


@pytest.mark.weights
def test_mask_covers_the_person(task):
    """kodim04 (portrait, 512 wide x 768 high): the face centre is person, the top corners are not."""
    x = photo(SAMPLES / "kodim04.png")
    mask = task.predict(x)[0]["mask"]
    assert mask.shape == x.shape[-2:]
    assert float(mask[300:400, 200:300].mean()) > 0.8
    assert float(mask[:60, :60].mean()) < 0.2 and float(mask[:60, -60:].mean()) < 0.2
    assert 0.15 < float((mask > 0.5).float().mean()) < 0.9


@pytest.mark.weights
def test_gradient_teacher_metric_and_batching(task):
    a = photo(SAMPLES / "astronaut.png")
    b = photo(SAMPLES / "kodim04.png")[..., 100:612, :]
    batch = torch.cat([a, b])
    targets = task.pseudo_targets(batch)
    preds = task.predict(batch)
    assert task.metric(preds, targets) == 1.0
    for single, batched in zip(task.predict(a) + task.predict(b), preds, strict=True):
        torch.testing.assert_close(single["mask"], batched["mask"], atol=1e-4, rtol=1e-4)
    x = jpeg(batch[1:], 5).requires_grad_(True)
    loss = task.loss(x, type(targets)(targets.logits[1:], targets.masks[1:]))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.weights
def test_miou_falls_with_jpeg_quality(task):
    images = [photo(SAMPLES / n) for n in ("astronaut.png", "kodim04.png")]
    targets = [task.pseudo_targets(x).masks[0] for x in images]
    sweep = [mean_iou([task.predict(jpeg(x, q))[0]["mask"] for x in images], targets) for q in (75, 15, 2)]
    assert sweep[-1] < 1.0 and sweep == sorted(sweep, reverse=True), sweep


@pytest.mark.weights
def test_input_errors_and_tiny_image(task):
    with pytest.raises(InputError, match="N x 3 x H x W"):
        task.predict(torch.zeros(2, 4, 16, 16))
    with pytest.raises(InputError):
        task.predict(torch.full((1, 3, 16, 16), -1.0))
    mask = task.predict(torch.rand(1, 3, 8, 8))[0]["mask"]
    assert mask.shape == (8, 8) and ((mask >= 0) & (mask <= 1)).all()


def test_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing, match="prepcodec models fetch"):
        create_task("selfie")


def test_mean_iou_units():
    t = torch.zeros(4, 4)
    t[:2] = 1
    assert mean_iou([t], [t]) == 1.0
    p = torch.zeros(4, 4)
    p[:1] = 1  # foreground IoU 4/8, background IoU 8/12
    assert mean_iou([p], [t]) == pytest.approx((0.5 + 8 / 12) / 2)
    with pytest.raises(InputError):
        mean_iou([p], [torch.zeros(3, 3)])


@pytest.mark.weights
def test_sweep_scores_miou_against_the_teacher_from_counts(tmp_path, task):
    """`eval --task selfie`: records keep per-class pixel counts, not masks; the level's mIoU from them equals
    mean_iou over the masks, falls with JPEG quality, any resample is exact, and a rerun is served by the cache."""
    from prepcodec.codecs import CodecPool
    from prepcodec.eval.scoring import LevelScorer
    from prepcodec.eval.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(data="samples", task="selfie", codec="jpeg", levels=[5, 90], batch=2, limit=0,
                      cache=tmp_path / "c.sqlite")
    names = ("astronaut", "kodim04")
    with CodecPool(workers=1) as pool:
        result = run_sweep(cfg, tmp_path / "run", task=task, pool=pool, progress=False)
        again = run_sweep(cfg, tmp_path / "run2", task=task, pool=pool, progress=False)
    assert again.stats.encoded == 0
    by_level = {s.level: s.miou for s in result.summaries}
    assert by_level == {s.level: s.miou for s in again.summaries}
    assert 0.5 < by_level[5.0] < by_level[90.0] <= 1.0
    records = sorted((r for r in result.records if r.level == 5.0), key=lambda r: r.image)
    assert all(set(r.pred) == {"i_fg", "u_fg", "i_bg", "u_bg"} and set(r.teacher) == {"fg"} for r in records)
    # the same number straight from the masks: the photos, their q5 JPEG and the teacher's masks
    ours = [r for r in records if r.image in names]
    masks = [task.predict(jpeg(photo(SAMPLES / f"{r.image}.png"), 5))[0]["mask"] for r in ours]
    refs = [task.predict(photo(SAMPLES / f"{r.image}.png"))[0]["mask"] for r in ours]
    scorer = LevelScorer(records)
    idx = np.array([records.index(r) for r in ours])
    assert scorer.score("miou", idx) == pytest.approx(mean_iou(masks, refs), abs=2e-3)
    assert scorer.score("miou", np.concatenate([idx, idx[:1]])) == pytest.approx(
        mean_iou(masks + masks[:1], refs + refs[:1]), abs=2e-3)
