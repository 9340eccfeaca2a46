"""#11's generalisation tables for the shipped networks, assembled from the `compare` outputs already on disk.

Every number comes from a `prepcodec compare ... --out runs/cmp-*` whose commands are in docs/results.md
("Generalisation"); this script only reads their `compare.json` and puts one row per (network, codec / backbone /
task) in the paper's layout, so the summary cannot drift from the measurements. A row whose comparison has not
been run prints "not run" (the docs say why); no image is coded.

    .venv/bin/python scripts/generalisation_table.py            # reads runs/cmp-*/compare.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from prepcodec.eval.compare import unstable_cubic
from prepcodec.eval.records import TASK_METRICS
from prepcodec.eval.report import display_value


@dataclass(frozen=True)
class Row:
    """One cell of a generalisation table: `run` measured against its anchor in `runs/<compare>/compare.json`."""

    table: str
    network: str
    condition: str
    compare: str
    run: str
    note: str = ""


CLS, DET = "`npp:cls`", "`npp:det`"
HEADING = "BD-rate vs the plain codec at equal accuracy or quality; 95 % paired-bootstrap intervals"
ROWS = [
    Row("codecs", CLS, "hevc (trained through it), Lite0 top-1, 500", "cmp-in500-npp-cls-fit-top1",
        "in500-lite0-hevc-npp-cls-fit"),
    Row("codecs", CLS, "jpeg, Lite0 top-1, 500", "cmp-in500-jpeg-npp-cls-fit-top1", "in500-lite0-jpeg-npp-cls-fit"),
    Row("codecs", CLS, "avif, Lite0 top-1, 500", "cmp-in500-avif-npp-cls-fit-top1", "in500-lite0-avif-npp-cls-fit"),
    Row("codecs", CLS, "vvc, Lite0 top-1, first 100", "cmp-in100-vvc-npp-cls-fit-top1",
        "in100-lite0-vvc-npp-cls-fit"),
    Row("codecs", DET, "hevc (trained through it), CenterNet mAP, 281", "cmp-coco281-npp-det-e-map",
        "coco281-centernet-hevc-npp-det-e"),
    Row("codecs", DET, "jpeg, CenterNet mAP, 281", "cmp-coco281-jpeg-npp-det-e-map",
        "coco281-centernet-jpeg-npp-det-e"),
    Row("codecs", DET, "avif, CenterNet mAP, 281", "cmp-coco281-avif-npp-det-e-map",
        "coco281-centernet-avif-npp-det-e"),
    Row("codecs", DET, "vvc, CenterNet mAP, first 50", "cmp-coco50-vvc-npp-det-e-map",
        "coco50-centernet-vvc-npp-det-e"),
    Row("backbones", CLS, "EfficientNet-Lite1, top-1, 500", "cmp-in500-lite1-npp-cls-fit-top1",
        "in500-lite1-hevc-npp-cls-fit"),
    Row("backbones", CLS, "EfficientNet-Lite2, top-1, 500", "cmp-in500-lite2-npp-cls-fit-top1",
        "in500-lite2-hevc-npp-cls-fit"),
    Row("backbones", DET, "NanoDet, mAP, 281", "cmp-coco281-nanodet-npp-det-e-map", "coco281-nanodet-hevc-npp-det-e"),
    Row("tasks", DET, "MoveNet pose, OKS AP, 89 one-person images", "cmp-cocoperson1-movenet-npp-det-e",
        "cocoperson1-movenet-hevc-npp-det-e"),
    Row("tasks", DET, "selfie segmentation, mIoU vs the teacher, 89 one-person images",
        "cmp-cocoperson1-selfie-npp-det-e", "cocoperson1-selfie-hevc-npp-det-e"),
    Row("tasks", DET, "Lite0 classification, top-1, first 200", "cmp-in200-lite0-npp-det-e-top1",
        "in200-lite0-hevc-npp-det-e"),
    Row("tasks", CLS, "CenterNet detection, mAP, 281", "cmp-coco281-npp-cls-fit-map",
        "coco281-centernet-hevc-npp-cls-fit"),
]
for _metric in ("psnr", "ms_ssim", "fsim", "lpips"):
    ROWS += [Row("human vision (Kodak-24, hevc)", CLS, _metric, f"cmp-kodak-npp-cls-fit-{_metric}",
                 "kodak-hevc-rd-npp-cls-fit", "no common range" if _metric in ("psnr", "fsim") else ""),
             Row("human vision (Kodak-24, hevc)", DET, _metric, f"cmp-kodak-npp-det-e-{_metric}",
                 "kodak-hevc-rd-npp-det-e")]


def _number(metric: str, v: float) -> str:
    """A difference at equal bits as `compare` shows it (task metrics in points, PSNR in dB), the [0, 1] fidelity
    indices to 4 places."""
    places = 2 if metric in TASK_METRICS or metric == "psnr" else 4
    return f"{display_value(metric, v):+.{places}f}"


def _interval(ci: list | None, show=lambda v: f"{v:+.1f}") -> str:
    return "–" if not ci or None in ci else f"[{show(ci[0])}, {show(ci[1])}]"


def _cells(row: Row, runs: Path) -> list[str]:
    """BD-rate cubic [CI] (marked where `compare` flags it unstable), pchip [CI], the metric's difference at equal
    bits [CI], images."""
    path = runs / row.compare / "compare.json"
    found = [r for r in json.loads(path.read_text()) if r["run"] == row.run] if path.is_file() else []
    if not found:
        return ["not run" if not row.note else row.note, "", "", ""]
    r = found[0]

    def show(v: float) -> str:
        return _number(r["metric"], v)

    quality = r.get("bd_quality")
    equal_bits = "–" if quality is None else f"{show(quality)} {_interval(r.get('ci95_quality'), show)}"
    ci, ci_pchip = r["ci95_pct"], r.get("ci95_pchip_pct")
    shaky = ci_pchip is not None and None not in ci + ci_pchip and unstable_cubic(ci, ci_pchip)
    return [f"{r['bd_rate_pct']:+.1f} % {_interval(ci)}" + (" (unstable)" if shaky else ""),
            f"{r['bd_rate_pchip_pct']:+.1f} % {_interval(ci_pchip)}", equal_bits, str(r["n_images"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="where the runs/cmp-* folders are")
    args = ap.parse_args()
    table = None
    for row in ROWS:
        if row.table != table:
            table = row.table
            print(f"\n**{table}** ({HEADING})\n")
            print("| network | condition | BD cubic [CI] | pchip [CI] | metric at equal bits [CI] | images |")
            print("|---|---|---:|---:|---:|---:|")
        print("| " + " | ".join([row.network, row.condition, *_cells(row, args.runs)]) + " |")


if __name__ == "__main__":
    main()
