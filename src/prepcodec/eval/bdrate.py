"""Bjøntegaard delta rate and quality between two rate–quality curves (VCEG-M33 and its PCHIP variant).

The quality axis may be PSNR / MS-SSIM (dB or raw), or a task accuracy (top-1 as a fraction or in %, mAP): BD-rate
only averages over the quality interval both curves cover, so its units do not matter as long as both curves use
the same ones. BD-quality is reported in the quality's own units.

- `cubic`: the classic Bjøntegaard fit, a least-squares cubic polynomial of log10(rate) in quality, integrated
  over the overlap (exact interpolation for 4 points).
- `pchip`: a piecewise-cubic Hermite (monotone-preserving) interpolant of the same points (scipy), which cannot
  overshoot between points the way a cubic fit of a noisy curve can.

Accuracy curves are noisy and not always monotone; fit their `monotone_envelope` (the upper-left Pareto front)
rather than the raw points, or a cubic can invent savings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prepcodec.errors import InputError

METHODS = ("cubic", "pchip")
MIN_POINTS = 4


class CurveError(InputError, ValueError):
    """Two curves cannot be compared (too few points, no overlap, bad values). Also a ValueError for callers."""


def monotone_envelope(rates: Sequence[float], qualities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The upper-left Pareto envelope: the points no other point beats with <= rate and >= quality.

    Returned sorted by rate, strictly increasing in both rate and quality (of several points at the same rate the
    best one is kept; a point whose quality does not exceed that of a cheaper point is dropped).
    """
    r, q = _as_curve(rates, qualities, "curve", min_points=1)
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    keep_r: list[float] = []
    keep_q: list[float] = []
    for ri, qi in zip(r[order], q[order], strict=True):
        if keep_q and qi <= keep_q[-1]:
            continue  # dominated by a cheaper (or equally cheap) point
        keep_r.append(float(ri))
        keep_q.append(float(qi))
    return np.asarray(keep_r), np.asarray(keep_q)


def _as_curve(rates: Sequence[float], qualities: Sequence[float], name: str, min_points: int = MIN_POINTS):
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    q = np.asarray(qualities, dtype=np.float64).reshape(-1)
    if r.shape != q.shape:
        raise CurveError(f"{name}: {r.size} rates but {q.size} quality values")
    if r.size < min_points:
        raise CurveError(f"{name} has {r.size} points; BD needs at least {min_points} (rate, quality) points per curve")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise CurveError(f"{name} has non-finite values (e.g. PSNR inf of a lossless point); drop them first")
    if np.any(r <= 0):
        raise CurveError(f"{name} has a rate <= 0; rates must be positive (bpp or bits)")
    return r, q


def _fit(x: np.ndarray, y: np.ndarray, method: str, name: str):
    """An object with .integrate(lo, hi) for y as a function of x (x strictly increasing after sorting)."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise CurveError(f"{name} repeats an abscissa value; fit its monotone_envelope first")
    if method == "cubic":
        return _Poly(np.polyfit(x, y, 3))
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return PchipInterpolator(x, y, extrapolate=False)
    raise InputError(f"unknown BD method {method!r}; choose one of {', '.join(METHODS)}")


class _Poly:
    """A fitted polynomial with the same .integrate(lo, hi) as scipy's interpolators."""

    def __init__(self, coeffs: np.ndarray) -> None:
        self._antiderivative = np.polyint(coeffs)

    def integrate(self, lo: float, hi: float) -> float:
        return float(np.polyval(self._antiderivative, hi) - np.polyval(self._antiderivative, lo))


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise CurveError(
            f"curves do not overlap in {axis}: anchor spans [{a.min():.6g}, {a.max():.6g}], "
            f"test spans [{b.min():.6g}, {b.max():.6g}]"
        )
    return float(lo), float(hi)


def bd_rate(
    rate_a: Sequence[float],
    q_a: Sequence[float],
    rate_b: Sequence[float],
    q_b: Sequence[float],
    method: str = "cubic",
) -> float:
    """Average rate difference of b vs anchor a at equal quality, in percent (negative = b saves bits).

    Each curve needs >= 4 points with distinct qualities; the two must overlap in quality (CurveError otherwise).
    """
    ra, qa = _as_curve(rate_a, q_a, "anchor curve")
    rb, qb = _as_curve(rate_b, q_b, "test curve")
    lo, hi = _overlap(qa, qb, "quality")
    fa, fb = _fit(qa, np.log10(ra), method, "anchor curve"), _fit(qb, np.log10(rb), method, "test curve")
    avg = (fb.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float((10.0**avg - 1.0) * 100.0)


def bd_quality(
    rate_a: Sequence[float],
    q_a: Sequence[float],
    rate_b: Sequence[float],
    q_b: Sequence[float],
    method: str = "cubic",
) -> float:
    """Average quality difference of b vs anchor a at equal rate (BD-PSNR for PSNR), in the quality's units.

    Positive = b is better. Each curve needs >= 4 points with distinct rates; they must overlap in rate.
    """
    ra, qa = _as_curve(rate_a, q_a, "anchor curve")
    rb, qb = _as_curve(rate_b, q_b, "test curve")
    la, lb = np.log10(ra), np.log10(rb)
    lo, hi = _overlap(la, lb, "rate")
    fa, fb = _fit(la, qa, method, "anchor curve"), _fit(lb, qb, method, "test curve")
    return float((fb.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo))
