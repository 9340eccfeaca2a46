"""BD-rate / BD-quality against hand-checked cases, an independent implementation, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prepcodec.errors import InputError
from prepcodec.eval.bdrate import METHODS, CurveError, bd_quality, bd_rate, monotone_envelope

# A VCEG-M33-style pair of HEVC-like RD curves (kbps, dB), the example many BD tools ship with.
R1 = [686.76, 309.58, 157.11, 85.95]
P1 = [40.28, 37.18, 34.24, 31.42]
R2 = [893.34, 407.8, 204.93, 112.75]
P2 = [40.39, 37.21, 34.17, 31.24]


@pytest.mark.parametrize("method", METHODS)
def test_a_curve_against_itself_is_zero(method):
    assert bd_rate(R1, P1, R1, P1, method) == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(R1, P1, R1, P1, method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_scaled_rates_give_exactly_the_scale(method, scale):
    """log10(scale * r) = log10(r) + log10(scale): both fits shift by a constant, so BD-rate = scale - 1."""
    assert bd_rate(R1, P1, [scale * r for r in R1], P1, method) == pytest.approx((scale - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_quality_shift_on_a_log_linear_curve(method):
    """Hand check: anchor log10 r = (q - 30) / 10 on q = 30, 32.5, 35, 37.5, 40; test = same rates, q + 1 dB.

    Test: log10 r = (q - 31) / 10, so at equal quality log10 r_b - log10 r_a = -0.1 everywhere on the overlap
    [31, 40]: BD-rate = 10^-0.1 - 1 = -20.5672 %. At equal rate the test is 1 dB better: BD-PSNR = +1 dB.
    Both cubic and PCHIP reproduce a straight line exactly.
    """
    q = np.array([30, 32.5, 35, 37.5, 40])
    r = 10 ** ((q - 30) / 10)
    assert bd_rate(r, q, r, q + 1, method) == pytest.approx((10**-0.1 - 1) * 100, abs=1e-9)
    assert bd_quality(r, q, r, q + 1, method) == pytest.approx(1.0, abs=1e-9)


def test_textbook_quadratic_case_by_hand():
    """Hand check: anchor log10 r = (q-30)^2/100, test log10 r = (q-30)^2/100 - (q-30)/50, q = 30, 32, 34, 36.

    The cubic fit reproduces both quadratics exactly. Over [30, 36] the mean of -(q-30)/50 is -(3)/50 = -0.06,
    so BD-rate = 10^-0.06 - 1 = -12.9036 %. PCHIP is not exact on a parabola, but must land close.
    """
    q = np.array([30.0, 32.0, 34.0, 36.0])
    ra = 10 ** ((q - 30) ** 2 / 100)
    rb = 10 ** ((q - 30) ** 2 / 100 - (q - 30) / 50)
    expected = (10**-0.06 - 1) * 100
    assert expected == pytest.approx(-12.9036, abs=1e-4)
    assert bd_rate(ra, q, rb, q, "cubic") == pytest.approx(expected, abs=1e-9)
    assert bd_rate(ra, q, rb, q, "pchip") == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_matches_the_independent_bjontegaard_package(method):
    import bjontegaard

    ours = bd_rate(R1, P1, R2, P2, method)
    theirs = bjontegaard.bd_rate(R1, P1, R2, P2, method=method, min_overlap=0)
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert 25 < ours < 35  # curve 2 spends ~30 % more bits for the same PSNR
    assert bd_quality(R1, P1, R2, P2, method) == pytest.approx(
        bjontegaard.bd_psnr(R1, P1, R2, P2, method=method, min_overlap=0), abs=1e-9
    )


@pytest.mark.parametrize("method", METHODS)
def test_accuracy_axis_in_fraction_or_percent(method):
    rates = [0.12, 0.2, 0.35, 0.6, 1.0]
    top1 = [0.52, 0.61, 0.68, 0.72, 0.74]
    cheaper = [0.9 * r for r in rates]
    as_fraction = bd_rate(rates, top1, cheaper, top1, method)
    as_percent = bd_rate(rates, [100 * t for t in top1], cheaper, [100 * t for t in top1], method)
    assert as_fraction == pytest.approx(-10.0, abs=1e-9) and as_percent == pytest.approx(as_fraction, abs=1e-9)


def test_refuses_too_few_points_and_disjoint_curves():
    with pytest.raises(InputError, match="at least 4"):
        bd_rate(R1[:3], P1[:3], R2, P2)
    with pytest.raises(InputError, match="do not overlap in quality"):
        bd_rate(R1, P1, R2, [p + 20 for p in P2])
    with pytest.raises(InputError, match="do not overlap in rate"):
        bd_quality(R1, P1, [r * 100 for r in R2], P2)
    with pytest.raises(ValueError):  # CurveError is also a ValueError for callers that catch that
        bd_rate(R1, P1, R2, [p + 20 for p in P2])
    with pytest.raises(CurveError, match="non-finite"):
        bd_rate(R1, [math.inf, *P1[1:]], R2, P2)
    with pytest.raises(CurveError, match="monotone_envelope"):
        bd_rate(R1, [40, 40, 34, 31], R2, P2)
    with pytest.raises(InputError, match="unknown BD method"):
        bd_rate(R1, P1, R2, P2, method="akima")


def test_monotone_envelope_keeps_the_upper_left_front():
    rates = [0.5, 0.1, 0.2, 0.3, 0.4, 0.4, 0.6]
    acc = [0.70, 0.50, 0.62, 0.60, 0.66, 0.68, 0.69]
    r, q = monotone_envelope(rates, acc)
    # 0.3 (0.60 < 0.62) is dominated; at rate 0.4 the better 0.68 is kept; 0.6 (0.69 < 0.70 at 0.5) is dropped
    assert r.tolist() == [0.1, 0.2, 0.4, 0.5]
    assert q.tolist() == [0.50, 0.62, 0.68, 0.70]
    assert np.all(np.diff(r) > 0) and np.all(np.diff(q) > 0)

