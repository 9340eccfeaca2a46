"""Named data sets: deterministic splits, resize rules, labels, and clear messages when data is missing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prepcodec.data.datasets import get_dataset, image_hash, list_datasets, shared_data_dir
from prepcodec.errors import DataMissing, InputError


def test_bundled_samples_set_needs_no_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path))  # an empty shared folder must not matter
    ds = get_dataset("samples")
    assert [it.id for it in ds.items] == ["astronaut", "chelsea", "coffee", "kodim04", "kodim23"]
    assert len(ds) == 5 and ds.load(ds.items[1]).shape == (300, 451, 3)
    assert set(list_datasets()) >= {"imagenet-eval", "imagenet-train", "coco-val", "photos-eval", "photos-train",
                                    "kodak", "samples"}
    with pytest.raises(InputError, match="unknown data set"):
        get_dataset("imagenet-val")


def test_missing_shared_data_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataMissing, match="PREPCODEC_SHARED_DATA"):
        shared_data_dir()
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path))
    with pytest.raises(DataMissing, match="kodak"):
        get_dataset("kodak")
    (tmp_path / "imagenet-samples").mkdir()
    with pytest.raises(DataMissing, match="no image files"):
        get_dataset("imagenet-eval")


def test_photos_split_and_resize_on_a_folder_of_real_crops(monkeypatch, tmp_path, sample_image):
    """Positions 3, 7, ... of the name-sorted folder are eval; longer side becomes 640, aspect kept."""
    photos = tmp_path / "photos"
    photos.mkdir()
    src = sample_image("kodim23")
    for i in range(10):
        crop = src[i * 10 : i * 10 + 300, :400] if i % 2 else src[:, i * 20 : i * 20 + 700]
        Image.fromarray(np.ascontiguousarray(crop)).save(photos / f"p{i:02d}.png")
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path))
    ev, tr = get_dataset("photos-eval"), get_dataset("photos-train")
    assert [it.id for it in ev.items] == ["p03", "p07"]
    assert [it.id for it in tr.items] == ["p00", "p01", "p02", "p04", "p05", "p06", "p08", "p09"]
    assert ev.load(ev.items[0]).shape == (480, 640, 3)  # 300x400 -> 480x640 (upscaled to the rule)
    assert tr.load(tr.items[0]).shape == (468, 640, 3)  # 512x700 -> 468x640
    assert np.array_equal(ev.load(ev.items[1]), ev.load(ev.items[1]))


def test_imagenet_needs_all_classes(monkeypatch, tmp_path, sample_image):
    folder = tmp_path / "imagenet-samples"
    folder.mkdir()
    for wnid in ("n01440764_tench", "n01443537_goldfish"):
        Image.fromarray(sample_image("chelsea")).save(folder / f"{wnid}.JPEG")
    monkeypatch.setenv("PREPCODEC_SHARED_DATA", str(tmp_path))
    with pytest.raises(DataMissing, match="found 2 ImageNet classes, need all 1000"):
        get_dataset("imagenet-eval")


def test_image_hash_is_content_and_shape(sample_image):
    from prepcodec.eval.cache import image_hash as cache_hash

    a = sample_image("coffee")
    assert image_hash(a) == image_hash(a.copy()) == cache_hash(a)
    assert image_hash(a) != image_hash(a.reshape(600, 400, 3))
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert image_hash(a) != image_hash(b)


@pytest.mark.shared_data
def test_imagenet_splits_on_shared_data():
    ev, tr = get_dataset("imagenet-eval"), get_dataset("imagenet-train")
    assert len(ev) == len(tr) == 500
    assert not {it.id for it in ev.items} & {it.id for it in tr.items}
    labels = sorted(it.label for it in ev.items + tr.items)
    assert labels == list(range(1000))
    assert (tr.items[0].id, tr.items[0].label) == ("n01440764_tench", 0)
    assert (ev.items[0].id, ev.items[0].label) == ("n01443537_goldfish", 1)
    gray = next(it for it in ev.items + tr.items if Image.open(it.path).mode == "L")
    notes: list[str] = []
    owner = ev if gray in ev.items else tr
    img = owner.load(gray, notes)
    assert img.shape == (256, 256, 3) and np.array_equal(img[..., 0], img[..., 2])
    assert "converted grayscale to RGB" in notes
    assert ev.load(ev.items[0]).shape == (256, 256, 3)


@pytest.mark.shared_data
def test_coco_photos_kodak_on_shared_data():
    coco = get_dataset("coco-val")
    assert len(coco) == 79 and coco.instances_json.is_file() and coco.keypoints_json.is_file()
    first = coco.items[0]
    w, h = Image.open(first.path).size
    assert coco.load(first).shape == (h, w, 3)
    assert coco.coco_ids[first.id] == int(first.id)
    ev, tr = get_dataset("photos-eval"), get_dataset("photos-train")
    assert (len(ev), len(tr)) == (23, 69)
    assert max(ev.load(ev.items[0]).shape[:2]) == 640
    kodak = get_dataset("kodak")
    assert len(kodak) == 24 and kodak.items[0].id == "kodim01" and kodak.load(kodak.items[0]).shape == (512, 768, 3)


def test_sliced_data_set_names_a_disjoint_part():
    whole = get_dataset("samples")
    head, tail = get_dataset("samples[:2]"), get_dataset("Samples[2:]")
    assert [i.id for i in head.items] == [i.id for i in whole.items[:2]]
    assert [i.id for i in tail.items] == [i.id for i in whole.items[2:]]
    assert head.name == "samples[:2]" and not {i.id for i in head.items} & {i.id for i in tail.items}
    assert head.load(head.items[0]).shape == whole.load(whole.items[0]).shape
    for bad in ("samples[a:b]", "samples[1]", "nope[:2]"):
        with pytest.raises(InputError):
            get_dataset(bad)


def test_proxy_targets_refuse_kodak_even_sliced():
    from prepcodec.proxy.targets import TargetRecipe, draw_crops

    with pytest.raises(InputError, match="test set"):
        draw_crops(TargetRecipe(datasets=("photos-train", "kodak[:3]")))


@pytest.mark.shared_data
def test_larger_coco_sets_merge_their_ground_truth_exactly():
    """coco-eval = 79 + 202 fully labelled val images in one JSON; coco-person = the 217 val images with keypoints,
    coco-person1 = the 89 of them with exactly one (non-crowd) person, one box and one keypoint set each;
    coco-train = the 128 train images. The merged ground truth scored against itself gives AP 1 (pycocotools)."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from prepcodec.data.datasets import get_dataset

    sizes = {"coco-eval": (281, 2279, None), "coco-person": (217, 875, 875), "coco-person1": (89, 89, 89),
             "coco-train": (128, 939, None)}
    for name, (n_img, n_box, n_kp) in sizes.items():
        ds = get_dataset(name)
        gt = json.loads(ds.instances_json.read_text())
        assert len(ds) == len(gt["images"]) == n_img and len(gt["annotations"]) == n_box
        assert {p.path.name for p in ds.items} == {im["file_name"] for im in gt["images"]}
        assert len({a["id"] for a in gt["annotations"]}) == n_box  # renumbered without collisions
        if n_kp is not None:
            assert len(json.loads(ds.keypoints_json.read_text())["annotations"]) == n_kp
    assert {it.id for it in get_dataset("coco-person1").items} < {it.id for it in get_dataset("coco-person").items}
    ds = get_dataset("coco-eval")
    assert {it.id for it in get_dataset("coco-val").items} < {it.id for it in ds.items}  # coco-val stays as it was
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ds.instances_json))
        dets = [{**a, "score": 1.0} for a in coco.dataset["annotations"] if not a.get("iscrowd")]
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0, abs=1e-9)
