"""`prepcodec eval` (rate–accuracy sweep into a run directory) and `prepcodec compare` (BD-rate between runs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prepcodec.errors import InputError


def eval_command(
    data: str = typer.Option(
        ..., "--data", help="data set: imagenet-eval, coco-val, photos-eval, kodak, samples (published numbers); "
        "also the training splits imagenet-train, photos-train; any of them sliced, e.g. imagenet-eval[:200]"
    ),
    task: str = typer.Option(
        ..., "--task", help="task model, e.g. effnet-lite0, centernet, movenet; none = fidelity metrics only"
    ),
    codec: str = typer.Option(..., "--codec", help="hevc, vvc, jpeg, webp, avif, jxl"),
    levels: str = typer.Option(..., "--levels", help="comma-separated codec levels, e.g. 22,25,28,31"),
    out: Path = typer.Option(..., "--out", help="run directory to write (manifest, records, summary)"),
    pre: str = typer.Option(
        "none", "--pre", help="none | blur:S | bilateral:R[:S] | roi:blur:S[:CUT] | roi:flat:A | roi:graded | "
        "npp:NAME (shipped, see `prepcodec npp list`) | npp:PATH (an exported .pt); the NPP runs at each level's "
        "HEVC-axis QP"
    ),
    preset: str = typer.Option("eval", "--preset", help="codec speed preset; published numbers use eval"),
    limit: int = typer.Option(0, "--limit", help="first N images of the data set only (0 = all)"),
    workers: int = typer.Option(0, "--workers", help="codec processes (0 = one per CPU core)"),
    executor: str = typer.Option("local", "--executor", help="where round trips run: local (process pool) or ray "
                                 "(Ray tasks; the same records)"),
    address: str = typer.Option(None, "--address", help="with --executor ray: an existing cluster (auto, "
                                "ray://head:10001, ...); default a private local instance of --workers CPUs"),
    batch: int = typer.Option(16, "--batch", help="images per task batch and per cache commit"),
    device: str = typer.Option("cpu", "--device", help="torch device for the task model"),
    cache: Path = typer.Option(Path("runs/cache.sqlite"), "--cache", help="SQLite result cache"),
    fidelity: str = typer.Option(
        "", "--fidelity",
        help="extra full-reference metrics per image: fsim, lpips (comma-separated; psnr, ms_ssim always)",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Sweep levels: preprocess, real encode+decode, run the task; per-image records and per-level summaries."""
    from prepcodec.codecs.base import PRESETS
    from prepcodec.commands.outputs import check_output_dir, check_output_file
    from prepcodec.eval.report import summary_markdown
    from prepcodec.eval.sweep import SweepConfig, parse_fidelity, parse_levels, run_sweep
    from prepcodec.tasks.base import check_device

    device = check_device(device)
    check_output_dir(out)
    check_output_file(cache)
    if preset not in PRESETS:
        raise InputError(f"unknown --preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if limit < 0 or workers < 0:
        raise InputError("--limit and --workers must be >= 0")
    cfg = SweepConfig(
        data=data, task=task, codec=codec, levels=parse_levels(levels), pre=pre, preset=preset,
        limit=limit or None, workers=workers or None, batch=batch, device=device, cache=cache,
        fidelity=tuple(parse_fidelity(fidelity)),
    )
    if executor == "local" and address is None:
        result = run_sweep(cfg, out, progress=not quiet)
    else:
        from prepcodec.codecs import CodecPool

        with CodecPool(cfg.workers, executor, address) as pool:
            result = run_sweep(cfg, out, pool=pool, progress=not quiet)
    typer.echo(summary_markdown(result.summaries), nl=False)
    s = result.stats
    stored = f", {s.decoded_stored} decoded from stored bitstreams" if s.decoded_stored else ""
    typer.echo(f"{out}: {s.encoded} encoded{stored}, {s.cached} from cache, {s.wall_s:.1f} s")


def _run_group(arg: str):
    """'DIR' -> one run; '[NAME=]DIR+DIR+...' -> the best-of envelope of several runs as one curve."""
    from prepcodec.eval.compare import RunGroup
    from prepcodec.eval.records import load_run

    name, _, rest = arg.rpartition("=") if "=" in arg else ("", "", arg)
    runs = [load_run(p) for p in rest.split("+") if p]
    if not runs:
        raise InputError(f"no run directory in {arg!r}")
    return RunGroup(name or "+".join(r.name for r in runs), runs)


def compare_command(
    runs: list[str] = typer.Argument(
        ..., help="run directories, the first is the anchor; NAME=DIR1+DIR2+... makes the best-of envelope of "
        "several runs one curve (e.g. baselines=runs/blur1+runs/blur2+runs/roi4)"
    ),
    metric: str = typer.Option(
        "top1", "--metric",
        help="top1 | agreement | map | map50 | pose_ap | miou | psnr | ms_ssim | fsim | lpips (lower is better)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print per-run JSON instead of the Markdown table"),
    out: Path | None = typer.Option(None, "--out", help="folder for compare.md, compare.json, rd_<metric>.png"),
    boot: int = typer.Option(1000, "--boot", help="bootstrap resamples for the 95 % interval"),
    seed: int = typer.Option(0, "--seed", help="bootstrap random seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """BD-rate of each run against the first at equal accuracy, with a paired bootstrap 95 % CI over images."""
    from prepcodec.eval.compare import compare_runs
    from prepcodec.eval.report import comparison_json, comparison_markdown, write_comparison

    if boot < 0:
        raise InputError("--boot must be >= 0")
    if out is not None:
        from prepcodec.commands.outputs import check_output_dir

        check_output_dir(out)
    cmp = compare_runs([_run_group(a) for a in runs], metric, n_boot=boot, seed=seed, progress=not quiet)
    if as_json:
        typer.echo(json.dumps(comparison_json(cmp), indent=1))
    else:
        typer.echo(comparison_markdown(cmp), nl=False)
    if out is not None:
        paths = write_comparison(cmp, out)
        typer.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)


def plot_command(
    runs: list[Path] = typer.Argument(..., help="run directories written by `prepcodec eval`"),
    metric: str = typer.Option("psnr", "--metric", help="a metric the runs have, e.g. psnr, fsim, lpips, top1, map"),
    out: Path = typer.Option(..., "--out", help="PNG to write"),
    logx: bool = typer.Option(False, "--logx", help="logarithmic bpp axis"),
) -> None:
    """Rate-quality curves (mean bpp vs metric per level) of runs, without BD-rate: e.g. a Kodak RD curve."""
    from prepcodec.eval.plots import rd_plot
    from prepcodec.eval.records import METRIC_NAMES, load_run
    from prepcodec.eval.report import METRIC_LABELS, display_value

    if metric not in METRIC_NAMES:
        raise InputError(f"unknown metric {metric!r}; expected one of {', '.join(METRIC_NAMES)}")
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {out}: plots are written as PNG; name a .png file")
    from prepcodec.commands.outputs import check_output_file

    check_output_file(out)
    curves, counts = {}, set()
    for path in runs:
        run = load_run(path)
        values = [getattr(s, metric) for s in run.summaries]
        if any(v is None for v in values):
            raise InputError(f"run {run.name} has no {metric!r} at every level")
        curves[run.name] = ([s.bpp for s in run.summaries], [display_value(metric, v) for v in values])
        counts.update(s.n for s in run.summaries)
    title = f"{', '.join(str(v) for v in sorted(counts))} images per level"
    rd_plot(curves, "bits per pixel (real bitstreams)", METRIC_LABELS.get(metric, metric), out, title=title, logx=logx)
    typer.echo(f"wrote {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add `eval`, `compare` and `plot` to the root app."""
    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("plot")(plot_command)
