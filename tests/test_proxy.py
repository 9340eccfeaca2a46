"""Proxy codecs on real photos: shapes/bits, gradients, shipped weights, analytic JPEG vs the real JPEG codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.errors import InputError
from prepcodec.proxy.jpeg import JpegProxy, load_rate_model, real_jpeg
from prepcodec.proxy.models import create_proxy
from prepcodec.proxy.zoo import WEIGHTS_DIR, list_proxies, load_proxy

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))


def _x(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_shipped_hevc_proxy_loads_with_weights_only():
    path = WEIGHTS_DIR / "hevc-small.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in state.values() if v.dtype == torch.float16) > 1_000_000
    assert path.stat().st_size < 5 * 2**20
    assert "hevc-small" in list_proxies()
    model = load_proxy("hevc-small")
    assert model.config.N == 64 and model.config.M == 96


@pytest.mark.parametrize("shape", [(45, 77), (64, 64), (129, 70)])
def test_odd_sizes_keep_shape_and_bits_follow_qp(shape):
    model = load_proxy("hevc-small")
    h, w = shape
    x = _x(_rgb("kodim23")[100 : 100 + h, 200 : 200 + w])
    with torch.no_grad():
        xh, bits = model(torch.cat([x, x]), torch.tensor([24.0, 44.0]))
    assert xh.shape == (2, 3, h, w)
    assert torch.isfinite(bits).all() and (bits > 0).all()
    assert bits[0] > 1.5 * bits[1]  # 20 QP apart: far more bits at the fine QP


def test_proxy_reconstruction_resembles_input():
    x = _x(_rgb("chelsea")[:128, :192])
    with torch.no_grad():
        xh, _ = load_proxy("hevc-small")(x, 28.0)
    assert _psnr((xh[0].permute(1, 2, 0) * 255).numpy(), (x[0].permute(1, 2, 0) * 255).numpy()) > 24


def test_gradients_reach_the_input_in_eval_mode():
    model = load_proxy("hevc-small")
    x = _x(_rgb("coffee")[:70, :90]).requires_grad_(True)
    xh, bits = model(x, 34.0)
    (bits.sum() + xh.square().sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs_raise_input_error():
    model = create_proxy()
    with pytest.raises(InputError):
        model(torch.rand(3, 32, 32), 30.0)
    with pytest.raises(InputError):
        model(torch.rand(1, 3, 32, 32), 60.0)
    with pytest.raises(InputError):
        create_proxy(size="huge")


@pytest.mark.parametrize("quality", [30, 75])
def test_jpeg_proxy_matches_the_real_jpeg_decode(quality):
    from prepcodec.codecs import get_codec

    rgb = _rgb("kodim23")[:200, :301]
    decoded = get_codec("jpeg").decode(real_jpeg(rgb, quality))
    with torch.no_grad():
        xh, _ = JpegProxy()(_x(rgb), quality)
    ours = (xh[0].permute(1, 2, 0) * 255).round().numpy()
    assert ours.shape == rgb.shape
    assert _psnr(ours, decoded) > 38


def test_jpeg_rate_model_tracks_real_bytes_on_unseen_photos():
    assert load_rate_model()["n"] > 0, "the shipped rate model has not been fitted"
    proxy = JpegProxy()
    real, est = [], []
    for name in ("astronaut", "chelsea", "coffee", "kodim04"):
        rgb = _rgb(name)[:256, :256]
        for q in (20, 50, 80):
            real.append(8 * len(real_jpeg(rgb, q)))
            with torch.no_grad():
                est.append(float(proxy(_x(rgb), q)[1][0]))
    assert min(est) > 0
    assert np.corrcoef(np.log(real), np.log(est))[0, 1] > 0.95


def test_jpeg_proxy_gradient_flows():
    x = _x(_rgb("astronaut")[:64, :64]).requires_grad_(True)
    xh, bits = JpegProxy()(x, 50)
    (bits.sum() + xh.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
