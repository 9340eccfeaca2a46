"""`prepcodec pictures`: the figure of where a network removes information, on held-out images (eval.pictures)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from prepcodec.errors import InputError

DEFAULT_DATA = {"classification": "imagenet-eval", "detection": "coco-eval"}


def _network_task(net) -> str:
    """The task a loaded network was trained for (its training summary), which decides what the figure draws."""
    task = net.meta.get("training", {}).get("task")
    if not task:
        raise InputError(f"npp:{net.name} records no training task; give a network exported by `prepcodec train`")
    return task


def _check_out(out: Path) -> None:
    from prepcodec.commands.outputs import probe_folder

    if out.suffix.lower() != ".png":
        raise InputError(f"--out {out}: the figure is a .png file")
    if out.exists() and not out.is_file():
        raise InputError(f"--out {out}: exists and is not a regular file")
    probe_folder(out.parent if str(out.parent) else Path("."))


def pictures_command(
    out: Path = typer.Option(..., "--out", help="the figure, a .png file"),
    npp: str = typer.Option("cls", "--npp", help="the network: a shipped name or an exported .pt"),
    data: str | None = typer.Option(None, "--data", help="held-out images (default: imagenet-eval for a "
                                    "classifier network, coco-eval for a detector network)"),
    images: int = typer.Option(4, "--images", help="how many images (rows), 1-12, spread evenly over the set"),
    start: int = typer.Option(0, "--start", help="index of the first image in the data set"),
    qp: int = typer.Option(37, "--qp", help="hevc QP of the plain stream (the NPP gets its best QP within its bits)"),
    fast: bool = typer.Option(False, "--fast", help="the codec's fast preset instead of eval"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Original / NPP output / removed information / plain vs NPP decode at equal bits (+ Grad-CAM): one PNG."""
    from tqdm import tqdm

    from prepcodec.codecs import get_codec
    from prepcodec.data.datasets import get_dataset
    from prepcodec.eval.pictures import picture_row, picture_sheet
    from prepcodec.npp.preprocessors import loaded_npp_preprocessor
    from prepcodec.npp.zoo import load_npp
    from prepcodec.tasks.registry import create_task, task_kind

    if not 1 <= images <= 12:
        raise InputError(f"--images must lie in [1, 12], got {images}")
    if start < 0:
        raise InputError(f"--start must be >= 0, got {start}")
    _check_out(out)
    network = npp.removeprefix("npp:")
    net = load_npp(network)
    task_name = _network_task(net)
    kind = task_kind(task_name)
    if kind not in DEFAULT_DATA:
        raise InputError(f"pictures draw classifiers and detectors; npp:{network} serves {task_name} ({kind})")
    ds = get_dataset(data or DEFAULT_DATA[kind])
    rest = ds.items[start:]
    items = rest[:: max(1, len(rest) // images)][:images]  # spread: imagenet-eval is sorted by class
    if not items:
        raise InputError(f"{ds.name} has {len(ds)} images; --start {start} leaves none")
    pre = loaded_npp_preprocessor(net)
    codec = get_codec("hevc")
    task = create_task(task_name)
    classifier, detector = (task, None) if kind == "classification" else (None, task)
    t0 = time.perf_counter()
    rows = [picture_row(codec, ds.load(item), item.id, qp, network, pre, "fast" if fast else "eval", classifier,
                        detector)
            for item in tqdm(items, desc=f"pictures: plain vs {pre.spec}", unit="image", disable=quiet)]
    title = (f"{pre.spec} before hevc on {ds.name} (held out): plain at QP {qp} vs the network at about equal bits; "
             f"{task_name} " + ("top-1, Grad-CAM (grad-cam package) for the original's top-1" if detector is None
                                else "boxes (score >= 0.3)"))
    picture_sheet(rows, kind, qp, title, out)
    typer.echo(f"wrote {out} ({len(rows)} images, {time.perf_counter() - t0:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add `prepcodec pictures` to the root app."""
    app.command("pictures")(pictures_command)
