"""`prepcodec pictures`: Grad-CAM by the grad-cam package placed on the image, the figure, and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prepcodec.cli import app
from prepcodec.eval.showcase import Variant, removed_information

pytest.importorskip("pytorch_grad_cam")


def test_removed_information_is_zero_where_nothing_was_removed(sample_image):
    from prepcodec.npp.baselines import gaussian_blur
    from prepcodec.npp.preprocessors import to_tensor, to_uint8

    rgb = np.array(sample_image("coffee"))
    assert not removed_information(rgb, rgb, 4.0).any()
    blurred = to_uint8(gaussian_blur(to_tensor(rgb), 2.0))
    diff = removed_information(rgb, blurred, 4.0).astype(int)
    assert diff.max() > 100  # edges lose the most, amplified
    assert np.median(diff) < diff.max() / 4


def test_box_count_caption_agrees_in_number():
    pixels = np.zeros((2, 2, 3), np.uint8)
    captions = [Variant("plain", 30, 10, 0.1, pixels, pixels, n_boxes=n).boxes_label for n in (0, 1, 3)]
    assert captions == ["0 boxes", "1 box", "3 boxes"]


@pytest.mark.weights
def test_grad_cam_is_on_the_image_and_follows_the_class(sample_image):
    """On the cat photo the map of the classifier's top-1 lies inside the centre crop it saw (0 outside) and is
    not the map of an unrelated class."""
    from prepcodec.npp.preprocessors import to_tensor
    from prepcodec.tasks.explain import classifier_grad_cam
    from prepcodec.tasks.registry import create_task
    from prepcodec.tasks.resize import crop_frame

    task = create_task("effnet-lite0")
    rgb = np.array(sample_image("chelsea"))
    top = task.predict(to_tensor(rgb))[0]["top5"][0]["index"]
    cam = classifier_grad_cam(task, rgb, top)
    assert cam.shape == rgb.shape[:2] and 0.0 <= cam.min() and cam.max() <= 1.0 and cam.max() > 0.9
    (h, w), (rh, rw, top_px, left_px) = rgb.shape[:2], crop_frame(rgb.shape[:2], task.resolution, task.crop_ratio)
    top_m, left_m = round(top_px * h / rh), round(left_px * w / rw)  # the unseen border, in image pixels
    assert top_m > 5 and left_m > 5
    outside = np.ones(cam.shape, bool)
    outside[top_m - 2 : h - top_m + 2, left_m - 2 : w - left_m + 2] = False
    assert float(cam[outside].max()) == 0.0
    other = classifier_grad_cam(task, rgb, 0)  # tench
    assert float(np.abs(cam - other).mean()) > 0.05


@pytest.mark.weights
def test_pictures_command_draws_one_row_per_image(tmp_path):
    out = tmp_path / "fig" / "cls.png"
    res = CliRunner().invoke(app, ["pictures", "--npp", "cls", "--data", "samples", "--images", "2", "--qp", "40",
                                   "--fast", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        w, h = im.size
    assert w > 2.5 * h  # 7 columns (original ... Grad-CAM NPP) by 2 rows


@pytest.mark.parametrize("args, message", [
    (["--out", "x.jpg"], "a .png file"),
    (["--out", "x.png", "--images", "0"], "--images"),
    (["--out", "x.png", "--start", "99", "--data", "samples"], "leaves none"),
    (["--out", "x.png", "--npp", "nope"], "nope"),
])
def test_pictures_refuses_bad_input_before_writing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["pictures", *args], standalone_mode=False)
    assert res.exception is not None and message in str(res.exception)
    assert not list(tmp_path.iterdir())
