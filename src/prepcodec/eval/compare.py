"""BD-rate between runs at equal task accuracy, with a paired bootstrap 95 % confidence interval over images; and
its companion, the average accuracy difference at equal bits (BD-quality: BD-PSNR's form, e.g. BD-mAP).

Accuracy curves are noisy, and a cubic fit through noisy points can invent savings. So:
- both curves are reduced to their monotone envelope before fitting;
- BD-rate is reported with the cubic and the piecewise-cubic (pchip) fit, each with its interval, and flagged when
  they disagree by more than the interval width, or when the cubic's interval is several times pchip's (a flat
  stretch of a curve, inverted, makes the cubic swing from resample to resample where pchip cannot overshoot);
- the interval resamples image indices jointly for both runs (paired: the same images in both curves), recomputes
  both curves and the BD-rate, and takes the 2.5 / 97.5 percentiles;
- curves that do not overlap in accuracy are refused (no extrapolated BD-rate).

BD-quality is reported beside it because BD-rate inverts the curves: where an anchor's accuracy hardly moves
with the rate (a flat top, common for a blurred input), a small accuracy difference becomes a large and unstable
rate difference. The difference in accuracy at equal bits has no inverse to take; it is resampled with the same
images and is NaN where the curves do not overlap in rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prepcodec.errors import InputError
from prepcodec.eval.records import METRIC_NAMES, ImageRecord, Run
from prepcodec.eval.scoring import GroundTruth, LevelScorer

DEFAULT_BOOTSTRAP = 1000
# The cubic's interval this many times as wide as pchip's (from the same resamples) marks the cubic as unstable.
# Measured on this project's 72 comparisons in session 17: 0.9-2.5x for 70 of them, 7.7x and 45x
# where a curve has a flat stretch (MoveNet on 89 images, npp:cls before avif).
UNSTABLE_CUBIC_RATIO = 3.0
# Distances (lower = better): BD-rate and envelopes see -value, so "more quality for more bits" holds for every
# metric; tables and plots keep the metric's own values.
LOWER_IS_BETTER = frozenset({"lpips"})


def oriented(metric: str, points: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rates, quality) with quality negated for lower-is-better metrics (an involution: apply it to undo it)."""
    rates, quality = points
    return (rates, -quality) if metric in LOWER_IS_BETTER else (rates, quality)


@dataclass
class Curve:
    """One run restricted to a common image list: a scorer per level."""

    levels: list[float]
    scorers: list[LevelScorer]
    _memo: dict[tuple[str, bytes], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def points(self, metric: str, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean bpp, metric) per level over images `idx`.

        Memoized: every pair shares the anchor and, with one seed, the same resamples, so the anchor's curve is
        computed once per resample instead of once per compared run (COCO AP costs ~10 ms per level).
        """
        key = (metric, b"" if idx is None else np.asarray(idx, dtype=np.int64).tobytes())
        if key not in self._memo:
            rates = np.array([s.mean_bpp(idx) for s in self.scorers])
            quality = np.array([s.score(metric, idx) for s in self.scorers])
            self._memo[key] = (rates, quality)
        return self._memo[key]


@dataclass
class CompareRow:
    """BD-rate of one run against the anchor (percent; negative = fewer bits at equal accuracy)."""

    run: str
    bd_rate_pct: float
    bd_rate_pchip_pct: float
    ci95_pct: list[float]
    ci95_pchip_pct: list[float]
    n_images: int
    n_boot_ok: int
    n_boot: int
    disagreement: bool  # |cubic - pchip| > CI width: the fit, not the data, decides the number
    unstable_cubic: bool = False  # the cubic's interval > UNSTABLE_CUBIC_RATIO x pchip's: read pchip's
    # accuracy difference at equal bits in the metric's own units and sign (a fraction for task metrics; for LPIPS
    # negative = better); NaN where the curves do not overlap in rate
    bd_quality: float = float("nan")
    bd_quality_pchip: float = float("nan")
    ci95_quality: list[float] = field(default_factory=lambda: [float("nan"), float("nan")])

    def to_json(self) -> dict:
        """Stable keys first; an interval that could not be computed is null (strict JSON has no NaN)."""

        def clean(v: list[float]) -> list[float | None]:
            return [_finite(x) for x in v]

        return {
            "run": self.run, "bd_rate_pct": self.bd_rate_pct, "bd_rate_pchip_pct": self.bd_rate_pchip_pct,
            "ci95_pct": clean(self.ci95_pct), "ci95_pchip_pct": clean(self.ci95_pchip_pct), "n_images": self.n_images,
            "n_boot_ok": self.n_boot_ok, "n_boot": self.n_boot, "disagreement": self.disagreement,
            "unstable_cubic": self.unstable_cubic,
            "bd_quality": _finite(self.bd_quality), "bd_quality_pchip": _finite(self.bd_quality_pchip),
            "ci95_quality": clean(self.ci95_quality),
        }


def _finite(x: float) -> float | None:
    """None for NaN / inf: strict JSON has no NaN."""
    return x if np.isfinite(x) else None


@dataclass
class Comparison:
    anchor: str
    metric: str
    rows: list[CompareRow]
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # run -> (bpp, metric)
    n_plotted: int = 0  # images shared by all runs: the curves are drawn over these


@dataclass
class RunGroup:
    """One curve: a single run, or several runs whose points together form a best-of envelope
    (e.g. a blur sweep at several strengths: the envelope is the best any strength achieves at each rate)."""

    name: str
    runs: list[Run]


def ground_truth(run: Run) -> GroundTruth:
    """Ground-truth files a run was scored against (from its manifest)."""
    gt = run.manifest.get("ground_truth") or {}
    paths = {}
    for k in ("instances_json", "keypoints_json"):
        if gt.get(k):
            p = Path(gt[k])
            if not p.is_file():
                raise InputError(f"{run.name}: ground truth {p} (from its manifest) is missing")
            paths[k] = p
    return GroundTruth(**paths)


def build_curve(group: RunGroup, images: list[str]) -> Curve:
    """Scorers for every (run, level) of the group over exactly `images`, so two curves index the same images."""
    levels, scorers = [], []
    for run in group.runs:
        by_level: dict[float, dict[str, ImageRecord]] = {}
        for r in run.records:
            by_level.setdefault(r.level, {})[r.image] = r
        gt = ground_truth(run)
        for lv in sorted(by_level):
            levels.append(lv)
            scorers.append(LevelScorer([by_level[lv][i] for i in images], gt))
    return Curve(levels, scorers)


def _curve(group: RunGroup, images: list[str], memo: dict | None) -> Curve:
    if memo is None:
        return build_curve(group, images)
    key = (id(group), tuple(images))
    if key not in memo:
        memo[key] = build_curve(group, images)
    return memo[key]


def common_images(*groups: RunGroup) -> list[str]:
    """Image ids present at every level of every run of the groups."""
    sets = []
    for group in groups:
        for run in group.runs:
            by_level: dict[float, set[str]] = {}
            for r in run.records:
                by_level.setdefault(r.level, set()).add(r.image)
            sets.extend(by_level.values())
    return sorted(set.intersection(*sets)) if sets else []


def _envelopes(ra, qa, rb, qb) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both curves reduced to their monotone envelopes (ValueError if one is unusable, e.g. non-finite)."""
    from prepcodec.eval.bdrate import monotone_envelope

    return (*monotone_envelope(ra, qa), *monotone_envelope(rb, qb))


def _bd_rates(ra, qa, rb, qb) -> tuple[float, float]:
    """(cubic, pchip) BD-rate of b vs a, curves already enveloped."""
    from prepcodec.eval.bdrate import bd_rate

    return float(bd_rate(ra, qa, rb, qb, method="cubic")), float(bd_rate(ra, qa, rb, qb, method="pchip"))


def bd_pair(ra, qa, rb, qb) -> tuple[float, float]:
    """(cubic, pchip) BD-rate of b vs a on their monotone envelopes.

    Raises ValueError (bdrate.CurveError) when they cannot be compared: no overlap in accuracy, or an envelope
    with fewer points than a cubic needs.
    """
    return _bd_rates(*_envelopes(ra, qa, rb, qb))


def _bd_quality(metric: str, envelopes: tuple, method: str) -> float:
    """Accuracy difference of b vs a at equal bits from oriented, enveloped curves, in `metric`'s own units and
    sign; NaN where they cannot be compared (no overlap in rate, or too few points)."""
    from prepcodec.eval.bdrate import bd_quality

    try:
        value = bd_quality(*envelopes, method=method)
    except (ValueError, ArithmeticError):
        return float("nan")
    return -value if metric in LOWER_IS_BETTER else value


def unstable_cubic(ci: list[float], ci_pchip: list[float]) -> bool:
    """True when the cubic BD-rate's interval is more than UNSTABLE_CUBIC_RATIO times as wide as pchip's."""
    cubic, pchip = ci[1] - ci[0], ci_pchip[1] - ci_pchip[0]
    return bool(np.isfinite(cubic) and np.isfinite(pchip) and cubic > UNSTABLE_CUBIC_RATIO * max(pchip, 1e-9))


def _ci(values: list[float]) -> list[float]:
    if not values:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def compare_pair(
    anchor: RunGroup, other: RunGroup, metric: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
    curves: dict[tuple[int, tuple[str, ...]], Curve] | None = None, progress: bool = False,
) -> CompareRow:
    """BD-rate of `other` vs `anchor` with the paired bootstrap interval over their common images.

    `curves` memoizes built curves by (group, images): COCO scorers take ~0.2 s per level to set up, and the
    anchor is shared by every pair.
    """
    images = common_images(anchor, other)
    if not images:
        raise InputError(f"{anchor.name} and {other.name} share no image measured at all levels")
    ca, cb = _curve(anchor, images, curves), _curve(other, images, curves)
    for group, curve in ((anchor, ca), (other, cb)):
        for scorer in curve.scorers:
            if metric not in scorer.metrics:
                have = ", ".join(scorer.metrics) or "none"
                raise InputError(f"run {group.name} has no metric {metric!r} (it has: {have})")
    try:
        full = _envelopes(*oriented(metric, ca.points(metric)), *oriented(metric, cb.points(metric)))
        cubic, pchip = _bd_rates(*full)
    except ValueError as exc:  # CurveError is also an InputError; re-raise with the run names
        raise InputError(f"cannot compare {other.name} with {anchor.name} on {metric}: {exc}") from None
    quality, quality_p = _bd_quality(metric, full, "cubic"), _bd_quality(metric, full, "pchip")
    rng = np.random.default_rng(seed)
    n = len(images)
    boot_c, boot_p, boot_q = [], [], []
    from tqdm import tqdm

    for _ in tqdm(range(n_boot), desc=f"bootstrap {other.name}", unit="resample", disable=not progress,
                  leave=False):
        idx = rng.integers(0, n, n)
        try:
            resampled = _envelopes(*oriented(metric, ca.points(metric, idx)), *oriented(metric, cb.points(metric, idx)))
        except ValueError:
            continue  # an unusable resampled curve says nothing about either measure
        q = _bd_quality(metric, resampled, "cubic")
        if np.isfinite(q):
            boot_q.append(q)
        try:
            c, p = _bd_rates(*resampled)
        except (ValueError, ArithmeticError):
            continue  # this resample's curves do not overlap: it says nothing about the BD-rate
        if np.isfinite(c) and np.isfinite(p):
            boot_c.append(c)
            boot_p.append(p)
    ci, ci_p = _ci(boot_c), _ci(boot_p)
    width = ci[1] - ci[0]
    return CompareRow(
        run=other.name, bd_rate_pct=cubic, bd_rate_pchip_pct=pchip, ci95_pct=ci, ci95_pchip_pct=ci_p,
        n_images=n, n_boot_ok=len(boot_c), n_boot=n_boot,
        # no usable resample: flag it unless no bootstrap was asked for
        disagreement=bool(abs(cubic - pchip) > width) if np.isfinite(width) else n_boot > 0,
        unstable_cubic=unstable_cubic(ci, ci_p),
        bd_quality=quality, bd_quality_pchip=quality_p, ci95_quality=_ci(boot_q),
    )


def compare_runs(
    runs: list[Run | RunGroup], metric: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, progress: bool = False
) -> Comparison:
    """BD-rate of every run (or envelope group) against the first."""
    if metric not in METRIC_NAMES:
        raise InputError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")
    if len(runs) < 2:
        raise InputError("compare needs at least two runs (the first is the anchor)")
    groups = [r if isinstance(r, RunGroup) else RunGroup(r.name, [r]) for r in runs]
    anchor = groups[0]
    memo: dict[tuple[int, tuple[str, ...]], Curve] = {}
    rows = [compare_pair(anchor, other, metric, n_boot, seed, memo, progress) for other in groups[1:]]
    curves = {}
    shown = common_images(*groups)  # plot every curve on the same images (those all runs share)
    for group in groups:
        rates, quality = _curve(group, shown, memo).points(metric)
        if len(group.runs) > 1:  # an envelope group is drawn as its envelope, not as a zig-zag of all points
            from prepcodec.eval.bdrate import monotone_envelope

            rates, quality = oriented(metric, monotone_envelope(*oriented(metric, (rates, quality))))
        curves[group.name] = (rates.tolist(), quality.tolist())
    return Comparison(anchor.name, metric, rows, curves, len(shown))
