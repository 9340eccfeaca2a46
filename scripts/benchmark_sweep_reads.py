"""What the evidence networks' read memo saves a sweep: preprocessing one batch at every level, with and without it.

A sweep preprocesses each chunk of images once per level. An evidence network (`npp:cls`, `npp:det`) reads the task
on the original (a Grad-CAM, the top-1 or the detections) before its blur and ascent; that read does not depend on
the level, and `model.RecentInputMemo` computes it once per batch. This times `Preprocessor.many` over the levels
with the memo on and off, alternating, in one process (ratios compare like with like), and checks the pictures are
identical. Prints a markdown table; no file is written.

    .venv/bin/python scripts/benchmark_sweep_reads.py --npp cls --images 10 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from prepcodec.data.datasets import get_dataset
from prepcodec.npp.model import ROIBlend
from prepcodec.npp.preprocessors import Preprocessor, loaded_npp_preprocessor
from prepcodec.npp.zoo import LoadedNPP, load_npp

LEVELS = (22, 25, 28, 31, 34, 37, 41, 44)


def _images(n: int) -> list[np.ndarray]:
    """The first n 256² imagenet-train images (a training split: no evaluation image is read)."""
    ds = get_dataset("imagenet-train")
    out = []
    for item in ds.items:
        im = ds.load(item)
        if im.shape[:2] == (256, 256):
            out.append(im)
        if len(out) == n:
            return out
    raise SystemExit(f"imagenet-train has fewer than {n} 256x256 images")


def _run(net: LoadedNPP, pre: Preprocessor, images: list[np.ndarray], memo: bool
         ) -> tuple[float, list[list[np.ndarray]]]:
    for module in net.model.modules():
        if isinstance(module, ROIBlend):
            module.memo = memo
    t0 = time.perf_counter()
    out = [pre.many(images, float(level), batch=len(images)) for level in LEVELS]
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npp", default="cls")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = load_npp(args.npp)
    pre, images = loaded_npp_preprocessor(net), _images(args.images)
    times: dict[bool, list[float]] = {True: [], False: []}
    reference = None
    for _ in range(args.repeats):
        for memo in (False, True):
            seconds, out = _run(net, pre, images, memo)
            times[memo].append(seconds)
            if reference is None:
                reference = out
            elif not all(np.array_equal(a, b) for la, lb in zip(reference, out, strict=True)
                         for a, b in zip(la, lb, strict=True)):
                raise SystemExit("the memo changed a picture")
    off, on = float(np.median(times[False])), float(np.median(times[True]))
    print("| network | images × levels | without the memo (s) | with it (s) | saved |")
    print("|---|---:|---:|---:|---:|")
    print(f"| npp:{args.npp} | {len(images)} × {len(LEVELS)} | {off:.1f} | {on:.1f} | {100 * (1 - on / off):.0f} % |")
    print(f"\nmedian of {args.repeats} alternating runs each; pictures identical with and without")


if __name__ == "__main__":
    main()
