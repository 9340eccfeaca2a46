"""Codec throughput: images/s of a full round-trip (encode + decode) with 1 vs 2 pool workers.

Writes the "Codec throughput" section of docs/benchmarks.md (other sections are kept). Not a timed test:
numbers depend on the machine and its load, so the section records both.

    nice .venv/bin/python scripts/benchmark_codecs.py --images 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from prepcodec.codecs import CodecPool, get_codec, list_codecs
from prepcodec.codecs.calibrate import machine_description
from prepcodec.data.samples import sample_paths

SECTION = "## Codec throughput"
SIZES = {"512x512": ("astronaut", None), "768x512": ("kodim23", None)}


def test_images(size: str, n: int) -> list[np.ndarray]:
    """n distinct real crops of a bundled photo at `size` (shifted by a few pixels so no two are identical)."""
    w, h = (int(v) for v in size.split("x"))
    paths = {p.stem: p for p in sample_paths()}
    rgb = np.asarray(Image.open(paths[SIZES[size][0]]).convert("RGB"))
    rgb = np.pad(rgb, ((0, max(0, h + n - rgb.shape[0])), (0, max(0, w + n - rgb.shape[1])), (0, 0)), mode="reflect")
    return [np.ascontiguousarray(rgb[i : i + h, i : i + w]) for i in range(n)]


# Mid-rate levels (fixed, so the benchmark does not depend on the calibration table).
MID_LEVELS = {"hevc": 34, "vvc": 34, "jpeg": 50, "webp": 50, "avif": 50, "jxl": 50}


def mid_level(codec: str) -> int:
    return MID_LEVELS[codec]


def measure(pool: CodecPool, codec: str, images: list[np.ndarray], preset: str) -> float:
    """images/s of one batch round-trip (after a tiny warm-up batch so worker/back-end start-up is not counted)."""
    level = mid_level(codec)
    pool.roundtrip(codec, [np.ascontiguousarray(im[:64, :64]) for im in images[:2]], level, preset)
    start = time.perf_counter()
    pool.roundtrip(codec, images, level, preset)
    return len(images) / (time.perf_counter() - start)


def render(rows: list[tuple], args: argparse.Namespace) -> str:
    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"Round-trip (encode + decode) throughput in images/s, batch of {args.images} images per cell, one run per "
        "cell, at a fixed mid-rate level per codec (column level). Workers 1 = in-process, "
        "2 = `CodecPool(2)` (spawned processes, single-threaded encoders).",
        "",
        f"- command: `nice .venv/bin/python scripts/benchmark_codecs.py --images {args.images}`",
        f"- machine: {machine_description()} (`nproc` = {os.cpu_count()}); shared with other jobs, load average "
        f"{load[0]:.1f} at the end of the run, so treat the numbers as rough",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        *(
            [
                "- the load average exceeded the core count: a second worker could not get a core of its own, so "
                "the 2-worker column measures contention rather than scaling; rerun on an idle machine"
            ]
            if load[0] > (os.cpu_count() or 1)
            else []
        ),
        "",
        "| codec | preset | size | level | 1 worker img/s | 2 workers img/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for codec, preset, size, level, one, two in rows:
        lines.append(f"| {codec} | {preset} | {size} | {level} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str, heading: str = SECTION) -> None:
    """Replace (or append) the section starting with `heading` in docs/benchmarks.md atomically."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=doc.parent, prefix=".benchmarks.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, doc)


# The reference points: skimage astronaut 512x512, bpp incl. headers / RGB PSNR of real bpgenc-equivalent x265.
HEVC_REFERENCE = {28: (0.765, 35.94), 34: (0.423, 33.36), 37: (0.308, 31.74), 41: (0.205, 29.89)}


def print_reference() -> None:
    """Our HEVC codec against the reference points (Markdown table on stdout)."""
    codec = get_codec("hevc")
    rgb = np.asarray(Image.open(next(p for p in sample_paths() if p.stem == "astronaut")).convert("RGB"))
    print("| QP | bpp | ref bpp | diff | RGB PSNR dB | ref dB | diff dB |")
    print("|---|---|---|---|---|---|---|")
    for qp, (ref_bpp, ref_psnr) in HEVC_REFERENCE.items():
        data = codec.encode(rgb, qp)
        mse = np.mean((codec.decode(data).astype(np.float64) - rgb) ** 2)
        bpp, psnr = 8 * len(data) / rgb.shape[0] / rgb.shape[1], 10 * np.log10(255**2 / mse)
        print(
            f"| {qp} | {bpp:.4f} | {ref_bpp} | {100 * (bpp / ref_bpp - 1):+.2f} % | {psnr:.2f} | {ref_psnr} "
            f"| {psnr - ref_psnr:+.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--codecs", default=",".join(list_codecs()))
    parser.add_argument("--reference", action="store_true", help="only print the HEVC reference-point table")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if args.reference:
        print_reference()
        return 0
    rows = []
    with CodecPool(0) as single, CodecPool(2) as double:
        for codec in args.codecs.split(","):
            for preset in ("eval", "fast"):
                for size in SIZES:
                    images = test_images(size, args.images)
                    one = measure(single, codec, images, preset)
                    two = measure(double, codec, images, preset)
                    rows.append((codec, preset, size, mid_level(codec), one, two))
                    print(f"{codec:5s} {preset:4s} {size}: {one:7.2f} / {two:7.2f} img/s", file=sys.stderr)
    write_section(args.out, render(rows, args))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
