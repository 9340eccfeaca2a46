"""`prepcodec demo`: the product's main job on the bundled photos, and (`--sweep`) the codec benchmark.

Default: every shipped NPP before hevc — plain vs each network at the same QP and at equal bits, with the
classifier's top-5 and the detector's boxes on every decoded picture — as a static HTML report and a terminal
summary (`eval.showcase`, `eval.html_report`). `--sweep` (or `--codecs`): every available codec swept over its
useful level range, a bpp / PSNR / MS-SSIM table, RD plots and CSV/JSON. Both fit in a few minutes on 2 cores.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import typer

from prepcodec.commands.tables import table_console
from prepcodec.errors import InputError

# The useful part of each codec's native range for photos (roughly 0.1-3 bpp), low quality first.
DEMO_RANGES: dict[str, tuple[float, float]] = {
    "hevc": (42, 22),
    "vvc": (42, 22),
    "jpeg": (10, 90),
    "webp": (10, 90),
    "avif": (20, 85),
    "jxl": (20, 90),
}
DEFAULT_IMAGES = 3  # the three smallest bundled photos keep the vvc eval preset within a few minutes


@dataclass
class DemoRow:
    """Means over the demo photos of one codec at one level."""

    codec: str
    knob: str
    level: float
    n_images: int
    bpp: float
    psnr: float
    psnr_y: float
    ms_ssim: float


@dataclass
class DemoResult:
    images: list[str]
    preset: str
    workers: int
    rows: list[DemoRow] = field(default_factory=list)
    per_image: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def demo_levels(codec: str, n: int) -> list[float]:
    """`n` levels evenly spread over the codec's useful range (integers for integer knobs, low quality first)."""
    from prepcodec.codecs import get_codec

    c = get_codec(codec)
    spec = c.level_spec
    lo, hi = DEMO_RANGES.get(c.name, (spec.min, spec.max) if spec.higher_is_better else (spec.max, spec.min))
    levels = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    out: list[float] = []
    for v in levels:
        v = float(np.clip(v, spec.min, spec.max))
        v = float(round(v)) if spec.integer else round(v, 3)
        if v not in out:
            out.append(v)
    return out


def _parse_codecs(text: str | None) -> list[str]:
    from prepcodec.codecs import get_codec, list_codecs

    if not text:
        return list_codecs()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError("--codecs lists no codec")
    return [get_codec(n).name for n in names]  # InputError for unknown names


def run_demo(
    codecs: list[str], n_levels: int, n_images: int, preset: str, workers: int | None, progress: bool = True
) -> DemoResult:
    """Sweep each available codec over `n_levels` levels on the first `n_images` bundled photos."""
    from tqdm import tqdm

    from prepcodec.codecs import CodecPool, get_codec
    from prepcodec.data.images import load_image
    from prepcodec.data.samples import sample_paths
    from prepcodec.eval import metrics

    if not 1 <= n_levels <= 20:
        raise InputError(f"--levels-per-codec must be between 1 and 20, got {n_levels}")
    paths = sample_paths()
    if not 1 <= n_images <= len(paths):
        raise InputError(f"--images must be between 1 and {len(paths)} (the bundled photos), got {n_images}")
    paths = paths[:n_images]
    images = [load_image(p) for p in paths]
    t0 = time.perf_counter()
    result = DemoResult(images=[p.name for p in paths], preset=preset, workers=0)
    plan: list[tuple[str, float]] = []
    for name in codecs:
        ok, why = get_codec(name).availability()
        if ok:
            plan += [(name, lv) for lv in demo_levels(name, n_levels)]
        else:
            result.skipped[name] = why
    jobs = [(name, lv, i) for name, lv in plan for i in range(len(images))]
    with CodecPool(workers) as pool:
        result.workers = pool.workers
        chunk = max(2, 2 * pool.workers)  # a few jobs per call: progress updates without idling workers much
        bar = tqdm(total=len(jobs), desc="demo", unit="img", disable=not progress)
        per_job: list[dict] = []
        try:
            for start in range(0, len(jobs), chunk):
                part = jobs[start : start + chunk]
                for name in dict.fromkeys(n for n, _, _ in part):  # one pool call per codec in this chunk
                    mine = [j for j in part if j[0] == name]
                    trips = pool.roundtrip(name, [images[i] for _, _, i in mine], [lv for _, lv, _ in mine], preset)
                    for (_, lv, i), rt in zip(mine, trips, strict=True):
                        ref = images[i]
                        per_job.append({
                            "codec": name, "level": lv, "image": paths[i].name, "bytes": len(rt.data),
                            "bpp": metrics.bpp(len(rt.data), *ref.shape[:2]),
                            "psnr": metrics.psnr(ref, rt.decoded), "psnr_y": metrics.psnr_y(ref, rt.decoded),
                            "ms_ssim": metrics.ms_ssim(ref, rt.decoded),
                        })
                    bar.update(len(mine))
        finally:
            bar.close()
    result.per_image = per_job
    for name, lv in plan:
        rows = [r for r in per_job if r["codec"] == name and r["level"] == lv]
        result.rows.append(DemoRow(
            codec=name, knob=get_codec(name).level_spec.knob, level=lv, n_images=len(rows),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("bpp", "psnr", "psnr_y", "ms_ssim")},
        ))
    result.wall_s = time.perf_counter() - t0
    return result


def write_demo(result: DemoResult, out: Path) -> list[Path]:
    """results.json, results.csv, rd.png (PSNR vs bpp) and rd_msssim.png under `out`, each written atomically."""
    from prepcodec.atomic import write_text
    from prepcodec.eval.plots import rd_plot

    out = Path(out)
    written = []
    doc = asdict(result)
    write_text(out / "results.json", json.dumps(doc, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(DemoRow)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in result.rows)
    write_text(out / "results.csv", buf.getvalue())
    written += [out / "results.json", out / "results.csv"]
    curves: dict[str, tuple[list[float], list[float]]] = {}
    ssim_curves: dict[str, tuple[list[float], list[float]]] = {}
    for r in result.rows:
        curves.setdefault(r.codec, ([], []))
        ssim_curves.setdefault(r.codec, ([], []))
        curves[r.codec][0].append(r.bpp)
        curves[r.codec][1].append(r.psnr)
        ssim_curves[r.codec][0].append(r.bpp)
        ssim_curves[r.codec][1].append(r.ms_ssim)
    if curves:
        imgs = ", ".join(result.images)
        written.append(rd_plot(curves, "bits per pixel (real bytes)", "RGB PSNR (dB)", out / "rd.png",
                               title=f"{result.preset} preset on {imgs}", logx=True))
        written.append(rd_plot(ssim_curves, "bits per pixel (real bytes)", "MS-SSIM", out / "rd_msssim.png",
                               title=f"{result.preset} preset on {imgs}", logx=True))
    return written


def _print_table(result: DemoResult) -> None:
    from rich.table import Table

    table = Table(title=f"prepcodec demo: {len(result.images)} bundled photos, {result.preset} preset")
    for col in ("codec", "level", "mean bpp", "PSNR (dB)", "PSNR-Y (dB)", "MS-SSIM"):
        table.add_column(col, justify="left" if col == "codec" else "right")
    last = None
    for r in result.rows:
        table.add_row(r.codec if r.codec != last else "", f"{r.knob} {r.level:g}", f"{r.bpp:.3f}", f"{r.psnr:.2f}",
                      f"{r.psnr_y:.2f}", f"{r.ms_ssim:.4f}", end_section=False)
        last = r.codec
    table_console().print(table)


SHOWCASE_PHOTOS = ("astronaut", "chelsea", "coffee")
SHOWCASE_QP = 37


def _networks(npp: str | None) -> list[str]:
    """The networks the main job shows: those named (comma-separated), or every shipped one (cls first)."""
    from prepcodec.npp.zoo import list_npps

    if npp is None:
        shipped = list_npps()
        names = [n for n in ("cls", "det") if n in shipped] + [n for n in shipped if n not in ("cls", "det")]
        if not names:
            raise InputError("no NPP is shipped with this installation; give one with --npp PATH.pt")
        return names
    names = [n.strip().removeprefix("npp:") for n in npp.split(",") if n.strip()]
    if not names:
        raise InputError("--npp names no network")
    return names


def _showcase(out: Path, npp: str | None, qp: int, photos: int, fast: bool, progress: bool) -> None:
    """The main job: see the module docstring."""
    from tqdm import tqdm

    from prepcodec.codecs import get_codec
    from prepcodec.commands.outputs import check_output_dir
    from prepcodec.data.images import load_image
    from prepcodec.data.samples import sample_paths
    from prepcodec.eval.html_report import write_report
    from prepcodec.eval.showcase import ShowcasePhoto, annotate, code_photo
    from prepcodec.npp.preprocessors import npp_preprocessor
    from prepcodec.tasks.registry import create_task

    if not 1 <= photos <= len(sample_paths()):
        raise InputError(f"--images must lie in [1, {len(sample_paths())}], got {photos}")
    check_output_dir(out)
    pres = {}
    for name in _networks(npp):
        pre = npp_preprocessor(name)
        pres[pre.spec.split("@", 1)[0]] = pre
    codec = get_codec("hevc")
    classifier, detector = create_task("effnet-lite0"), create_task("centernet")
    by_stem = {p.stem: p for p in sample_paths()}
    names = [n for n in SHOWCASE_PHOTOS if n in by_stem] + [n for n in by_stem if n not in SHOWCASE_PHOTOS]
    t0 = time.perf_counter()
    shown = []
    specs = ", ".join(p.spec for p in pres.values())
    for name in tqdm(names[:photos], desc=f"demo: plain vs {specs}", unit="photo", disable=not progress):
        rgb = load_image(by_stem[name])
        photo = ShowcasePhoto(name, rgb, code_photo(codec, rgb, qp, pres, "fast" if fast else "eval"))
        annotate(photo, classifier, detector)
        shown.append(photo)
    table_console().print(_showcase_table(shown, qp, specs))
    summary = (f"hevc at QP {qp} ({'fast' if fast else 'eval'} preset) on {len(shown)} bundled photos; networks "
               f"{specs}; boxes: CenterNet (score >= 0.3); labels: EfficientNet-Lite0 top-5. Every number is "
               f"the length of a real bitstream that a stock HEVC decoder reads.")
    path = write_report(shown, out, "prepcodec demo: plain hevc vs the preprocessing network", summary)
    typer.echo(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")


def _showcase_table(shown: list, qp: int, specs: str):
    """One row per photo and network: bits at the same QP, what top-1 and the boxes became, the QP at equal bits."""
    from rich.table import Table

    table = Table(title=f"hevc QP {qp}: plain vs {specs} (real bytes; top-1 of EfficientNet-Lite0, CenterNet boxes)")
    for col in ("photo", "network", "plain bpp", "NPP bpp (same QP)", "saved", "top-1 plain", "top-1 NPP",
                "boxes plain/NPP", "NPP QP at equal bits", "top-1 there"):
        table.add_column(col)
    for p in shown:
        plain, rest = p.variants[0], p.variants[1:]
        for same, equal in zip(rest[::2], rest[1::2], strict=True):
            table.add_row(p.name, same.network, f"{plain.bpp:.3f}", f"{same.bpp:.3f}",
                          f"{100 * (1 - same.nbytes / plain.nbytes):.1f} %", plain.top5[0]["name"],
                          same.top5[0]["name"], f"{plain.n_boxes}/{same.n_boxes}", str(equal.level),
                          equal.top5[0]["name"])
    return table


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="folder for the report (index.html + img/), or for "
                             "the sweep's rd.png, rd_msssim.png, results.csv/json"),
    sweep: bool = typer.Option(False, "--sweep", help="the codec benchmark instead of the main job"),
    npp: str = typer.Option(None, "--npp", help="networks for the main job, comma-separated: shipped names or "
                            "exported .pt files (default: every shipped network)"),
    qp: int = typer.Option(SHOWCASE_QP, "--qp", help="hevc QP of the main job"),
    codecs: str | None = typer.Option(None, "--codecs", help="sweep these codecs, comma-separated (implies --sweep)"),
    levels_per_codec: int = typer.Option(5, "--levels-per-codec", help="levels spread over each codec's range"),
    images: int = typer.Option(DEFAULT_IMAGES, "--images", help="use the first N bundled photos (1-5)"),
    fast: bool = typer.Option(False, "--fast", help="the codecs' fast (training) preset instead of eval"),
    workers: int = typer.Option(0, "--workers", help="codec processes (0 = one per CPU core)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """The main job on the bundled photos (plain vs NPP, HTML report); --sweep: the codec benchmark."""
    if workers < 0:
        raise InputError("--workers must be >= 0")
    if not (sweep or codecs):
        _showcase(out, npp, qp, min(images, 5), fast, progress=not quiet)
        return
    names = _parse_codecs(codecs)
    result = run_demo(names, levels_per_codec, images, "fast" if fast else "eval", workers or None,
                      progress=not quiet)
    for name, why in result.skipped.items():
        typer.echo(f"note: skipped {name}: {why}", err=True)
    if not result.rows:
        raise InputError("none of the requested codecs is available: " + "; ".join(result.skipped.values()))
    _print_table(result)
    written = write_demo(result, out)
    typer.echo(f"wrote {', '.join(str(p) for p in written)} ({result.wall_s:.1f} s, {result.workers} workers)")


def register(app: typer.Typer) -> None:
    """Add `prepcodec demo` to the root app."""
    app.command("demo")(demo_command)
