"""Soak: thousands of real round trips through one CodecPool; resident memory, processes and temp files over time.

Writes the "Codec pool soak" section of docs/benchmarks.md. Each round trip encodes a real crop (the bundled photos,
shifted each time, so no two are identical) with one of the codecs and decodes it; every `--every` trips the script
records the resident memory of this process and of the pool's workers. After the pool closes it checks that no
worker is left and that the temporary folder holds no new files.

    .venv/bin/python scripts/soak_pool.py --trips 3000
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_codecs import write_section  # noqa: E402

from prepcodec.codecs import CodecPool  # noqa: E402
from prepcodec.codecs.calibrate import machine_description  # noqa: E402
from prepcodec.data.samples import sample_paths  # noqa: E402

SECTION = "## Codec pool soak"
LEVELS = {"jpeg": 50, "webp": 50, "hevc": 37, "avif": 50, "jxl": 50}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def crops(side: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sample_paths()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    photos = crops(args.side)
    codecs = list(LEVELS)
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    rows, t0 = [], time.perf_counter()
    pool = CodecPool(2)
    done = 0
    while done < args.trips:
        batch = []
        for i in range(min(args.every, args.trips - done)):
            k = done + i
            img = photos[k % len(photos)]
            y, x = (k * 7) % (img.shape[0] - args.side), (k * 13) % (img.shape[1] - args.side)
            batch.append((codecs[k % len(codecs)], np.ascontiguousarray(img[y : y + args.side, x : x + args.side])))
        for codec in codecs:
            items = [im for c, im in batch if c == codec]
            if items:
                pool.roundtrip(codec, items, LEVELS[codec], "fast")
        done += len(batch)
        workers = list(pool._executor._processes) if pool._executor else []
        rows.append((done, time.perf_counter() - t0, rss_mb(os.getpid()), [rss_mb(w) for w in workers]))
        print(f"{done} trips, {rows[-1][1]:.0f} s, main {rows[-1][2]:.0f} MB, workers "
              f"{', '.join(f'{m:.0f}' for m in rows[-1][3])} MB", flush=True)
    pids = list(pool._executor._processes)
    pool.close()
    time.sleep(1)
    left = [p for p in pids if os.path.exists(f"/proc/{p}")]
    new_tmp = sorted(set(os.listdir(tempfile.gettempdir())) - tmp_before)
    first, last = rows[0], rows[-1]
    lines = [SECTION, "", f"Measured {datetime.date.today().isoformat()} on {machine_description()}, "
             f"`scripts/soak_pool.py --trips {args.trips} --every {args.every} --side {args.side}` (one run): "
             f"{args.trips} round trips of real "
             f"{args.side}² crops (jpeg, webp, hevc, avif, jxl in turn, fast preset; vvc, an external process per "
             "encode, is not in it) through one 2-worker pool.", "",
             "| trips | seconds | main process MB | worker MB |", "|---:|---:|---:|---|"]
    lines += [f"| {d} | {t:.0f} | {m:.0f} | {', '.join(f'{w:.0f}' for w in ws)} |" for d, t, m, ws in rows]
    lines += ["", f"Resident memory from the first to the last sample: main {first[2]:.0f} → {last[2]:.0f} MB, "
              f"workers {', '.join(f'{w:.0f}' for w in first[3])} → {', '.join(f'{w:.0f}' for w in last[3])} MB. "
              f"After close: {len(left)} workers left, {len(new_tmp)} new files in {tempfile.gettempdir()}."]
    write_section(args.out, "\n".join(lines) + "\n", SECTION)
    print(f"left workers {left}, new temp files {new_tmp[:5]}")
    return 0 if not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
