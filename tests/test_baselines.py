"""Classical preprocessors on real photos: blur, bilateral denoiser, ROI suppression, `--pre` parsing."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prepcodec.errors import InputError
from prepcodec.npp import baselines
from prepcodec.npp.preprocessors import parse_pre, to_tensor

SAMPLES = Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"


def _rgb(name: str = "chelsea.png", size: int = 128) -> np.ndarray:
    im = Image.open(SAMPLES / name).convert("RGB")
    return np.asarray(im)[:size, :size].copy()


def _grad_energy(x: torch.Tensor) -> float:
    x = x.detach()
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_blur_smooths_keeps_mean_and_is_differentiable():
    x = to_tensor(_rgb()).requires_grad_(True)
    y1, y3 = baselines.gaussian_blur(x, 1.0), baselines.gaussian_blur(x, 3.0)
    assert y1.shape == x.shape
    assert _grad_energy(y3) < _grad_energy(y1) < _grad_energy(x)
    assert abs(float((y3.mean() - x.mean()).detach())) < 0.01  # reflect padding: no darkening at the borders
    y3.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(baselines.gaussian_blur(x, 0.0), x)


def test_blur_is_the_same_per_channel_and_for_any_leading_shape():
    """The depthwise blur equals blurring each channel on its own (what it replaced), for images and 1-channel maps,
    batched or not."""
    x = to_tensor(_rgb("coffee.png", 96))
    per_channel = torch.cat([baselines.gaussian_blur(x[:, c : c + 1], 2.0) for c in range(3)], dim=1)
    assert torch.allclose(baselines.gaussian_blur(x, 2.0), per_channel, atol=1e-6)
    batch = torch.cat([x, x.flip(-1)])
    flipped = baselines.gaussian_blur(x.flip(-1), 1.0)[0]
    assert torch.allclose(baselines.gaussian_blur(batch, 1.0)[1], flipped, atol=1e-6)
    assert torch.allclose(baselines.gaussian_blur(x[0], 1.0), baselines.gaussian_blur(x, 1.0)[0], atol=1e-6)


def test_blurs_from_one_shared_pad_are_the_blurs_padded_one_axis_at_a_time(sample_image):
    """gaussian_blurs pads once for every sigma; each result is bit for bit the reflect-pad-per-axis blur, also on a
    picture smaller than the largest kernel radius (where the pad falls back to replicate)."""
    from prepcodec.npp.baselines import _gaussian_kernel, _reflect_pad, gaussian_blurs

    def per_axis(x, sigma):
        k = _gaussian_kernel(sigma, x.dtype, x.device)
        r = (k.numel() - 1) // 2
        y = F.conv2d(_reflect_pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        return F.conv2d(_reflect_pad(y, (0, 0, r, r)), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)

    image = torch.from_numpy(sample_image("kodim23").copy()).permute(2, 0, 1)[None].float() / 255
    for x in (image[..., :97, :130], image[..., :9, :40]):
        blurs = gaussian_blurs(x, (0.0, 0.5, 1.0, 2.0, 4.0))
        assert blurs[0.0] is x
        for sigma in (0.5, 1.0, 2.0, 4.0):
            assert torch.equal(blurs[sigma], per_axis(x, sigma))


def test_bilateral_keeps_edges_that_blur_destroys():
    x = to_tensor(_rgb("astronaut.png", 96))
    smooth = baselines.gaussian_blur(x, 2.0)
    den = baselines.bilateral(x, sigma_s=2.0, sigma_r=0.08)
    assert _grad_energy(den) < _grad_energy(x)  # it does remove texture
    # strongest edges survive: the 99th percentile of gradient magnitude stays near the original
    def q99(t):
        return float(torch.quantile((t[..., :, 1:] - t[..., :, :-1]).abs().flatten(), 0.99))
    assert q99(den) > 0.8 * q99(x) > q99(smooth)


def test_roi_suppression_keeps_inside_and_blurs_outside():
    x = to_tensor(_rgb("coffee.png", 128))
    mask = baselines.boxes_mask([[32, 32, 80, 80]], 128, 128, margin=0.0)
    y = baselines.suppress(x, mask, "blur", 4.0)
    inside, outside = mask.bool().expand_as(x), ~mask.bool().expand_as(x)
    assert torch.equal(y[inside], x[inside])
    assert (y[outside] - x[outside]).abs().mean() > 0.01
    flat = baselines.suppress(x, mask, "flat", 1.0)
    assert flat[outside].view(3, -1).std(dim=1).max() < 1e-5  # fully flattened to one colour per channel


def test_parse_pre_canonical_specs_and_errors():
    assert parse_pre("none").spec == "none"
    assert parse_pre("blur:1.50").spec == "blur:1.5"
    assert parse_pre("bilateral:20").spec == "bilateral:20:2"
    rgb = _rgb()
    assert parse_pre("none")(rgb) is rgb
    out = parse_pre("blur:2")(rgb)
    assert out.dtype == np.uint8 and out.shape == rgb.shape and not np.array_equal(out, rgb)
    for bad in ("blur", "blur:x", "blur:-1", "sharpen:2", "roi:blur", "bilateral:0"):
        with pytest.raises(InputError):
            parse_pre(bad)
    with pytest.raises(InputError, match="needs a task"):
        parse_pre("roi:blur:4")
    with pytest.raises(InputError, match="no shipped NPP called 'no-such-net'"):
        parse_pre("npp:no-such-net")
    with pytest.raises(InputError, match="not found"):
        parse_pre("npp:/nowhere/npp.pt")


@pytest.mark.weights
def test_roi_on_classifier_keeps_attended_region():
    from prepcodec.tasks.registry import create_task

    task = create_task("effnet-lite0")
    rgb = _rgb("coffee.png", 600)
    x = to_tensor(rgb)
    cam = baselines.grad_cam(task, x)
    assert cam.shape == (1, 1, 400, 600) and float(cam.max()) == pytest.approx(1.0)
    # the classifier saw the centre 224 of a 256x384 resize: columns < 125 and >= 475 of the image never reached it
    assert float(cam[..., :120].abs().sum()) == 0.0 and float(cam[..., 480:].abs().sum()) == 0.0
    keep = cam >= baselines.ROI_CAM_THRESHOLD
    assert 0.02 < float(keep.float().mean()) < 0.9  # a region, not nothing and not everything
    pre = parse_pre("roi:blur:6", task)
    out = pre(rgb)
    with torch.no_grad():
        before = task.predict(x)[0]["top5"][0]["index"]
        after = task.predict(to_tensor(out))[0]["top5"][0]["index"]
    assert after == before  # the class evidence was kept
    assert _grad_energy(to_tensor(out)) < 0.9 * _grad_energy(x)  # and the rest was suppressed
    # a lower CUT keeps more of the picture (a superset of the default's region); the default has the old spec
    assert pre.spec == "roi:blur:6" and parse_pre("roi:blur:6:0.50", task).spec == "roi:blur:6"
    low = parse_pre("roi:blur:6:0.2", task)
    assert low.spec == "roi:blur:6:0.2" and low.cache_spec != pre.cache_spec
    m_default, m_low = baselines.roi_mask(task, x), baselines.roi_mask(task, x, 0.2)
    assert float(m_low.mean()) > float(m_default.mean()) + 0.02 and bool((m_low >= m_default - 1e-6).all())
    assert _grad_energy(to_tensor(low(rgb))) > _grad_energy(to_tensor(out))
    with pytest.raises(InputError, match="CUT"):
        parse_pre("roi:blur:6:1.5", task)


@pytest.mark.weights
def test_graded_blur_follows_the_attention_in_steps():
    """roi:graded on a real photo: the most attended pixels are untouched, the unattended get the strongest blur,
    the class survives, and it sits between roi:blur:4 (keep or blur) and no preprocessing in detail kept."""
    from prepcodec.tasks.registry import create_task

    task = create_task("effnet-lite0")
    rgb = _rgb("coffee.png", 600)
    x = to_tensor(rgb)
    pre = parse_pre("roi:graded", task)
    assert pre.spec == "roi:graded" and pre.cache_spec.endswith("#" + baselines.CAM_REVISION)
    out = pre.tensor(x)
    cam = baselines.gaussian_blur(baselines.grad_cam(task, x), sigma=0.01 * (400**2 + 600**2) ** 0.5)
    top, low = cam >= 0.5, cam < 0.1
    assert float(top.float().mean()) > 0.02 and float(low.float().mean()) > 0.1
    diff = (out - x).abs()
    assert float(diff.masked_select(top.expand_as(x)).max()) < 1e-6
    blur4 = baselines.gaussian_blur(x, 4.0)
    assert float((out - blur4).abs().masked_select(low.expand_as(x)).max()) < 1e-6
    assert _grad_energy(to_tensor(parse_pre("roi:blur:4", task)(rgb))) < _grad_energy(out) < _grad_energy(x)
    with torch.no_grad():
        assert task.predict(out)[0]["top5"][0]["index"] == task.predict(x)[0]["top5"][0]["index"]
    mild = parse_pre("roi:graded:2", task)  # the same cuts, sigmas halved: more detail kept than roi:graded
    assert mild.spec == "roi:graded:2" and parse_pre("roi:graded:4", task).spec == "roi:graded"
    assert _grad_energy(out) < _grad_energy(mild.tensor(x)) < _grad_energy(x)
    with pytest.raises(InputError, match="classifier"):
        parse_pre("roi:graded")


@pytest.mark.weights
@pytest.mark.parametrize("name, hw", [("chelsea.png", (256, 256)), ("kodim23.png", (512, 768))])
def test_unseen_fill_leaves_what_the_classifier_reads_and_flattens_the_rest(name, hw):
    """`+unseen` changes only pixels the classifier's resize + centre crop never reads: its logits stay (bit-exact
    when no resize happens, to float noise through an antialiased downscale), the rest turns flat and cheaper."""
    from prepcodec.tasks.registry import create_task
    from prepcodec.tasks.resize import seen_window

    task = create_task("effnet-lite0")
    rgb = np.asarray(Image.open(SAMPLES / name).convert("RGB").resize(hw[::-1], Image.BICUBIC)).copy()
    pre = parse_pre("roi:graded:2+unseen", task)
    assert pre.spec == "roi:graded:2+unseen" and pre.cache_spec.startswith("roi:graded:2+unseen#")
    inner, x = parse_pre("roi:graded:2", task), to_tensor(rgb)
    y, z = pre.tensor(x), inner.tensor(x)
    top, bottom, left, right = seen_window(hw, task.resolution, task.crop_ratio)
    assert torch.equal(y[..., top:bottom, left:right], z[..., top:bottom, left:right])
    assert not torch.equal(y, z) and float((y[..., :, :left] - y[..., :, left : left + 1]).abs().max()) == 0
    with torch.no_grad():
        drift = float((task.logits(y) - task.logits(z)).abs().max())
    assert drift == 0 if hw == (256, 256) else drift < 1e-3
    assert _grad_energy(y) < _grad_energy(z)
    assert parse_pre("none+unseen", task).spec == "none+unseen"
    with pytest.raises(InputError, match="classifier"):
        parse_pre("blur:1+unseen")
