"""Measure the shared HEVC-QP axis: mean bpp of every codec level on a photo set, matched to HEVC's curve.

Used by `prepcodec calibrate`; the result is the `qp_axis.json` the package ships.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prepcodec.atomic import write_text
from prepcodec.codecs.pool import CodecPool
from prepcodec.codecs.qp_axis import build_mapping
from prepcodec.codecs.registry import get_codec
from prepcodec.errors import BitstreamError


def level_grid(codec: str, step: int) -> list[int]:
    """Every `step`-th native level, always including both ends of the range."""
    spec = get_codec(codec).level_spec
    lo, hi = int(spec.min), int(spec.max)
    grid = list(range(lo, hi + 1, max(1, step)))
    if grid[-1] != hi:
        grid.append(hi)
    return grid


def centre_crop(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop to at most width x height (a portrait image is cropped to height x width)."""
    h, w = rgb.shape[:2]
    if h > w:
        width, height = height, width
    ch, cw = min(h, height), min(w, width)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])


def mean_bpp(pool: CodecPool, codec: str, images: Sequence[np.ndarray], level: float, preset: str) -> float:
    """Mean over images of the real bpp at one level."""
    results = pool.roundtrip(codec, images, level, preset)
    return float(np.mean([r.bpp for r in results]))


def calibrate(
    images: Sequence[np.ndarray],
    codecs: Sequence[str],
    pool: CodecPool,
    step: int = 3,
    hevc_step: int = 1,
    preset: str = "eval",
    on_level: Callable[[str, float, float], None] | None = None,
) -> dict[str, dict]:
    """Per codec: its level grid, mean bpp per level and the HEVC QP of equal mean bpp.

    HEVC is the axis, measured at every `hevc_step`-th QP (default: every QP); `on_level(codec, level, bpp)`
    reports progress (bpp is
    NaN for a level the encoder cannot code on some image: it is left out of the table and listed under
    `skipped_levels`; the mapping clamps at the measured ends).
    """
    skipped: dict[str, list[int]] = {}

    def measure(codec: str, grid: list[int]) -> tuple[list[int], list[float]]:
        levels, bpps = [], []
        for level in grid:
            try:
                b = mean_bpp(pool, codec, images, level, preset)
            except BitstreamError:
                skipped.setdefault(codec, []).append(level)
                b = float("nan")
            else:
                levels.append(level)
                bpps.append(b)
            if on_level:
                on_level(codec, level, b)
        return levels, bpps

    hevc_levels, hevc_bpp = measure("hevc", level_grid("hevc", hevc_step))
    table = {"hevc": {"levels": [float(q) for q in hevc_levels], "mean_bpp": [round(b, 5) for b in hevc_bpp],
                      "hevc_qp": [float(q) for q in hevc_levels]}}  # fmt: skip
    for codec in codecs:
        if codec == "hevc":
            continue
        levels, bpps = measure(codec, level_grid(codec, step))
        table[codec] = build_mapping(levels, bpps, hevc_levels, hevc_bpp)
        if codec in skipped:
            table[codec]["skipped_levels"] = skipped[codec]
    return table


def machine_description() -> str:
    """CPU model and core count, for the provenance of measured numbers."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def write_table(path: Path, codecs: dict[str, dict], meta: dict) -> None:
    """Write the QP-axis table atomically (temp file + os.replace), with provenance."""
    doc = {
        "description": "native level -> HEVC QP of equal mean bpp (eval preset); written by `prepcodec calibrate`",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_description(),
        **meta,
        "codecs": codecs,
    }
    write_text(path, json.dumps(doc, indent=1) + "\n")
