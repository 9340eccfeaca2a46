"""Folder-encode throughput: the local process pool and Ray, 1 and 2 workers, side by side in one run.

Writes the "Executors" section of docs/deploy.md. The images are 256x256 crops of the bundled photos (so the
script needs no shared data), encoded by `prepcodec.export.encode_job.encode_file` — the function `prepcodec encode`
sends to its workers — through `CodecPool.map`, exactly as the command does; each configuration encodes the same
files and must produce the same bytes (checked). Ray runs a private local instance per configuration, whose
start-up is timed separately.

    .venv/bin/python scripts/benchmark_executors.py --images 48
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_codecs import write_section  # noqa: E402

from prepcodec.codecs import CodecPool  # noqa: E402
from prepcodec.codecs.calibrate import machine_description  # noqa: E402
from prepcodec.data.images import load_image, save_png  # noqa: E402
from prepcodec.data.samples import sample_paths  # noqa: E402
from prepcodec.export.encode_job import encode_file  # noqa: E402

SECTION = "## Executors"


def crops(folder: Path, n: int, side: int = 256) -> list[Path]:
    """`n` PNG crops of the bundled photos (a sliding window over each), written to `folder`."""
    photos = [load_image(p) for p in sample_paths()]
    out = []
    for i in range(n):
        rgb = photos[i % len(photos)]
        h, w = rgb.shape[:2]
        k = i // len(photos)
        top, left = (k * 37) % (h - side + 1), (k * 53) % (w - side + 1)
        path = folder / f"crop{i:03d}.png"
        save_png(path, np.ascontiguousarray(rgb[top : top + side, left : left + side]))
        out.append(path)
    return out


def run(files: list[Path], executor: str, workers: int, qp: int, preset: str) -> tuple[float, float, list[bytes]]:
    """(start-up s, encode s, streams) for one configuration."""
    t0 = time.perf_counter()
    with CodecPool(workers, executor) as pool:
        t1 = time.perf_counter()
        jobs = [(str(f), "hevc", preset, qp, None, None, False) for f in files]
        results = list(pool.map(encode_file, jobs))
        t2 = time.perf_counter()
    if any(r.error for r in results):
        raise SystemExit(next(r.error for r in results if r.error))
    return t1 - t0, t2 - t1, [r.data for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--qp", type=int, default=37)
    parser.add_argument("--preset", default="eval")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "deploy.md")
    args = parser.parse_args(argv)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        files = crops(Path(tmp), args.images)
        for executor in ("local", "ray"):
            for workers in (1, 2):
                start, secs, streams = run(files, executor, workers, args.qp, args.preset)
                reference = reference or streams
                if streams != reference:
                    raise SystemExit(f"{executor} with {workers} workers wrote different bytes")
                rows.append((executor, workers, start, secs))
                print(f"{executor} x{workers}: start {start:.1f} s, {args.images / secs:.2f} images/s")
    when = datetime.date.today().isoformat()
    lines = [SECTION, "",
             f"Measured {when} on {machine_description()}, `scripts/benchmark_executors.py --images {args.images}` "
             f"(one run; {args.images} 256² crops of the bundled photos, hevc QP {args.qp}, {args.preset} preset, "
             "no NPP). Every configuration wrote the same bytes. `local` with 1 worker runs in the calling process.",
             "", "| executor | workers | start-up s | encode s | images/s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {e} | {w} | {s:.1f} | {t:.1f} | {args.images / t:.2f} |" for e, w, s, t in rows]
    write_section(args.out, "\n".join(lines) + "\n", SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
