"""Run-directory files: per-image records, per-level summaries, manifest (JSON + CSV, written atomically).

Layout of a run directory:
  manifest.json   command, versions, machine, date, sweep parameters, timing
  records.json    one ImageRecord per (image, level)          records.csv  the same, flattened
  summary.json    one LevelSummary per level                  summary.csv  the same
Other tools (`prepcodec compare`, reports) read only these files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prepcodec.atomic import write_text
from prepcodec.errors import InputError

TASK_METRICS = ("top1", "agreement", "map", "map50", "pose_ap", "miou")
FIDELITY_METRICS = ("psnr", "ms_ssim", "fsim", "lpips")
METRIC_NAMES = TASK_METRICS + FIDELITY_METRICS


@dataclass
class ImageRecord:
    """One image at one level: real bytes, fidelity, and what the task saw (its own and the teacher's output)."""

    image: str  # data set item id
    file: str  # file name (matches COCO ground truth)
    label: int | None
    level: float
    nbytes: int
    height: int
    width: int
    bpp: float
    psnr: float  # decoded vs the uncompressed, un-preprocessed image
    ms_ssim: float
    pred: dict[str, Any]  # task-kind specific summary (see eval.scoring.prediction_summary); {} for --task none
    teacher: dict[str, Any]  # the same model on the uncompressed image
    fsim: float | None = None  # only when the sweep asked for it (--fidelity fsim)
    lpips: float | None = None  # only with --fidelity lpips (a distance: lower is better)


@dataclass
class LevelSummary:
    """Means over images at one level; metrics a task kind does not have are None."""

    level: float
    n: int
    bpp: float
    psnr: float
    ms_ssim: float
    top1: float | None = None
    agreement: float | None = None
    map: float | None = None
    map50: float | None = None
    pose_ap: float | None = None
    miou: float | None = None  # segmentation: two-class mIoU against the teacher's mask
    fsim: float | None = None
    lpips: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)




def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _flat_record(rec: ImageRecord) -> dict[str, Any]:
    row = {f.name: getattr(rec, f.name) for f in fields(rec) if f.name not in ("pred", "teacher")}
    for prefix, summary in (("pred", rec.pred), ("teacher", rec.teacher)):
        if "top1" in summary:
            row[f"{prefix}_top1"] = summary["top1"]
        if "boxes" in summary:
            row[f"{prefix}_boxes"] = len(summary["boxes"])
        if "fg" in summary:
            row[f"{prefix}_fg"] = round(summary["fg"], 4)
        if "i_fg" in summary:
            row[f"{prefix}_iou_fg"] = round(summary["i_fg"] / summary["u_fg"], 4) if summary["u_fg"] else 1.0
        if "keypoints" in summary:
            row[f"{prefix}_kp_score"] = round(sum(k[2] for k in summary["keypoints"]) / 17, 4)
    return row


def write_run(out: Path, manifest: dict[str, Any], records: list[ImageRecord], summaries: list[LevelSummary]) -> None:
    """Write all files of a run directory (manifest last: its presence marks a complete run)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # until the new one is written, the folder is incomplete
    write_text(out / "records.json", json.dumps([asdict(r) for r in records], indent=0) + "\n")
    write_text(out / "records.csv", _csv_text([_flat_record(r) for r in records]))
    summary_rows = [asdict(s) for s in summaries]
    write_text(out / "summary.json", json.dumps(summary_rows, indent=1) + "\n")
    flat = [{k: v for k, v in row.items() if k != "extra"} for row in summary_rows]
    write_text(out / "summary.csv", _csv_text(flat))
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")


@dataclass
class Run:
    """A run directory read back."""

    path: Path
    manifest: dict[str, Any]
    records: list[ImageRecord]
    summaries: list[LevelSummary]

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `write_run`; InputError naming what is missing."""
    root = Path(path)
    for name in ("manifest.json", "records.json", "summary.json"):
        if not (root / name).is_file():
            raise InputError(f"{root} is not a complete run directory ({name} missing); run `prepcodec eval` first")
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        records = [ImageRecord(**r) for r in json.loads((root / "records.json").read_text())]
        summaries = [LevelSummary(**s) for s in json.loads((root / "summary.json").read_text())]
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"{root}: unreadable run files ({exc})") from None
    return Run(root, manifest, records, summaries)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_info() -> dict[str, Any]:
    """Versions and machine description for a run manifest."""
    import numpy
    import torch

    import prepcodec

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["prepcodec", *sys.argv[1:]]) if sys.argv else "",
        "versions": {
            "prepcodec": prepcodec.__version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
