"""Human-readable outputs of a comparison and of a sweep: Markdown tables and the RD plot PNG."""

from __future__ import annotations

import json
from pathlib import Path

from prepcodec.atomic import write_text
from prepcodec.eval.compare import UNSTABLE_CUBIC_RATIO, Comparison
from prepcodec.eval.records import TASK_METRICS, LevelSummary

METRIC_LABELS = {
    "top1": "top-1 accuracy (%)", "agreement": "top-1 agreement with teacher (%)", "map": "mAP@[.5:.95] (%)",
    "map50": "mAP@.5 (%)", "pose_ap": "keypoint AP (OKS) (%)", "miou": "mIoU vs teacher (%)",
    "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "fsim": "FSIMc", "lpips": "LPIPS (Alex)",
}
EXTRA_COLUMNS = {"fsim": "FSIM", "lpips": "LPIPS"}  # optional per-level columns of summary_markdown


def display_value(metric: str, value: float) -> float:
    """Task metrics print as percent, fidelity metrics in their own units."""
    return 100 * value if metric in TASK_METRICS else value


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{v:+.2f} %"


def comparison_markdown(cmp: Comparison) -> str:
    """Markdown table: one row per run vs the anchor, both fits with their intervals, and the cubic/pchip
    disagreement flag (a cubic through a flat stretch of a curve can swing wildly where pchip cannot overshoot)."""
    lines = [
        f"BD-rate vs `{cmp.anchor}` at equal {cmp.metric} "
        "(negative = fewer bits; monotone envelope; paired bootstrap over images)",
        "",
        "| run | BD-rate (cubic) | 95 % CI | BD-rate (pchip) | 95 % CI (pchip) | images | resamples used | flag |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in cmp.rows:
        flags = ["cubic/pchip disagree by more than the CI width"] if r.disagreement else []
        if r.unstable_cubic:
            flags.append(f"cubic unstable (its CI over {UNSTABLE_CUBIC_RATIO:g}x pchip's): read pchip and the "
                         "equal-bits table")
        flag = "; ".join(flags)
        lines.append(
            f"| {r.run} | {_pct(r.bd_rate_pct)} | [{r.ci95_pct[0]:+.2f}, {r.ci95_pct[1]:+.2f}] | "
            f"{_pct(r.bd_rate_pchip_pct)} | [{r.ci95_pchip_pct[0]:+.2f}, {r.ci95_pchip_pct[1]:+.2f}] | "
            f"{r.n_images} | {r.n_boot_ok}/{r.n_boot} | {flag} |"
        )
    return "\n".join(lines) + "\n\n" + _quality_markdown(cmp)


def _quality_markdown(cmp: Comparison) -> str:
    """The companion table: the metric's average difference at equal bits (no inverse of a flat curve in it)."""
    unit = "points" if cmp.metric in TASK_METRICS else METRIC_LABELS.get(cmp.metric, cmp.metric)

    def show(v: float) -> str:
        return "n/a" if v != v else f"{display_value(cmp.metric, v):+.3f}"

    lines = [
        f"BD-{cmp.metric} vs `{cmp.anchor}` at equal bits ({unit}; monotone envelope; same resamples)",
        "",
        "| run | Δ (cubic) | 95 % CI | Δ (pchip) |",
        "|---|---:|---:|---:|",
    ]
    for r in cmp.rows:
        lo, hi = r.ci95_quality
        lines.append(f"| {r.run} | {show(r.bd_quality)} | [{show(lo)}, {show(hi)}] | {show(r.bd_quality_pchip)} |")
    return "\n".join(lines) + "\n"


def summary_markdown(summaries: list[LevelSummary]) -> str:
    """Per-level table of a sweep (only the metrics the task has)."""
    metrics = [m for m in TASK_METRICS if any(getattr(s, m) is not None for s in summaries)]
    extra = [m for m in EXTRA_COLUMNS if any(getattr(s, m) is not None for s in summaries)]
    head = ["level", "n", "bpp", "PSNR", "MS-SSIM", *(EXTRA_COLUMNS[m] for m in extra), *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for s in summaries:
        cells = [f"{s.level:g}", str(s.n), f"{s.bpp:.4f}", f"{s.psnr:.2f}", f"{s.ms_ssim:.4f}"]
        cells += [f"{getattr(s, m):.4f}" if getattr(s, m) is not None else "-" for m in extra]
        cells += [f"{100 * getattr(s, m):.2f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rd_plot(cmp: Comparison, path: Path) -> None:
    """bpp vs metric, one curve per run labelled with its BD-rate (the anchor marked), as PNG."""
    from prepcodec.eval.plots import rd_plot as draw

    labels = {r.run: f"{r.run} ({r.bd_rate_pct:+.1f} %)" for r in cmp.rows}
    curves = {labels.get(name, f"{name} (anchor)"): (rates, [display_value(cmp.metric, q) for q in quality])
              for name, (rates, quality) in cmp.curves.items()}
    draw(curves, "bits per pixel (real bitstreams)", METRIC_LABELS.get(cmp.metric, cmp.metric), path,
         title=f"{cmp.n_plotted} images common to all runs")


def comparison_json(cmp: Comparison) -> list[dict]:
    """Stable machine-readable form: per run {run, bd_rate_pct, bd_rate_pchip_pct, ci95_pct, ...}."""
    return [{**r.to_json(), "anchor": cmp.anchor, "metric": cmp.metric} for r in cmp.rows]


def write_comparison(cmp: Comparison, out: Path) -> list[Path]:
    """compare.md, compare.json and rd_<metric>.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "compare.md", out / "compare.json", out / f"rd_{cmp.metric}.png"
    write_text(md, comparison_markdown(cmp))
    write_text(js, json.dumps(comparison_json(cmp), indent=1) + "\n")
    rd_plot(cmp, png)
    return [md, js, png]
