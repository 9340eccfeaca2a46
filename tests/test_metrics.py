"""bpp / PSNR / PSNR-Y / MS-SSIM on real photos, with hand-checkable expected values."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from prepcodec.errors import InputError
from prepcodec.eval.metrics import MS_SSIM_MIN_SIDE, bpp, global_ssim, ms_ssim, psnr, psnr_y


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_bpp_is_eight_bits_per_byte_over_pixels():
    assert bpp(1000, 100, 80) == 8000 / 8000 == 1.0
    assert bpp(0, 1, 1) == 0.0
    with pytest.raises(InputError):
        bpp(10, 0, 5)


def test_psnr_of_a_one_level_error_everywhere(sample_image):
    a = sample_image("astronaut")
    b = a ^ 1  # every sample off by exactly 1 -> MSE 1 -> PSNR = 20 log10(255) = 48.1308 dB
    assert psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert psnr(a, a.copy()) == math.inf


def test_psnr_y_uses_bt601_weights(sample_image):
    a = sample_image("coffee")
    b = a.copy()
    b[..., 2] ^= 1  # only blue off by 1 -> luma off by 0.114 everywhere -> MSE 0.114^2
    assert psnr_y(a, b) == pytest.approx(10 * math.log10(255**2 / 0.114**2), abs=1e-9)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (1 / 3)), abs=1e-9)


def test_metrics_refuse_mismatched_inputs(sample_image):
    a = sample_image("chelsea")
    with pytest.raises(InputError, match="differ in shape"):
        psnr(a, a[1:])
    with pytest.raises(InputError, match="RGB uint8"):
        ms_ssim(a.astype(np.float32), a.astype(np.float32))


def _torch_reference(a: np.ndarray, b: np.ndarray, multiscale: bool) -> float:
    import torch
    from pytorch_msssim import ms_ssim as ref_ms_ssim
    from pytorch_msssim import ssim as ref_ssim

    ta, tb = (torch.from_numpy(x.astype(np.float64).transpose(2, 0, 1)[None].copy()) for x in (a, b))
    fn = ref_ms_ssim if multiscale else ref_ssim
    return float(fn(ta, tb, data_range=255.0, win_size=11))


def test_ms_ssim_equals_pytorch_msssim_on_a_real_photo(sample_image):
    a = sample_image("chelsea")  # 451x300: odd width exercises the padded 2x2 pooling
    b = _jpeg(a, 15)
    assert ms_ssim(a, b) == pytest.approx(_torch_reference(a, b, multiscale=True), abs=1e-5)


def test_ms_ssim_orders_jpeg_qualities_on_a_real_photo(sample_image):
    a = sample_image("kodim23")
    scores = [ms_ssim(a, _jpeg(a, q)) for q in (5, 30, 90)]
    assert scores[0] < scores[1] < scores[2] < 1.0
    assert ms_ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-6)
    b = _jpeg(a, 30)
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), abs=1e-6)


def test_small_images_fall_back_to_ssim(sample_image):
    a = sample_image("astronaut")
    b = _jpeg(a, 20)
    side = MS_SSIM_MIN_SIDE - 1
    crop_a, crop_b = a[:side, :side], b[:side, :side]
    assert ms_ssim(crop_a, crop_b) == pytest.approx(_torch_reference(crop_a, crop_b, multiscale=False), abs=1e-5)
    assert 0 < ms_ssim(a[:MS_SSIM_MIN_SIDE, :MS_SSIM_MIN_SIDE], b[:MS_SSIM_MIN_SIDE, :MS_SSIM_MIN_SIDE]) < 1
    tiny_a, tiny_b = a[200:205, 200:207], b[200:205, 200:207]
    assert ms_ssim(tiny_a, tiny_b) == global_ssim(tiny_a, tiny_b)
    assert ms_ssim(a[:1, :1], a[:1, :1].copy()) == pytest.approx(1.0)
    # one pixel off by a known amount: luminance term only, (2xy + C1) / (x^2 + y^2 + C1) per channel
    one = np.array([[[100, 100, 100]]], np.uint8)
    other = np.array([[[110, 110, 110]]], np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ms_ssim(one, other) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
