"""NPP architecture and the straight-through bridge, on a real photo."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prepcodec.errors import InputError
from prepcodec.npp.model import NPP_SIZES, create_npp
from prepcodec.train.bridge import CodecBridge, substitute

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"


def _photo(h: int = 45, w: int = 61) -> torch.Tensor:
    rgb = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB"))[:h, :w]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


def test_npp_starts_as_identity_and_keeps_odd_shapes():
    x = _photo()
    for size in (name for name, cfg in NPP_SIZES.items() if cfg.features is None and cfg.roi is None):
        y = create_npp(size)(x, 37)
        assert y.shape == x.shape
        assert torch.allclose(y, x, atol=1e-6)


def test_npp_gradients_reach_input_and_qp_layer_matters():
    torch.manual_seed(0)
    model = create_npp("small")
    for p in model.parameters():  # move off the identity init so QP conditioning is active
        p.data.add_(0.05 * torch.randn_like(p))
    x = _photo().requires_grad_(True)
    y28, y41 = model(x, 28.0), model(x, 41.0)
    assert not torch.allclose(y28, y41)
    y28.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_npp_rejects_bad_shapes():
    with pytest.raises(InputError):
        create_npp("small")(torch.rand(3, 8, 8), 30)
    with pytest.raises(InputError):
        create_npp("small")(torch.rand(2, 3, 8, 8), [30.0, 31.0, 32.0])
    with pytest.raises(InputError):
        create_npp("tiny")


def test_paper_size_parameter_count():
    n = sum(p.numel() for p in create_npp("paper").parameters())
    assert 9.0e6 < n < 10.0e6


def test_substitute_forward_real_backward_proxy():
    proxy = torch.tensor([1.0, 2.0], requires_grad=True)
    out = substitute(proxy * 3, torch.tensor([10.0, 20.0]))
    assert torch.equal(out.detach(), torch.tensor([10.0, 20.0]))
    out.sum().backward()
    assert torch.equal(proxy.grad, torch.tensor([3.0, 3.0]))


def test_bridge_uses_real_values_and_proxy_gradients():
    x = _photo().requires_grad_(True)

    def proxy(img, qp):  # differentiable stand-in: identity image, rate from mean intensity
        return img * 1.0, img.mean(dim=(1, 2, 3)) * 1000 / qp

    def real(img, qp):  # a real 8-bit round trip (quantisation) with a fixed rate
        return torch.round(img * 255) / 255, torch.full((img.shape[0],), 1234.0)

    x_hat, bits = CodecBridge(proxy, real)(x, 34.0)
    assert torch.equal(x_hat.detach(), torch.round(x.detach() * 255) / 255)
    assert bits.item() == 1234.0
    (x_hat.sum() + bits.sum()).backward()
    expected = 1.0 + 1000 / 34.0 / x[0].numel()
    assert torch.allclose(x.grad, torch.full_like(x, expected))


def test_npp_trains_through_real_hevc_with_the_default_proxy():
    """The method's data path end to end on a real photo: NPP -> real x265 forward / hevc proxy backward -> loss."""
    from functools import partial

    from prepcodec.codecs.pool import CodecPool
    from prepcodec.proxy.zoo import default_proxy_name, load_proxy

    x = _photo(64, 96)
    npp = create_npp("small")
    proxy = load_proxy(default_proxy_name("hevc"))
    with CodecPool(workers=1) as pool:
        real = partial(pool.roundtrip_tensor, "hevc", preset="fast")
        bridge = CodecBridge(proxy, lambda img, qp: real(img, qp.tolist()))
        x_bar = npp(x, torch.tensor([34.0]))
        x_hat, bits = bridge(x_bar, 34.0)
        x_real, bits_real = real(x_bar.detach(), [34.0])
    assert torch.equal(x_hat.detach(), x_real) and torch.equal(bits.detach(), bits_real)  # real values forward
    loss = bits.sum() / x[0, 0].numel() + 100 * (x_hat - x).square().mean()
    loss.backward()
    grads = [p.grad for p in npp.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.weights
def test_feature_guided_npp_sees_the_task_trunk_but_does_not_own_it():
    """small-lite0: identity at initialisation, any size, gradients to the input through the U-Net only, and the
    frozen EfficientNet-Lite0 trunk is neither trained nor saved with the network."""
    torch.manual_seed(0)
    net = create_npp("small-lite0")
    x = _photo()
    assert torch.allclose(net(x, 37.0), x, atol=1e-6)
    assert not any("features" in k for k in net.state_dict())
    assert all(p.requires_grad for p in net.parameters())
    for p in net.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    y = net(x, 37.0)
    cat = net.unet.features.model  # the trunk: frozen and outside the NPP's parameters
    assert not any(p.requires_grad for p in cat.parameters())
    assert {id(p) for p in cat.parameters()}.isdisjoint(id(p) for p in net.parameters())
    flipped = net(x.flip(-1), 37.0).flip(-1)
    assert y.shape == x.shape and not torch.allclose(y, flipped, atol=1e-4)  # a spatial map, not a per-pixel one


@pytest.mark.weights
def test_blend_head_starts_near_identity_and_can_express_roi_blur(tmp_path):
    """small-blend: ~identity at initialisation; with the 'keep' weight moved to a blur the output is that blur
    (so the ROI-blur baseline is one of the network's outputs); the config survives export and loading."""
    from prepcodec.npp.baselines import gaussian_blur
    from prepcodec.npp.zoo import export_npp, load_npp

    net = create_npp("small-blend")
    x = _photo()
    assert (net(x, 37.0) - x).abs().max() < 2e-3
    with torch.no_grad():  # all weight on sigma 2 (index 2 of keep, s1, s2, s4)
        bias = net.unet.blend.logits.bias.view(4, -1)
        bias.zero_()
        bias[2] = 20.0
    assert torch.allclose(net(x, 37.0), gaussian_blur(x, 2.0).clamp(0, 1), atol=1e-4)
    loaded = load_npp(str(export_npp(net, tmp_path / "b.pt")))
    assert loaded.model.config.blend_sigmas == (1.0, 2.0, 4.0)
    assert torch.equal(loaded.model(x, 30.0), net.eval()(x, 30.0))


@pytest.mark.weights
def test_mask_only_npp_can_only_smooth_and_its_head_can_learn():
    """small-mask: x̄ is a per-pixel mix of x and its blurs and nothing else — no pixel branch, no free residual,
    so a global tone shift (what the residual networks learned first) is outside what it can output; at
    initialisation it is near the identity while the blend head still gets gradients of a usable size."""
    from prepcodec.npp.baselines import gaussian_blur

    torch.manual_seed(0)
    net = create_npp("small-mask")
    assert net.pixel is None and net.unet.out is None
    x = _photo()
    y = net(x, 37.0)
    assert 0 < (y - x).abs().mean() < 0.02
    blurs = [x] + [gaussian_blur(x, s) for s in net.config.blend_sigmas]
    lo = torch.stack(blurs).amin(0).clamp(0, 1)
    hi = torch.stack(blurs).amax(0).clamp(0, 1)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    y = net(x, 37.0)
    assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()  # a convex mix of the blurs, pixel by pixel
    grads = {}
    for size in ("small-mask", "small-blend"):
        net = create_npp(size)
        net(x, 37.0).square().mean().backward()  # blurring lowers the energy: a loss the head can act on
        grads[size] = net.unet.blend.logits.bias.grad.abs().max()
    assert grads["small-mask"] > 30 * grads["small-blend"]  # keep logit 4 vs 8: small-blend's head never trained
    with pytest.raises(InputError):
        from prepcodec.npp.model import NPPConfig

        NPPConfig(residual=False)


@pytest.mark.weights
def test_forward_only_cam_equals_the_baselines_grad_cam_on_real_photos():
    """npp.features.TaskCAM (closed-form head gradient, no autograd) is baselines.grad_cam to float precision."""
    from prepcodec.npp.baselines import grad_cam
    from prepcodec.npp.features import TaskCAM

    cam = TaskCAM("effnet-lite0")
    for name, (h, w) in (("chelsea", (256, 256)), ("coffee", (200, 300))):
        rgb = np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))[:h, :w]
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        ours, ref = cam(x), grad_cam(cam.task, x)
        assert ours.shape == (1, 1, h, w)
        assert (ours - ref).abs().max() < 1e-5
        assert 0.05 < (ours >= 0.5).float().mean() < 0.95  # a real region, not all or nothing


@pytest.mark.weights
def test_the_cam_feathered_through_its_placement_matrices_is_the_blurred_cam():
    """TaskCAM.maps folds the feathering blur into the matrices that carry the map onto the image: the result is
    gaussian_blur of the CAM, reflect edges included, on a square, a wide and a tall picture."""
    from prepcodec.npp.baselines import gaussian_blur
    from prepcodec.npp.features import TaskCAM
    from prepcodec.npp.model import ROI_FEATHER_SIGMA

    cam = TaskCAM("effnet-lite0")
    for name, (h, w) in (("chelsea", (256, 256)), ("coffee", (200, 300)), ("astronaut", (301, 180))):
        rgb = np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))[:h, :w]
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
        plain, feathered, reading = cam.maps(x, ROI_FEATHER_SIGMA)
        assert torch.equal(plain, cam(x)) and cam.maps(x).feathered is None and reading is None
        ref = gaussian_blur(plain, ROI_FEATHER_SIGMA)
        assert (feathered - ref).abs().max() < 1e-6
        assert (feathered - plain).abs().max() > 0.01  # it is blurred


def test_a_conv_after_pixel_unshuffle_is_one_strided_conv():
    """ROIBlend's correction net runs its first conv as the strided conv the unshuffle + conv amounts to."""
    from prepcodec.npp.model import _unshuffled_conv

    torch.manual_seed(0)
    rgb = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[:64, :96]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    x = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)  # 4 channels, as the net's (image, attention)
    for factor, kernel, padding in ((2, 3, 1), (2, 1, 0), (4, 3, 1)):
        conv = torch.nn.Conv2d(4 * factor**2, 5, kernel, padding=padding)
        ref = conv(F.pixel_unshuffle(x, factor))
        assert (_unshuffled_conv(x, conv, factor) - ref).abs().max() < 1e-5


@pytest.mark.weights
def test_cam_class_gradient_is_autograds_gradient_at_the_head_conv():
    """TaskCAM.class_gradient (closed form) is d log p_c / dA times the head's cells, as autograd computes it, for
    the top-1 class and for another one; the taps are the trunk's outputs at those blocks."""
    from prepcodec.npp.features import TAPS, TaskCAM
    from prepcodec.tasks.resize_matrix import resize_center_crop_matrix

    cam = TaskCAM("effnet-lite0")
    rgb = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB"))[:240, :256]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    head = cam.read_head(x, frozenset(TAPS.values()))
    assert sorted(head.tapped) == sorted(TAPS.values())
    assert head.tapped[TAPS[8]].shape[-1] == cam.task.resolution // 8
    m, task = cam.task.model, cam.task
    with torch.enable_grad():
        a = m._conv_head(m.trunk(task.normalise(resize_center_crop_matrix(x, task.resolution, task.crop_ratio)))[0])
        a = a.detach().requires_grad_(True)
        log_p = m._fc(torch.nn.functional.relu6(m._bn1(a)).mean(dim=(2, 3))).log_softmax(dim=1)
        cells = a.shape[-2] * a.shape[-1]
        for c in (int(head.probs.argmax()), 7):
            (grad,) = torch.autograd.grad(log_p[0, c], a, retain_graph=True)
            ours = cam.class_gradient(head, torch.tensor([c]))
            assert (ours - grad * cells).abs().max() < 1e-4 * grad.abs().max() * cells


@pytest.mark.weights
def test_roi_blend_starts_at_the_roi_blur_baseline_and_learns_only_small_parts():
    """roi-blend at initialisation is roi:blur:2 up to its soft threshold (mean |Δ| < 0.5/255 where the baseline
    itself moves pixels by ~5 levels); only the threshold, the blur mix and a small correction train."""
    from prepcodec.npp.model import NPPConfig, count_parameters
    from prepcodec.npp.preprocessors import parse_pre

    net = create_npp("roi-blend").eval()
    assert count_parameters(net) < 20_000 and not any("task" in k or "cam" in k for k in net.state_dict())
    rgb = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[:256, :256]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    baseline = parse_pre("roi:blur:2", net.roi.attention.task)
    with torch.no_grad():
        ours, ref = net(x, 34.0), baseline.tensor(x)
    assert (ref - x).abs().mean() * 255 > 2  # the baseline does change the picture
    assert (ours - ref).abs().mean() * 255 < 0.2  # measured 0.05
    net.train()
    net(x, 34.0).square().mean().backward()
    assert net.roi.mix_bias.grad.abs().max() > 0 and net.roi.out.weight.grad.abs().max() > 0
    with pytest.raises(InputError):
        NPPConfig(roi="effnet-lite0", blend_sigmas=(2.0,))  # residual must be off


@pytest.mark.weights
def test_roi_graded_starts_at_the_graded_baseline_and_every_band_learns():
    """roi-graded at initialisation is roi:graded up to its soft cuts (mean |Δ| < 0.5/255 where the baseline moves
    pixels by ~6 levels); each band's cut and blur mix gets a gradient; old configs load without the new fields."""
    from prepcodec.npp.model import NPPConfig, count_parameters
    from prepcodec.npp.preprocessors import parse_pre

    net = create_npp("roi-graded").eval()
    assert count_parameters(net) < 20_000
    rgb = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[:256, :256]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    baseline = parse_pre("roi:graded", net.roi.attention.task)
    with torch.no_grad():
        ours, ref = net(x, 34.0), baseline.tensor(x)
    assert (ref - x).abs().mean() * 255 > 4  # measured 6.4
    assert (ours - ref).abs().mean() * 255 < 0.5  # measured 0.28 (the soft cuts at the band edges)
    net.train()
    net(x, torch.tensor([30.0])).square().mean().backward()
    roi = net.roi
    assert all(b.grad.abs().max() > 0 for b in roi.band_bias)
    assert roi.band_threshold.fc2.weight.grad.abs().max() > 0 and roi.out.weight.grad.abs().max() > 0
    assert [w.shape for w in roi.band_weights(torch.tensor([22.0, 44.0]))] == [(2, 4), (2, 4)]
    assert NPPConfig.from_dict({"roi": "effnet-lite0", "residual": False, "blend_sigmas": [1, 2]}).graded_cuts == ()
    with pytest.raises(InputError):
        NPPConfig(roi="effnet-lite0", residual=False, blend_sigmas=(1.0, 2.0), graded_cuts=(0.2,), graded_starts=(3.0,))


@pytest.mark.weights
def test_roi_graded_mild_starts_near_its_baseline_with_mixes_that_can_move():
    """roi-graded-mild starts near roi:graded:2 (mean |Δ| < 1/255 where the baseline moves pixels by ~5 levels; the
    soft start puts ~13 % of each mix off its sigma) and closer to it than to roi:graded."""
    from prepcodec.npp.preprocessors import parse_pre

    net = create_npp("roi-graded-mild").eval()
    rgb = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[:256, :256]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    task = net.roi.attention.task
    with torch.no_grad():
        ours = net(x, 34.0)
        mild, graded = (parse_pre(spec, task).tensor(x) for spec in ("roi:graded:2", "roi:graded"))
    assert (mild - x).abs().mean() * 255 > 3  # measured 4.7
    assert (ours - mild).abs().mean() * 255 < 1.0  # measured 0.53
    assert (ours - graded).abs().mean() * 255 > 2 * (ours - mild).abs().mean() * 255  # measured 2.2
    bands = net.roi.band_weights(torch.tensor([34.0]))
    assert [round(float(w.max()), 2) for w in bands] == [0.87, 0.87]
