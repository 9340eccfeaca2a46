"""The deployment job: images in, standard bitstreams out, optionally through the NPP and to a target bpp.

Per image: load, (NPP at the level's HEVC-axis QP), real encode, and a manifest row (file, level, bytes, bpp,
and with `compare` the plain encode's bytes at the same level). With a target bpp the level is chosen per image
by bisection on real bytes: the best-quality level whose stream fits the target; when even the lowest-quality
level does not fit, that level is used and the row says the target was missed. Bisection assumes bits fall as
quality falls, which real encoders follow closely; the chosen level is always verified on its own bytes, so a
stream is never over the target unless the row says so.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from prepcodec.codecs.base import Codec
from prepcodec.errors import InputError


@dataclass
class EncodeRow:
    """One line of the manifest a batch job reads."""

    file: str
    output: str
    level: float
    bytes: int
    bpp: float
    width: int
    height: int
    plain_bytes: int | None = None
    target_bpp: float | None = None
    target_met: bool | None = None


def levels_by_quality(codec: Codec) -> list[int]:
    """Every level of the codec, from the lowest quality (fewest bits) to the highest."""
    spec = codec.level_spec
    if not spec.integer:
        raise InputError(f"{codec.name}: rate targeting needs an integer level knob")
    levels = list(range(int(spec.min), int(spec.max) + 1))
    return levels if spec.higher_is_better else levels[::-1]


def fit_to_target(encode: Callable[[int], bytes], levels: list[int], target_bits: float) -> tuple[int, bytes, bool]:
    """(level, stream, met): the highest-quality level in `levels` (ordered low -> high quality) whose stream has at
    most `target_bits`, found by bisection; (lowest level, its stream, False) when none fits."""
    cache: dict[int, bytes] = {}

    def bits(i: int) -> int:
        if i not in cache:
            cache[i] = encode(levels[i])
        return 8 * len(cache[i])

    if bits(0) > target_bits:
        return levels[0], cache[0], False
    lo, hi = 0, len(levels) - 1  # bits(lo) fits; find the last index that fits
    if bits(hi) <= target_bits:
        return levels[hi], cache[hi], True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bits(mid) <= target_bits:
            lo = mid
        else:
            hi = mid
    return levels[lo], cache[lo], True


def encode_image(codec: Codec, rgb: np.ndarray, preset: str, level: int | None, pre=None,
                 target_bpp: float | None = None, compare: bool = False) -> tuple[bytes, EncodeRow]:
    """Encode one image (see the module docstring); the row's file/output fields are left for the caller."""
    h, w = rgb.shape[:2]

    def encode(lv: int) -> bytes:
        x = rgb if pre is None else pre(rgb, codec.to_hevc_qp(lv))
        return codec.encode(x, lv, preset)

    met = None
    if target_bpp is not None:
        level, data, met = fit_to_target(encode, levels_by_quality(codec), target_bpp * h * w)
    else:
        data = encode(level)
    plain = len(codec.encode(rgb, level, preset)) if compare else None
    row = EncodeRow("", "", float(level), len(data), 8 * len(data) / (h * w), w, h, plain, target_bpp, met)
    return data, row


def write_manifest(folder: Path, rows: list[EncodeRow]) -> list[Path]:
    """`manifest.json` and `manifest.csv` in `folder`, atomically."""
    from prepcodec.atomic import write_text

    dicts = [asdict(r) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dicts[0]) if dicts else [f for f in EncodeRow.__dataclass_fields__])
    writer.writeheader()
    writer.writerows(dicts)
    return [write_text(folder / "manifest.json", json.dumps(dicts, indent=1) + "\n"),
            write_text(folder / "manifest.csv", buf.getvalue())]


@functools.cache
def npp_for_encode(spec: str):
    """The preprocessor `--npp` names: an .onnx export runs on onnxruntime (torch is never imported: the light
    edge install); a shipped name or .pt on torch. Cached: the command's own check of `--npp` and every job in the
    same process share one loaded network (pool workers load it once each)."""
    spec = spec.removeprefix("npp:")
    if spec.lower().endswith(".onnx"):
        from prepcodec.export.onnx_npp import OnnxNPP

        return OnnxNPP(spec)
    from prepcodec.npp.preprocessors import npp_preprocessor

    return npp_preprocessor(spec)


@dataclass
class FileResult:
    """What one encode job sends back: the stream, its manifest row and load notes, or the error that stopped it."""

    data: bytes | None
    row: EncodeRow | None
    notes: list[str]
    error: str | None = None


def encode_file(path: str, codec_name: str, preset: str, level: int | None, npp: str | None,
                target_bpp: float | None, compare: bool) -> FileResult:
    """Load one image and encode it (a module-level function, so any pool worker, local or Ray, can run it; the
    network is loaded once per worker). User errors come back as `error`, not as a remote traceback."""
    from prepcodec.codecs.registry import get_codec
    from prepcodec.data.images import load_image
    from prepcodec.errors import PrepcodecError

    notes: list[str] = []
    try:
        rgb = load_image(Path(path), notes)
        pre = npp_for_encode(npp) if npp else None
        data, row = encode_image(get_codec(codec_name), rgb, preset, level, pre, target_bpp, compare)
    except PrepcodecError as exc:
        return FileResult(None, None, notes, f"{path}: {exc}")
    return FileResult(data, row, notes)
