"""`prepcodec codecs | encode | decode | calibrate`: the standard codecs from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prepcodec.commands.tables import table_console
from prepcodec.errors import DataMissing, InputError, PrepcodecError

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _image_inputs(path: Path) -> list[Path]:
    """The file itself, or the sorted images of a folder (InputError when missing or empty)."""
    from prepcodec.data.images import list_images

    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return [path] if path.is_file() else list_images(path)


def _bitstream_inputs(path: Path, codec: str | None) -> list[Path]:
    """The file itself, or the sorted bitstream files of a folder (by extension unless --codec is given)."""
    from prepcodec.codecs.registry import codec_for_extension

    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and (codec or codec_for_extension(p))
    )
    if not files:
        raise InputError(f"{path}: folder contains no bitstream files (.hevc, .266, .jpg, .webp, .avif, .jxl)")
    return files


def _pick_level(level: float | None, qp: float | None, quality: float | None, knob: str, codec: str) -> float:
    """The one level given; --qp only for QP codecs and --quality only for the others (an alias that names the
    wrong knob is a mistake, not a synonym)."""
    given = [v for v in (level, qp, quality) if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one of --level, --qp or --quality")
    if qp is not None and knob != "qp":
        raise InputError(f"{codec} has no QP; its level is a {knob} (use --level or --quality)")
    if quality is not None and knob == "qp":
        raise InputError(f"{codec} is set by its QP (use --qp or --level)")
    return given[0]


QP_AXIS_ROWS = (22, 25, 28, 31, 34, 37, 41, 45)


def _qp_axis_table() -> Table:
    """Native level of every codec at a few HEVC QPs, read from the shipped calibration table."""
    from prepcodec.codecs import get_codec, list_codecs
    from prepcodec.codecs.qp_axis import load_table

    meta = load_table()
    table = Table(title=f"shared HEVC-QP axis ({meta['date']}, {meta['images']})")
    table.add_column("HEVC QP")
    names = [n for n in list_codecs() if n != "hevc"]
    for name in names:
        table.add_column(f"{name} {get_codec(name).level_spec.knob}")
    for qp in QP_AXIS_ROWS:
        table.add_row(str(qp), *(f"{get_codec(n).from_hevc_qp(qp):g}" for n in names))
    return table


def codecs_command(
    qp_axis: bool = typer.Option(False, "--qp-axis", help="show the shipped level <-> HEVC QP table instead"),
) -> None:
    """List the codecs: knob, range, direction, presets, backend and availability."""
    from prepcodec.codecs import PRESETS, get_codec, list_codecs

    if qp_axis:
        table_console().print(_qp_axis_table())
        return

    table = Table(title="prepcodec codecs")
    for col in ("name", "ext", "knob", "range", "direction", "presets", "backend", "available"):
        table.add_column(col)
    for name in list_codecs():
        c = get_codec(name)
        spec = c.level_spec
        ok, info = c.availability()
        direction = "higher = better" if spec.higher_is_better else "lower = better"
        table.add_row(
            name, c.extension, spec.knob, f"{spec.min:g}-{spec.max:g}", direction, ", ".join(PRESETS),
            info if ok else "-", "yes" if ok else f"no: {info}",
        )  # fmt: skip
    table_console().print(table)


def encode_command(
    src: Path = typer.Argument(..., help="image file or folder of images"),
    out: str = typer.Argument(..., help="output file (single image) or folder (a trailing / makes it one)"),
    codec: str = typer.Option("hevc", "--codec", "-c", help="hevc, vvc, jpeg, webp, avif, jxl"),
    level: float = typer.Option(None, "--level", "-l", help="native level (QP or quality, see `prepcodec codecs`)"),
    qp: float = typer.Option(None, "--qp", help="alias of --level for QP codecs"),
    quality: float = typer.Option(None, "--quality", "-q", help="alias of --level for quality codecs"),
    target_bpp: float = typer.Option(None, "--target-bpp", help="pick the level per image: the best quality whose "
                                     "real stream is at most this many bits per pixel (instead of a level)"),
    preset: str = typer.Option("eval", "--preset", help="eval (reference settings) or fast"),
    npp: str = typer.Option(None, "--npp", help="preprocess with a network first: a shipped name (`prepcodec npp "
                            "list`), an exported .pt, or an .onnx from `prepcodec export onnx` (run by onnxruntime, "
                            "no torch needed); it runs at the level's HEVC-axis QP"),
    compare: bool = typer.Option(False, "--compare", help="also encode without preprocessing and report the bytes "
                                 "saved at the same level (needs --npp)"),
    workers: int = typer.Option(1, "--workers", help="encode processes (1 = in this process; 0 = one per core)"),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray (Ray tasks; same bytes)"),
    address: str = typer.Option(None, "--address", help="with --executor ray: an existing cluster (e.g. auto, "
                                "ray://head:10001); default a private local instance of --workers CPUs"),
) -> None:
    """Encode images into standard bitstream files (.hevc, .266, .jpg, .webp, .avif, .jxl); a folder gets a
    manifest.csv/json (file, level, bytes, bpp) beside the streams."""
    from prepcodec.atomic import write_bytes
    from prepcodec.codecs import CodecPool, get_codec
    from prepcodec.codecs.base import check_preset
    from prepcodec.codecs.registry import codec_for_extension
    from prepcodec.commands.outputs import plan_outputs
    from prepcodec.export.encode_job import encode_file, npp_for_encode

    c = get_codec(codec)
    value = None
    if target_bpp is None:
        value = int(c.level_spec.check(_pick_level(level, qp, quality, c.level_spec.knob, c.name)))
    elif any(v is not None for v in (level, qp, quality)):
        raise InputError("give a level or --target-bpp, not both")
    elif not target_bpp > 0:
        raise InputError(f"--target-bpp must be > 0, got {target_bpp}")
    check_preset(preset)
    if workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    ok, why = c.availability()
    if not ok:
        from prepcodec.errors import BackendUnavailable

        raise BackendUnavailable(f"{c.name}: {why}")
    if compare and not npp:
        raise InputError("--compare needs --npp (it reports the bytes the network saves)")
    pre = npp_for_encode(npp) if npp else None  # loaded here first: a bad --npp fails before any work
    files = _image_inputs(src)
    targets = plan_outputs(files, out, src.is_dir(), c.extension, lambda p: codec_for_extension(p) == c.name)
    rows = []
    what = f"{c.level_spec.knob} {value:g}" if value is not None else f"<= {target_bpp:g} bpp"
    jobs = [(str(f), c.name, preset, value, npp, target_bpp, compare) for f in files]
    with _progress() as progress, CodecPool(workers or None, executor, address) as pool:
        task = progress.add_task(f"{c.name} {what}", total=len(files))
        for f, target, res in zip(files, targets, pool.map(encode_file, jobs), strict=True):
            for note in res.notes:
                console.print(f"note: {f.name}: {note}")
            if res.error is not None:
                raise InputError(res.error)
            write_bytes(target, res.data)
            row = res.row
            row.file, row.output = str(f), str(target)
            rows.append(row)
            if row.target_met is False:
                console.print(f"note: {f.name}: even {c.level_spec.knob} {row.level:g} needs {row.bpp:.4f} bpp, "
                              f"over the {target_bpp:g} bpp target")
            progress.advance(task)
    _encode_summary(c, preset, pre, src, targets, rows, compare)


def _encode_summary(c, preset: str, pre, src: Path, targets: list[Path], rows: list, compare: bool) -> None:
    from prepcodec.export.encode_job import write_manifest

    folder = src.is_dir() or len(targets) > 1
    where = targets[0].parent if folder else targets[0]
    if folder:
        write_manifest(where, rows)
    total = sum(r.bytes for r in rows)
    with_npp = f", {pre.spec}" if pre is not None else ""
    typer.echo(f"{len(rows)} images, {total} bytes, mean {np.mean([r.bpp for r in rows]):.4f} bpp ({c.name}, "
               f"{preset} preset{with_npp}) -> {where}")
    if rows[0].target_bpp is not None:
        missed = sum(r.target_met is False for r in rows)
        levels = sorted({r.level for r in rows})
        typer.echo(f"target {rows[0].target_bpp:g} bpp: {len(rows) - missed} met, {missed} over (at the lowest "
                   f"quality); {c.level_spec.knob} {levels[0]:g}..{levels[-1]:g}")
    if compare:
        plain = sum(r.plain_bytes for r in rows)
        typer.echo(f"without the NPP: {plain} bytes; the NPP saves {100 * (1 - total / plain):.1f} % at the same "
                   f"{c.level_spec.knob}")


def decode_command(
    src: Path = typer.Argument(..., help="bitstream file or folder of bitstream files"),
    out: str = typer.Argument(..., help="output PNG (single file) or folder (a trailing / makes it one)"),
    codec: str = typer.Option(None, "--codec", "-c", help="force the codec instead of detecting it"),
) -> None:
    """Decode bitstream files back into PNGs (codec detected from the extension or magic bytes)."""
    from prepcodec.codecs import get_codec
    from prepcodec.codecs.fileio import read_bitstream
    from prepcodec.commands.outputs import plan_outputs
    from prepcodec.data.images import save_png

    files = _bitstream_inputs(src, codec)
    targets = plan_outputs(files, out, src.is_dir(), ".png")
    with _progress() as progress:
        task = progress.add_task("decoding", total=len(files))
        for f, target in zip(files, targets, strict=True):
            name, data = read_bitstream(f, codec)
            try:
                rgb = get_codec(name).decode(data)
            except PrepcodecError as exc:
                raise type(exc)(f"{f}: {exc}") from None
            save_png(target, rgb)
            progress.advance(task)
    typer.echo(f"{len(files)} images decoded to {targets[0] if len(targets) == 1 else targets[0].parent}")


def _calibration_images(data: str, count: int, crop: tuple[int, int] | None) -> tuple[list[np.ndarray], str]:
    """Every k-th image of a named data set or folder (k spreads `count` over the set), centre-cropped."""
    from prepcodec.codecs.calibrate import centre_crop

    path = Path(data)
    if path.is_dir():
        from prepcodec.data.images import load_image

        items = _image_inputs(path)
        loaders = [(p.name, lambda p=p: load_image(p)) for p in items]
        source = str(path)
    else:
        from prepcodec.data.datasets import get_dataset

        try:
            ds = get_dataset(data)
        except DataMissing as exc:
            console.print(f"[yellow]{exc}; calibrating on the bundled sample photos instead[/yellow]")
            ds = get_dataset("samples")
        loaders = [(it.id, lambda it=it, ds=ds: ds.load(it)) for it in ds.items]
        source = ds.name
    stride = max(1, len(loaders) // max(1, count))
    chosen = loaders[::stride][:count]
    images = [im if crop is None else centre_crop(im, *crop) for im in (load() for _, load in chosen)]
    return images, f"{source}: {', '.join(n for n, _ in chosen)}"


def calibrate_command(
    data: str = typer.Option("kodak", "--data", help="data set name or folder of images"),
    codecs: str = typer.Option("vvc,jpeg,webp,avif,jxl", "--codecs", help="comma-separated codecs to map"),
    images: int = typer.Option(8, "--images", help="how many images (spread evenly over the set)"),
    crop: str = typer.Option("384x256", "--crop", help="centre crop WxH (landscape; 'none' for full images)"),
    step: int = typer.Option(3, "--step", help="measure every STEP-th native level (interpolated between)"),
    hevc_step: int = typer.Option(1, "--hevc-step", help="measure every N-th HEVC QP (the axis itself)"),
    workers: int = typer.Option(None, "--workers", help="encoder processes (default: one per core)"),
    out: Path = typer.Option(None, "--out", help="table to write (or --replace-shipped)"),
    replace_shipped: bool = typer.Option(False, "--replace-shipped",
                                         help="overwrite the package's own qp_axis.json (every codec's levels move)"),
) -> None:
    """Measure the shared HEVC-QP axis (mean bpp per level, eval preset) and write qp_axis.json."""
    import sys

    from prepcodec.codecs import CodecPool, get_codec
    from prepcodec.codecs.calibrate import calibrate, level_grid, write_table
    from prepcodec.codecs.qp_axis import TABLE_PATH

    names = [get_codec(n).name for n in codecs.split(",") if n.strip()]
    crop_wh = None
    if crop.lower() != "none":
        try:
            crop_wh = tuple(int(v) for v in crop.lower().split("x"))
            assert len(crop_wh) == 2 and min(crop_wh) > 0
        except (ValueError, AssertionError):
            raise InputError(f"--crop must look like 384x256 or none, got {crop!r}") from None
    if step < 1 or hevc_step < 1:
        raise InputError(f"--step and --hevc-step must be >= 1, got {step} and {hevc_step}")
    if images < 1:
        raise InputError(f"--images must be >= 1, got {images}")
    if (out is None) == (not replace_shipped):
        raise InputError("give --out FILE, or --replace-shipped to overwrite the shipped table (not both)")
    from prepcodec.commands.outputs import check_output_file

    check_output_file(out or TABLE_PATH)
    imgs, described = _calibration_images(data, images, crop_wh)
    total = len(level_grid("hevc", hevc_step)) + sum(len(level_grid(n, step)) for n in names if n != "hevc")
    with _progress() as progress, CodecPool(workers) as pool:
        task = progress.add_task("calibrating", total=total)

        def on_level(codec: str, level: float, bpp: float) -> None:
            progress.update(task, advance=1, description=f"{codec} {level:g}: {bpp:.3f} bpp")

        table = calibrate(imgs, names, pool, step=step, hevc_step=hevc_step, on_level=on_level)
    meta = {
        "command": "prepcodec " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["calibrate"] else "prepcodec calibrate",
        "images": described,
        "crop": crop,
        "level_step": step,
        "hevc_qp_step": hevc_step,
        "preset": "eval",
    }
    target = TABLE_PATH if replace_shipped else out
    write_table(target, table, meta)
    typer.echo(f"wrote {target} ({len(table)} codecs, {len(imgs)} images)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("codecs")(codecs_command)
    app.command("encode")(encode_command)
    app.command("decode")(decode_command)
    app.command("calibrate")(calibrate_command)
