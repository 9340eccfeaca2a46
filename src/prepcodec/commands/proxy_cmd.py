"""`prepcodec proxy train|eval|list|targets`: train, measure and list the learned/analytic codec proxies."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prepcodec.errors import InputError

FIT_CROP = 192
MIN_FIT_IMAGES = 4
proxy_app = typer.Typer(help="Differentiable codec proxies (training-time stand-ins for the real codecs).",
                        no_args_is_help=True)


def _recipe(codec: str, crops: int, crop_size: int, qps_per_crop: int, seed: int, datasets: str | None = None):
    from prepcodec.proxy.targets import TRAIN_DATASETS, TargetRecipe

    names = tuple(d.strip() for d in datasets.split(",") if d.strip()) if datasets else TRAIN_DATASETS
    if crops < 1 or crop_size < 16 or qps_per_crop < 1:
        raise InputError(f"--crops and --qps-per-crop must be >= 1 and --crop-size >= 16, got {crops}, "
                         f"{qps_per_crop} and {crop_size}")
    return TargetRecipe(codec=codec, crops=crops, crop_size=crop_size, qps_per_crop=qps_per_crop, seed=seed,
                        datasets=names)


DATASETS_HELP = ("cached target set: data sets to crop from, comma-separated, slices allowed "
                 "(default photos-train,imagenet-train; e.g. 'photos-train[:57]' keeps the last 12 photos out)")


@proxy_app.command("targets")
def targets_cmd(
    codec: str = typer.Option("hevc", help="real codec to imitate"),
    crops: int = typer.Option(640, help="random training crops"),
    crop_size: int = typer.Option(128, help="crop side in pixels"),
    qps_per_crop: int = typer.Option(2, help="random QPs in [22, 47] per crop"),
    seed: int = typer.Option(0),
    datasets: str = typer.Option(None, help=DATASETS_HELP),
) -> None:
    """Build (or find) the cached real-codec target set and print its path."""
    from prepcodec.proxy.targets import cache_dir, load_or_build

    recipe = _recipe(codec, crops, crop_size, qps_per_crop, seed, datasets)
    data = load_or_build(recipe)
    typer.echo(f"{cache_dir() / f'{codec}-{recipe.key()}.npz'}  ({len(data['idx'])} targets)")


@proxy_app.command("train")
def train_cmd(
    codec: str = typer.Option("hevc", help="real codec to imitate"),
    size: str = typer.Option("small", help="small (GDN, N=64/M=96, CPU), large (GDN, N=128/M=192, GPU) or "
                                           "dct (block-DCT transforms, CPU)"),
    steps: int = typer.Option(None, help="optimizer steps in total (default 2000; no limit with --budget)"),
    budget: float = typer.Option(None, help="wall-clock seconds for the whole run; the cosine LR runs over it"),
    batch: int = typer.Option(8, help="global batch (split across torchrun processes)"),
    lr: float = typer.Option(1e-3),
    lr_final_frac: float = typer.Option(0.1, help="the cosine LR decays to this fraction of --lr"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    out: Path = typer.Option(None, help="run directory (default runs/proxy-<codec>-<size>)"),
    resume: bool = typer.Option(False, help="continue from <out>/checkpoint.pt"),
    ckpt_every: int = typer.Option(100, help="checkpoint interval in steps"),
    init: str = typer.Option(None, help="start from these weights: a shipped name (e.g. hevc-small) or a .pt"),
    crops: int = typer.Option(640, help="cached target set: random training crops"),
    crop_size: int = typer.Option(128, help="crop side (cached or streamed targets)"),
    qps_per_crop: int = typer.Option(2, help="cached target set: random QPs per crop"),
    datasets: str = typer.Option(None, help=DATASETS_HELP),
    seed: int = typer.Option(0),
    targets: Path = typer.Option(None, help="target .npz to use instead of the cache (machines without codecs)"),
    stream: int = typer.Option(0, help="generate this many fresh real-codec targets (one random QP each) in a "
                                       "background thread while training, instead of the cached set"),
    images: Path = typer.Option(None, help="with --stream: crop from this image folder instead of "
                                           "photos-train + imagenet-train"),
    workers: int = typer.Option(None, help="with --stream: codec processes (default: one per CPU core)"),
    holdout_every: int = typer.Option(None, help="hold out every n-th target for validation and export the best "
                                                 "weights (default 20 with --stream, else 0 = none)"),
    val_targets: int = typer.Option(150, help="validation subset: the first n held-out targets"),
    val_every: int = typer.Option(100, help="validate every n steps (0 = off)"),
    val_every_s: float = typer.Option(0.0, help="validate every s seconds (0 = off)"),
    w_dist: float = typer.Option(0.0, help="weight of distortion-level matching, |log2 MSE(proxy, x) - log2 "
                                           "MSE(codec, x)| per image (0: the loss the hevc-small weights used)"),
    alternate_rounding: bool = typer.Option(False, help="alternate noise-rate steps (train mode) with hard-rounded "
                                                        "straight-through steps (eval mode)"),
) -> None:
    """Train a QP-conditioned proxy on real-codec targets; writes <out>/<codec>-<size>.pt (+ .json)."""
    import numpy as np

    from prepcodec.train.proxy_trainer import TrainConfig, train_proxy

    recipe = _recipe(codec, crops, crop_size, qps_per_crop, seed, datasets)
    data, stream_recipe = None, None
    if stream < 0:
        raise InputError(f"--stream must be >= 0, got {stream}")
    if stream and targets is not None:
        raise InputError("--stream generates its own targets; drop --targets")
    if not stream and (images is not None or workers is not None):
        raise InputError("--images and --workers only apply with --stream N")
    if stream:
        from prepcodec.proxy.stream import StreamRecipe

        stream_recipe = StreamRecipe(codec=codec, crops=stream, crop_size=crop_size, seed=seed, workers=workers,
                                     images=str(images) if images is not None else None)
    if targets is not None:
        if not targets.exists():
            raise InputError(f"target file {targets} not found")
        with np.load(targets) as z:
            data = {k: z[k] for k in z.files if k != "recipe"}
            if "recipe" in z.files:
                from prepcodec.proxy.targets import TargetRecipe

                r = json.loads(str(z["recipe"]))
                recipe = TargetRecipe(**{**r, "datasets": tuple(r["datasets"])})
    if holdout_every is None:
        holdout_every = 20 if stream else 0
    cfg = TrainConfig(codec=codec, size=size, steps=steps if steps is not None or budget else 2000, batch=batch,
                      lr=lr, lr_final_frac=lr_final_frac, device=device, seed=seed,
                      out=str(out or Path("runs") / f"proxy-{codec}-{size}"), ckpt_every=ckpt_every, recipe=recipe,
                      init=init, stream=stream_recipe, budget_s=budget, holdout_every=holdout_every,
                      val_targets=val_targets, val_every=val_every, val_every_s=val_every_s,
                      alternate_rounding=alternate_rounding, w_dist=w_dist)
    summary = train_proxy(cfg, resume=resume, targets=data)
    keys = ("steps", "wall_s", "device", "world_size", "first_loss", "final_loss_mean_last50", "val_loss", "best_step")
    typer.echo(json.dumps({k: summary[k] for k in keys if k in summary}))
    typer.echo(f"weights: {Path(cfg.out) / f'{codec}-{size}.pt'}")


def _proxy_fn(name: str, codec: str):
    """(x, qp) -> (x_hat, bits) for a shipped name, an exported .pt path, or 'jpeg-analytic' (qp mapped to quality)."""
    from prepcodec.proxy.fidelity import codec_level
    from prepcodec.proxy.zoo import ANALYTIC, load_learned, load_proxy

    if name == ANALYTIC:
        if codec != "jpeg":
            raise InputError("the analytic proxy imitates jpeg only (use --codec jpeg)")
        model = load_proxy(ANALYTIC)
        return lambda x, qp: model(x, codec_level("jpeg", qp))
    model = load_learned(name)
    if model.config.codec != codec:
        raise InputError(f"proxy {name} imitates {model.config.codec}, not {codec}")
    return model


@proxy_app.command("eval")
def eval_cmd(
    codec: str = typer.Option("hevc", help="real codec"),
    proxy: str = typer.Option(None, help="shipped name (see `proxy list`), a .pt path, or jpeg-analytic "
                                         "(default: hevc-dct for hevc, jpeg-analytic for jpeg)"),
    data: str = typer.Option("kodak", help="images to measure on: kodak (the proxies' test set) or, to choose "
                                         "between proxies without touching it, held-out training images such "
                                         "as 'photos-train[57:]'"),
    images: int = typer.Option(24, help="first N images for the RD part"),
    grad_images: int = typer.Option(24, help="images for gradient alignment (0 = skip)"),
    grad_downscale: int = typer.Option(2, help="downscale factor for gradient alignment images"),
    plot: Path = typer.Option(None, help="write the log-log scatter PNG here"),
    out: Path = typer.Option(None, help="also write the JSON report here"),
    as_json: bool = typer.Option(False, "--json", help="print the full JSON report"),
) -> None:
    """Fidelity of a proxy against its real codec (BD-rate, Pearson r, gradient alignment); Kodak-24 by default."""
    import numpy as np
    from PIL import Image

    from prepcodec.data.datasets import get_dataset
    from prepcodec.proxy import fidelity
    from prepcodec.proxy.zoo import default_proxy_name

    name = proxy or default_proxy_name(codec)
    fn = _proxy_fn(name, codec)
    ds = get_dataset(data)
    if not 1 <= images <= len(ds) or not 0 <= grad_images <= len(ds) or grad_downscale < 1:
        raise InputError(f"--images/--grad-images must be within 1..{len(ds)}, --grad-downscale >= 1")
    imgs = [ds.load(item) for item in ds.items[:images]]
    small = [np.asarray(Image.fromarray(ds.load(it)).reduce(grad_downscale)) for it in ds.items[:grad_images]]
    report = fidelity.evaluate(fn, codec, imgs, small, plot=plot, name=name, data=ds.name)
    report["grad_downscale"] = grad_downscale
    text = fidelity.dumps(report)
    if out:
        from prepcodec.atomic import write_text

        write_text(out, text + "\n")
    if as_json:
        typer.echo(text)
        return
    bd = report["bd_rate_pct"]
    bd_text = f"{bd:+.2f} %" if bd is not None else f"n/a ({report['bd_rate_note']})"
    typer.echo(f"{name} vs {codec} on {ds.name} ({images} images): BD-rate {bd_text}, "
               f"Pearson r(log bits) {report['pearson_r']:.4f}")
    for p in report["per_qp"]:
        typer.echo(f"  QP {p['qp']:g}: bpp real {p['real_bpp']:.4f} proxy {p['proxy_bpp']:.4f} "
                   f"(x{p['bpp_ratio']:.3f}), PSNR(proxy, codec) {p['psnr_proxy_vs_real']:.2f} dB")
    for dname, per in (report["gradient_alignment"] or {}).items():
        for qp, per_eps in per.items():
            cells = ", ".join(f"{e}: bits r={v['bits']['r']} dist r={v['distortion']['r']}" for e, v in per_eps.items())
            typer.echo(f"  {dname} {qp}: {cells}")


@proxy_app.command("fit-jpeg")
def fit_jpeg_cmd(
    images: int = typer.Option(40, help="training photos (photos-train) to fit on"),
    qualities: str = typer.Option("5,8,10,16,25,35,50,64,75,90", help="JPEG qualities, comma-separated"),
    out: Path = typer.Option(None, help="where to write the rate model (or --replace-shipped)"),
    replace_shipped: bool = typer.Option(False, help="overwrite the package's own jpeg_rate.json"),
) -> None:
    """Fit the analytic JPEG proxy's rate model (5 coefficients) to real JPEG bytes of training photos."""
    from prepcodec.atomic import write_text
    from prepcodec.data.datasets import get_dataset
    from prepcodec.proxy.jpeg import RATE_MODEL_PATH, fit_rate_model

    if (out is None) == (not replace_shipped):
        raise InputError("give --out FILE, or --replace-shipped to overwrite the shipped rate model (not both)")
    try:
        qs = [int(q) for q in qualities.split(",") if q.strip()]
    except ValueError:
        raise InputError(f"--qualities must be comma-separated integers, got {qualities!r}") from None
    if len(set(qs)) < 3 or not all(1 <= q <= 95 for q in qs):
        raise InputError("--qualities needs >= 3 distinct values in [1, 95]")
    if images < MIN_FIT_IMAGES:
        raise InputError(f"--images must be >= {MIN_FIT_IMAGES} (8 coefficients need several photos per quality), "
                         f"got {images}")
    ds = get_dataset("photos-train")
    if images > len(ds):
        raise InputError(f"--images must be <= {len(ds)} (the photos-train size), got {images}")
    imgs = [ds.load(item) for item in ds.items[:images]]
    imgs += [im[:FIT_CROP, :FIT_CROP] for im in imgs]  # small crops too: the NPP trains on crops
    model = fit_rate_model(imgs, qs)
    model["fit_on"] = f"photos-train first {images} images (640 px long side) + their top-left {FIT_CROP}px crops"
    path = RATE_MODEL_PATH if replace_shipped else out
    write_text(path, json.dumps(model, indent=2) + "\n")
    typer.echo(f"{path}: coefs {model['coefs']}, Pearson r(log bits) on the fit set {model['pearson_log_bits']:.4f}")


@proxy_app.command("list")
def list_cmd() -> None:
    """Shipped proxies with their config and training summary."""
    from prepcodec.proxy.zoo import ANALYTIC, WEIGHTS_DIR, list_proxies

    for name in list_proxies():
        if name == ANALYTIC:
            from prepcodec.proxy.jpeg import load_rate_model

            m = load_rate_model()
            typer.echo(f"{name}: analytic JPEG, rate model coefs {m['coefs']} (fit n={m['n']})")
            continue
        meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        t = meta.get("training", {})
        c = meta["config"]
        stages = [t, *t.get("init_lineage", [])]
        runs = " + ".join(f"{s.get('steps')} steps, {s.get('wall_s')} s on {s.get('device')}" for s in reversed(stages))
        typer.echo(f"{name}: {c.get('arch', 'gdn')} transforms, N={c['N']} M={c['M']}, {runs}")


def register(app: typer.Typer) -> None:
    """Add `prepcodec proxy ...`."""
    app.add_typer(proxy_app, name="proxy")
