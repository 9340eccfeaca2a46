"""Class-evidence amplification on labelled training images: does it lift the rate–accuracy curve, and for whom?

Every blur-based preprocessor so far (the roi:* baselines, the ROI networks G and J) moved along one rate–accuracy
curve. This probe measures `--pre SPEC+amp:LEVELS:SIGMA:STEPS` (`npp.evidence`: the classifier's own top-1 evidence
pushed along its low-passed gradient) against plain hevc and against SPEC, on labelled *training* images
(`imagenet-train`, never an evaluation split), real x265 at the eval preset, top-1 against the labels — scored by the
classifier that made the change (Lite0) and by others it never saw (transfer):

    .venv/bin/python scripts/probe_evidence.py --start 0 --images 100 \\
        --pre none,roi:graded:2,none+amp:16:4:5,roi:graded:2+amp:16:4:5 --score effnet-lite0,effnet-lite2

BD-rates are point estimates (cubic, monotone envelope) without intervals: on 100 images they move by ±15 points,
so only large paired differences on the same images are read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from prepcodec.codecs.pool import CodecPool
from prepcodec.data.datasets import get_dataset
from prepcodec.eval.compare import bd_pair
from prepcodec.npp.preprocessors import parse_pre
from prepcodec.tasks.registry import create_task

QPS = (22, 28, 34, 40, 44)
BATCH = 20


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(a)).permute(2, 0, 1).float() / 255 for a in images])


def record_batch(pres, scorers, pool: CodecPool, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per spec and QP: real bpp, and per scoring model whether its top-1 on the real decode is the label."""
    out: dict = {}
    for pre in pres:
        entry = out.setdefault(pre.spec, {})
        fixed = None  # a preprocessor that ignores the QP runs once per batch, not once per QP
        for q in QPS:
            with torch.no_grad():
                if pre.qp_aware:
                    y = pre.tensor(x, float(q))
                else:
                    fixed = pre.tensor(x) if fixed is None else fixed
                    y = fixed
            y = torch.round(y.clamp(0, 1) * 255) / 255  # what the encoder is handed
            decoded, bits = pool.roundtrip_tensor("hevc", y, q, preset="eval")
            row = entry.setdefault(str(q), {"bpp": []})
            row["bpp"] += (bits / (y.shape[-2] * y.shape[-1])).tolist()
            for name, task in scorers.items():
                with torch.no_grad():
                    row.setdefault(name, []).extend((task.logits(decoded).argmax(dim=1) == labels).tolist())
    return out


def merge(records: dict, batch: dict) -> None:
    for spec, entry in batch.items():
        for q, row in entry.items():
            dst = records.setdefault(spec, {}).setdefault(q, {})
            for key, values in row.items():
                dst.setdefault(key, []).extend(values)


def bd(anchor: tuple[list, list], test: tuple[list, list]) -> float | None:
    """Cubic BD-rate on the monotone envelopes (`eval.compare.bd_pair`), None where the curves do not overlap."""
    try:
        return round(bd_pair(*anchor, *test)[0], 1)
    except ValueError:
        return None


def analyse(records: dict, specs: list[str], scorers: list[str]) -> list[dict]:
    """Per scoring model and spec: the curve, BD-rate vs the first spec and vs each spec's `+amp`-less inner spec."""
    rows = []
    for name in scorers:
        def curve(spec: str, name: str = name) -> tuple[list[float], list[float]]:
            e = records[spec]
            return [float(np.mean(e[str(q)]["bpp"])) for q in QPS], [float(np.mean(e[str(q)][name])) for q in QPS]

        anchor = curve(specs[0])
        for spec in specs:
            inner = spec.rpartition("+amp")[0]
            c = curve(spec)
            rows.append({"score": name, "pre": spec, "bpp": [round(v, 3) for v in c[0]],
                         "top1": [round(100 * v, 1) for v in c[1]], f"bd_vs_{specs[0]}": bd(anchor, c),
                         "bd_vs_without_amp": bd(curve(inner), c) if inner in records else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0, help="first imagenet-train image")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--pre", default="none,roi:graded:2,none+amp:16:4:5,roi:graded:2+amp:16:4:5",
                        help="comma-separated --pre specs; the first is the anchor")
    parser.add_argument("--score", default="effnet-lite0,effnet-lite2", help="classifiers that score the decodes; "
                        "the first is also the one the specs attend to and amplify for")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/probe-evidence.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scorers = {name: create_task(name) for name in args.score.split(",")}
    task = next(iter(scorers.values()))
    pres = [parse_pre(spec, task) for spec in args.pre.split(",")]
    specs = [p.spec for p in pres]
    data = get_dataset("imagenet-train")
    items = data.items[args.start : args.start + args.images]
    records = json.loads(args.out.read_text()) if args.out.exists() else {}
    if records and (records.get("start"), records.get("specs"), records.get("score")) != (
            args.start, specs, list(scorers)):
        raise SystemExit(f"{args.out} holds other records (start, specs or scorers differ); pass another --out")
    records.update(start=args.start, specs=specs, score=list(scorers))
    done = records.get("done", 0)
    with CodecPool(args.workers) as pool:
        for b in range(done, len(items), BATCH):
            chunk = items[b : b + BATCH]
            labels = torch.tensor([it.label for it in chunk])
            batch = record_batch(pres, scorers, pool, _tensor([data.load(it) for it in chunk]), labels)
            merge(records.setdefault("records", {}), batch)
            records["done"] = b + len(chunk)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(records))
            tmp.replace(args.out)
            print(f"images {records['done']}/{len(items)}", flush=True)
    for row in analyse(records["records"], specs, list(scorers)):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
