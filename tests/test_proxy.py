"""Proxy codecs on real photos: shapes/bits, gradients, shipped weights, analytic JPEG vs the real JPEG codec, and
the block-DCT proxy (its transform is the codec's own 4:2:0 path, its quantiser HEVC's step law)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.codecs.yuv import rgb_to_yuv420, yuv420_to_rgb
from prepcodec.errors import InputError
from prepcodec.proxy.block_transform import BlockDCTAnalysis, BlockDCTSynthesis, dct_basis
from prepcodec.proxy.jpeg import JpegProxy, load_rate_model, real_jpeg
from prepcodec.proxy.models import ProxyConfig, build_proxy, create_proxy
from prepcodec.proxy.zoo import WEIGHTS_DIR, list_proxies, load_proxy

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))


def _x(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


SHIPPED = {"hevc-small": ("gdn", 96), "hevc-dct": ("dct", 384)}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_hevc_proxy_loads_with_weights_only(name):
    path = WEIGHTS_DIR / f"{name}.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in state.values() if v.dtype == torch.float16) > 1_000_000
    assert path.stat().st_size < 5 * 2**20
    assert name in list_proxies()
    model = load_proxy(name)
    assert (model.config.arch, model.config.M) == SHIPPED[name]


def test_default_hevc_proxy_is_a_shipped_one():
    from prepcodec.proxy.zoo import default_proxy_name

    assert default_proxy_name("hevc") in list_proxies()
    assert default_proxy_name("jpeg") == "jpeg-analytic"
    with pytest.raises(InputError):
        default_proxy_name("webp")


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("shape", [(45, 77), (64, 64), (129, 70)])
def test_odd_sizes_keep_shape_and_bits_follow_qp(shape, name):
    model = load_proxy(name)
    h, w = shape
    x = _x(_rgb("kodim23")[100 : 100 + h, 200 : 200 + w])
    with torch.no_grad():
        xh, bits = model(torch.cat([x, x]), torch.tensor([24.0, 44.0]))
    assert xh.shape == (2, 3, h, w)
    assert torch.isfinite(bits).all() and (bits > 0).all()
    assert bits[0] > 1.5 * bits[1]  # 20 QP apart: far more bits at the fine QP


@pytest.mark.parametrize("name", SHIPPED)
def test_proxy_reconstruction_resembles_input(name):
    x = _x(_rgb("chelsea")[:128, :192])
    with torch.no_grad():
        xh, _ = load_proxy(name)(x, 28.0)
    assert _psnr((xh[0].permute(1, 2, 0) * 255).numpy(), (x[0].permute(1, 2, 0) * 255).numpy()) > 24


@pytest.mark.parametrize("name", SHIPPED)
def test_gradients_reach_the_input_in_eval_mode(name):
    model = load_proxy(name)
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


def _psnr_t(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).square().mean()))


def test_dct_basis_is_orthonormal():
    b = dct_basis(16).reshape(256, 256).double()
    assert torch.allclose(b @ b.T, torch.eye(256, dtype=torch.float64), atol=1e-5)


def test_unquantised_transform_is_the_codecs_yuv420_round_trip():
    rgb = _rgb("kodim23")[:128, :192]
    ref = torch.from_numpy(yuv420_to_rgb(*rgb_to_yuv420(rgb))).permute(2, 0, 1)[None].float() / 255
    x = _x(rgb)
    with torch.no_grad():
        out = BlockDCTSynthesis(16)(BlockDCTAnalysis(16)(x), torch.tensor([0.32]))  # QP 30 on [22, 47]
    assert _psnr_t(out, ref) > 48  # only the codec path's 8-bit rounding differs
    assert _psnr_t(out, x) < _psnr_t(out, ref)  # and 4:2:0 chroma loss is really there


def test_fresh_proxy_follows_hevc_step_law():
    """Untrained, the quantiser is HEVC's: PSNR falls by several dB per 6 QP, bits fall with QP."""
    x = _x(_rgb("coffee")[:128, :128])
    model = create_proxy("hevc", "dct").eval()
    with torch.no_grad():
        out = [model(x, qp) for qp in (22.0, 28.0, 40.0)]
    p = [_psnr_t(xh, x) for xh, _ in out]
    bits = [float(b) for _, b in out]
    assert p[0] > 38 and p[0] > p[1] > p[2]
    assert 2.5 < p[0] - p[1] < 7.5  # less than 6 dB: 4:2:0 chroma loss and small coefficients that round to 0
    assert bits[0] > bits[1] > bits[2]


def test_odd_sizes_and_gradients():
    model = create_proxy("hevc", "dct").eval()
    x = _x(_rgb("chelsea")[:45, :77]).requires_grad_(True)
    xh, bits = model(x, 34.0)
    assert xh.shape == x.shape and bits.shape == (1,)
    (bits.sum() + xh.square().sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_config_must_match_the_block_transform():
    with pytest.raises(InputError, match="M=96"):
        build_proxy(ProxyConfig(arch="dct", M=96))
    with pytest.raises(InputError, match="architecture"):
        build_proxy(ProxyConfig(arch="transformer"))


def test_shipped_dct_proxy_tracks_real_hevc_on_photos():
    """Bits within a factor 1.5 of x265's real bits and the decode close to x265's, on real photo crops."""
    from prepcodec.codecs.pool import roundtrip_one
    from prepcodec.proxy.zoo import load_proxy

    model = load_proxy("hevc-dct")
    for name, qp in (("coffee", 30), ("astronaut", 40)):
        rgb = _rgb(name)[:192, :256]
        real = roundtrip_one("hevc", rgb, qp, "eval")
        with torch.no_grad():
            xh, bits = model(_x(rgb), float(qp))
        assert abs(float(torch.log2(bits / real.bits))) < 0.6, (name, float(bits), real.bits)
        decoded = torch.from_numpy(real.decoded.copy()).permute(2, 0, 1)[None].float() / 255
        assert _psnr_t(xh, decoded) > 28
        assert abs(_psnr_t(xh, _x(rgb)) - _psnr_t(decoded, _x(rgb))) < 1.5
