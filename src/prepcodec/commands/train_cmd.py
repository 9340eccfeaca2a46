"""`prepcodec train` (the NPP, end to end through a real codec) and `prepcodec npp list` (shipped networks)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prepcodec.errors import InputError

npp_app = typer.Typer(help="Shipped preprocessing networks.", no_args_is_help=True)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise InputError(f"{what} is empty")
    return values


def train_command(
    task: str = typer.Option("effnet-lite0", "--task", help="frozen task model the NPP serves"),
    codec: str = typer.Option("hevc", "--codec", help="real codec trained through"),
    out: Path = typer.Option(Path("runs/npp-cls"), "--out", help="run directory (checkpoint, tb/, npp.pt + .json)"),
    size: str = typer.Option(None, "--size", help="NPP size (default small): small (CPU), paper, the ROI networks "
                             "roi-blend / roi-graded / roi-graded-mild / roi-graded-amp / roi-det, ... (an unknown "
                             "name lists them all; docs/training.md); with --init, the --init network's own unless "
                             "this adds evidence amplification to it"),
    route: str = typer.Option("real", "--route", help="gradient route: real (real forward, proxy backward), "
                              "proxy (proxy both ways), ste (real forward, identity image gradient, proxy rate)"),
    proxy: str = typer.Option(None, "--proxy", help="proxy name or .pt (default: the codec's default proxy)"),
    preset: str = typer.Option("fast", "--preset", help="real-codec speed preset while training (fast or eval)"),
    lam: float = typer.Option(1.0, "--lam", help="λ; with --lam-mode qp the multiple of the break-even λ*(qp)"),
    lam_mode: str = typer.Option("qp", "--lam-mode", help="qp (λ paired with the QP via the plain codec's slope) "
                                 "or const"),
    beta: float = typer.Option(0.5, "--beta", help="weight of MSE(x̄, x)"),
    task_loss: str = typer.Option("kl", "--task-loss", help="kl (to the teacher's outputs: a classifier's "
                                  "probabilities, a detector's heads), top1 (classifier: cross-entropy to the "
                                  "teacher's top-1 class: what top-1 accuracy asks) or confident (detector: its heads "
                                  "with its confident detections made certain: what mAP against them asks)"),
    select: str = typer.Option("task_loss", "--select", help="validation score that picks the exported weights: "
                               "task_loss (BD-rate at equal task loss), agreement (at equal top-1 agreement; a "
                               "detector's: mAP against the teacher's boxes), or last (the final weights: a "
                               "validation set too small to rank checkpoints)"),
    qp_min: int = typer.Option(22, "--qp-min"),
    qp_max: int = typer.Option(44, "--qp-max"),
    steps: int = typer.Option(None, "--steps", help="optimizer steps (default 4000; no limit with --budget)"),
    budget: float = typer.Option(None, "--budget", help="wall-clock seconds for the run"),
    batch: int = typer.Option(8, "--batch", help="global batch (split across torchrun processes)"),
    lr: float = typer.Option(3e-4, "--lr"),
    head_lr_mult: float = typer.Option(1.0, "--head-lr-mult", help="learning rate of the blend head = --lr x this"),
    datasets: str = typer.Option("imagenet-train", "--datasets",
                                 help="training splits, comma-separated, slices allowed "
                                 "(imagenet-train, photos-train, coco-train)"),
    crop: int = typer.Option(192, "--crop", help="crop side"),
    crops_per_image: int = typer.Option(8, "--crops-per-image"),
    val_images: int = typer.Option(50, "--val-images", help="whole training images held out for validation"),
    val_crop: int = typer.Option(0, "--val-crop", help="side of the validation centre crops (0: --crop; 256: "
                                 "whole imagenet-train images, as the evaluation codes them)"),
    val_every: int = typer.Option(250, "--val-every", help="validate every N steps (0: only at the end)"),
    val_qps: str = typer.Option("22,26,30,34,38,42", "--val-qps"),
    lam_crops: int = typer.Option(128, "--lam-crops", help="training crops the break-even λ*(qp) table is measured "
                                  "on (12 QPs each; a detector's forward pass is slow: 32 is enough to set a scale)"),
    ckpt_every_s: float = typer.Option(180.0, "--ckpt-every-s", help="checkpoint interval in seconds"),
    init: str = typer.Option(None, "--init", help="start from these NPP weights (name or .pt), e.g. stage 1's"),
    workers: int = typer.Option(2, "--workers", help="real-codec processes"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue from <out>/checkpoint.pt"),
    stop_at: int = typer.Option(None, "--stop-at", help="end after this step (checkpoint, export of the best "
                                "weights so far) without changing the schedule; resume later"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train the NPP: NPP -> real codec (forward) / proxy (backward) -> frozen task; exports <out>/npp.pt."""
    from prepcodec.commands.outputs import check_output_dir
    from prepcodec.tasks.base import check_device
    from prepcodec.train.crops import CropRecipe
    from prepcodec.train.npp_trainer import NPPTrainConfig, train_npp

    device = check_device(device)
    check_output_dir(out)
    crops = CropRecipe(datasets=tuple(d.strip() for d in datasets.split(",") if d.strip()), crop=crop,
                       crops_per_image=crops_per_image, val_images=val_images, seed=seed,
                       val_crop=val_crop)
    cfg = NPPTrainConfig(
        task=task, codec=codec, size=size, route=route, proxy=proxy, preset=preset, lam=lam, lam_mode=lam_mode,
        beta=beta, task_loss=task_loss, select=select, qp_min=qp_min, qp_max=qp_max,
        steps=steps if steps is not None or budget else 4000,
        budget_s=budget, batch=batch, lr=lr, head_lr_mult=head_lr_mult, crops=crops, init=init,
        ckpt_every_s=ckpt_every_s, val_every=val_every,
        val_qps=_ints(val_qps, "--val-qps"), lam_crops=lam_crops, workers=workers, seed=seed, device=device,
        out=str(out),
    )
    summary = train_npp(cfg, resume=resume, stop_at=stop_at, progress=not quiet)
    picked = ("the final weights" if select == "last" else f"best validation step {summary['best_step']} "
              f"(validation BD-rate by {select}: {summary['best_val_score_pct']} %)")
    typer.echo(f"{out / 'npp.pt'}: {summary['steps']} steps, {picked}")


@npp_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="one JSON object per network")) -> None:
    """Shipped NPPs: name, size, parameters, what they were trained for, and how."""
    from prepcodec.npp.model import count_parameters
    from prepcodec.npp.zoo import list_npps, load_npp

    names = list_npps()
    if not names:
        typer.echo("no NPP shipped yet (train one with `prepcodec train`; use it with --pre npp:PATH)")
        return
    for name in names:
        net = load_npp(name)
        t = net.meta.get("training", {})
        row = {"name": f"npp:{name}", "params": count_parameters(net.model), "task": t.get("task"),
               "codec": t.get("codec"), "route": t.get("route"), "steps": t.get("steps"), "lam": t.get("lam"),
               "lam_mode": t.get("lam_mode"), "beta": t.get("beta"), "cpu_hours": t.get("cpu_hours"),
               "sha256": net.sha256[:12]}
        if "grown" in t:  # the trained network's summary, plus a stage added at its start (`npp grow`)
            row["grown_from"] = str(t["grown"].get("from_sha256", ""))[:12]
            row["grown_into"] = t["grown"].get("size")
        if "steps_changed" in t:  # `npp steps`: the same weights, another ascent length
            row["steps_from"] = str(t["steps_changed"].get("from_sha256", ""))[:12]
            row["evidence_steps"] = t["steps_changed"].get("steps")
        if "gain_fit" in t:  # the evidence gain set per QP by scripts/probe_evidence_gain.py --fit, not trained
            row["gain_fit"] = f"{t['gain_fit'].get('crops')} training crops"
        typer.echo(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()))


@npp_app.command("show")
def show_cmd(npp: str = typer.Argument(..., help="a shipped name (cls, det) or an exported .pt"),
             qps: str = typer.Option("22,26,30,34,38,42,44", "--qps", help="HEVC QPs to read the knobs at")) -> None:
    """What an ROI-guided network learned, per QP: its cuts on the attention and its blur mixes (mean sigma and the
    weight on each sigma), read from the weights without running an image."""
    from prepcodec.npp.zoo import load_npp

    levels = _ints(qps, "--qps")
    net = load_npp(npp)
    roi = net.model.roi
    if roi is None:
        raise InputError(f"{npp} is not an ROI-guided network (size without roi=): it has no per-QP knobs to read; "
                         "`prepcodec pictures` shows what it does to images")
    training = net.meta.get("training", {})
    picked = f" (the weights of step {training['best_step']})" if training.get("best_step") is not None else ""
    typer.echo(f"{net.name}: {net.model.config.roi} attention, trained {training.get('steps')} steps{picked}")
    for qp in levels:
        parts = []
        for key, value in roi.knobs(qp).items():
            if isinstance(value, dict):
                mean = sum(s * w for s, w in value.items())
                weights = "/".join(f"{w:.2f}" for w in value.values())
                parts.append(f"{key} σ̄ {mean:.2f} ({weights} on σ {'/'.join(f'{s:g}' for s in value)})")
            else:
                parts.append(f"{key} {value:.3f}")
        typer.echo(f"QP {qp}: " + "; ".join(parts))


@npp_app.command("grow")
def grow_cmd(npp: str = typer.Argument(..., help="a trained network: a shipped name or an exported .pt"),
             size: str = typer.Option(..., "--size", help="the same network plus evidence amplification, e.g. "
                                      "roi-graded-amp for run J (roi-graded-mild)"),
             out: Path = typer.Option(..., "--out", help="where to write the grown network (.pt + .json)")) -> None:
    """Write a trained network into the larger architecture of --size with the added stage at its start (evidence
    amplification at gain 1): the stage-1 network of a run that trains the new stage (`train --init NPP --size`),
    usable and evaluable before that run ends. Its training summary is the trained network's, with `grown` added."""
    from prepcodec.npp.model import count_parameters, grow_npp
    from prepcodec.npp.zoo import export_npp, load_npp

    net = load_npp(npp)
    grown = grow_npp(net.model, size)
    training = dict(net.meta.get("training", {}))
    training["grown"] = {"from": npp, "from_sha256": net.sha256, "size": size,
                         "new_stage": "evidence amplification at its start (gain 1 at every QP), not trained"}
    path = export_npp(grown, out, training=training)
    typer.echo(f"{path}: {npp} grown into {size} ({count_parameters(grown)} parameters; the new stage at its start)")


@npp_app.command("steps")
def steps_cmd(npp: str = typer.Argument(..., help="a network with an evidence stage: a shipped name or an exported "
                                        ".pt"),
              steps: int = typer.Option(..., "--steps", help="ascent steps of the evidence stage (1-20; the shipped "
                                        "networks use 5)"),
              out: Path = typer.Option(..., "--out", help="where to write the network (.pt + .json)")) -> None:
    """Write the same network with its evidence stage's ascent set to --steps steps, every weight unchanged: each
    step is one forward-and-backward pass of the task model, most of an evidence network's encoder cost. Its
    training summary is the network's, with `steps_changed` added."""
    from prepcodec.npp.model import with_evidence_steps
    from prepcodec.npp.zoo import export_npp, load_npp

    net = load_npp(npp)
    derived = with_evidence_steps(net.model, steps)
    training = dict(net.meta.get("training", {}))
    training["steps_changed"] = {"from": npp, "from_sha256": net.sha256, "from_steps": net.model.config.evidence_steps,
                                 "steps": steps}
    path = export_npp(derived, out, training=training)
    typer.echo(f"{path}: {npp} with {steps} ascent step(s) (was {net.model.config.evidence_steps}); weights unchanged")


def register(app: typer.Typer) -> None:
    """Add `prepcodec train` and `prepcodec npp ...`."""
    app.command("train")(train_command)
    app.add_typer(npp_app, name="npp")
