"""Two exported NPP graphs timed against each other in onnxruntime, interleaved in one process.

On a shared VM the load drifts between runs of a benchmark by as much as a code change saves; alternating the two
graphs round by round (A B, B A, ...) on the same real picture puts both under the same drift, so their ratio is
what is compared. Prints per picture size the medians, the minima, their ratios (A / B: above 1 = B faster) and
the largest difference between the two outputs. The graphs come from `prepcodec export onnx`, e.g. one exported
from an older checkout:

    (cd OLD_CHECKOUT && PYTHONPATH=src ../main/.venv/bin/prepcodec export onnx --npp npp:cls-roi /tmp/a.onnx)
    .venv/bin/prepcodec export onnx --npp npp:cls-roi /tmp/b.onnx
    .venv/bin/python scripts/ab_onnx.py /tmp/a.onnx /tmp/b.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_npp import photo  # noqa: E402

SIZES = ((224, 224, 40), (512, 512, 30), (1080, 1920, 12))  # height, width, rounds


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(a: Path, b: Path, qp: float, threads: int) -> list[str]:
    """One line per size: medians and minima of A and B, interleaved, and the outputs' largest difference."""
    sessions = {"A": session(a, threads), "B": session(b, threads)}
    lines = []
    for h, w, rounds in SIZES:
        x = (photo(h, w).astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
        feeds = {k: {s.get_inputs()[0].name: x, s.get_inputs()[1].name: np.array([qp], np.float32)}
                 for k, s in sessions.items()}
        outputs = {k: s.run(None, feeds[k])[0] for k, s in sessions.items()}  # also the warm-up
        times: dict[str, list[float]] = {"A": [], "B": []}
        for r in range(rounds):
            for k in ("A", "B") if r % 2 == 0 else ("B", "A"):
                start = time.perf_counter()
                sessions[k].run(None, feeds[k])
                times[k].append(time.perf_counter() - start)
        med = {k: float(np.median(t)) for k, t in times.items()}
        low = {k: min(t) for k, t in times.items()}
        diff = float(np.abs(outputs["A"] - outputs["B"]).max())
        lines.append(f"{h}x{w} ({rounds} rounds): A median {med['A'] * 1e3:.1f} ms, min {low['A'] * 1e3:.1f} | "
                     f"B median {med['B'] * 1e3:.1f} ms, min {low['B'] * 1e3:.1f} | A/B medians "
                     f"{med['A'] / med['B']:.2f}, minima {low['A'] / low['B']:.2f} | max |A - B| {diff:.1e}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="first .onnx (e.g. the older graph)")
    parser.add_argument("b", type=Path, help="second .onnx")
    parser.add_argument("--qp", type=float, default=37.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not path.is_file():
            parser.error(f"{path}: no such file (make it with `prepcodec export onnx`)")
    print("\n".join(compare(args.a, args.b, args.qp, args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
