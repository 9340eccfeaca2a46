"""The shared HEVC-QP axis: every codec's native level mapped to the HEVC QP of equal mean Kodak bpp.

The table (`qp_axis.json`, shipped with the package) is written by `prepcodec calibrate`; this module only reads
it and interpolates. `build_table` turns measured mean bpp into the mapping (interpolating QP in log-bpp).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from prepcodec.errors import InputError

TABLE_PATH = Path(__file__).with_name("qp_axis.json")


@functools.cache
def load_table(path: Path = TABLE_PATH) -> dict:
    """The shipped calibration table (InputError if it is missing: run `prepcodec calibrate`)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"QP-axis table {path} is missing; run `prepcodec calibrate`") from None


def _entry(codec: str) -> tuple[np.ndarray, np.ndarray]:
    if codec == "hevc":
        qp = np.arange(0, 52, dtype=np.float64)
        return qp, qp
    entry = load_table()["codecs"].get(codec)
    if entry is None:
        raise InputError(f"no QP-axis calibration for codec {codec!r}; run `prepcodec calibrate --codecs {codec}`")
    return np.asarray(entry["levels"], dtype=np.float64), np.asarray(entry["hevc_qp"], dtype=np.float64)


def to_hevc_qp(codec: str, level: float) -> float:
    """Native level -> HEVC QP (piecewise-linear between calibrated levels, clamped at the ends)."""
    levels, qps = _entry(codec)
    return float(np.interp(float(level), levels, qps))


def from_hevc_qp(codec: str, qp: float) -> float:
    """HEVC QP -> native level (inverse of `to_hevc_qp`; the mapping is monotone)."""
    levels, qps = _entry(codec)
    order = np.argsort(qps, kind="stable")
    return float(np.interp(float(qp), qps[order], levels[order]))


def qp_for_bpp(bpp: float, hevc_qps: np.ndarray, hevc_bpp: np.ndarray) -> float:
    """HEVC QP whose (log-interpolated) mean bpp equals `bpp`, clamped to the measured QP range."""
    log_b = np.log(np.asarray(hevc_bpp, dtype=np.float64))
    order = np.argsort(log_b)
    return float(np.interp(math.log(bpp), log_b[order], np.asarray(hevc_qps, dtype=np.float64)[order]))


def build_mapping(levels: list[float], mean_bpp: list[float], hevc_qps: list[float], hevc_bpp: list[float]) -> dict:
    """One codec's table entry: its levels, their mean bpp and the HEVC QP of equal mean bpp.

    The QPs are made monotone in the level (running max/min) so the mapping stays invertible even where a
    codec's bpp is flat (noise at the extremes of its range).
    """
    qps = np.array([qp_for_bpp(b, np.asarray(hevc_qps), np.asarray(hevc_bpp)) for b in mean_bpp])
    bpp = np.asarray(mean_bpp)
    if len(qps) > 1 and bpp[-1] > bpp[0]:  # quality knob: more bits with the level, QP falls
        qps = np.minimum.accumulate(qps)
    elif len(qps) > 1:
        qps = np.maximum.accumulate(qps)
    return {
        "levels": [float(v) for v in levels],
        "mean_bpp": [round(float(b), 5) for b in mean_bpp],
        "hevc_qp": [round(float(q), 3) for q in qps],
    }
