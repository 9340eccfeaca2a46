"""Train the NPP end to end: x -> NPP(x, qp) -> x̄ -> codec (real forward / proxy backward) -> x̂ -> frozen task.

    L = R + λ(qp)·D_task + β·D_pre,   R = bits / pixel (real value, proxy gradient),
    D_task = the task's distillation loss to its own output on the uncompressed crop (cached per crop),
    D_pre = MSE(x̄, x),

with one QP drawn per image from [qp_min, qp_max], so one network serves every level. λ is a constant or, with
`lam_mode="qp"`, paired with the QP through the plain codec's own exchange rate (`train.lambda_qp`). The gradient
route (`train.routes`) says where values and gradients come from.

Resumable: `out/checkpoint.pt` (model, optimizer, step, run clock, sampler generator, RNG states, λ table, the best
weights so far and the validation log) is written atomically every `ckpt_every_s` seconds, loaded weights-only.
Validation runs the *real* codec on the centre crops of held-out training images at fixed QPs and scores the NPP
against no preprocessing by a BD-rate at equal task loss; the best-scoring weights are exported as `out/npp.pt`
(+ `npp.json` with the config and the training summary). A non-finite loss stops the run with a clear message and
leaves the last good checkpoint as it was. Runs under `torchrun` (DDP, gloo on CPU): every rank draws the same
global batch and trains on its slice; rank 0 validates, logs and saves.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from prepcodec.errors import InputError, PrepcodecError
from prepcodec.npp.model import NPP, NPP_SIZES, create_npp, grow_npp
from prepcodec.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from prepcodec.train.crops import CropBank, CropRecipe, check_recipe, load_or_build
from prepcodec.train.lambda_qp import LambdaSchedule, cached_break_even
from prepcodec.train.loop import dist_setup, log_scalars, optimizer_step
from prepcodec.train.routes import ROUTES, CodecPath, real_codec
from prepcodec.train.teacher import TASK_LOSSES, BankedTeacher, teacher_for

LAM_MODES = ("const", "qp")
SELECT = ("task_loss", "agreement", "last")  # "last": export the final weights (validation only logged)


class TrainingDiverged(PrepcodecError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class NPPTrainConfig:
    task: str = "effnet-lite0"
    codec: str = "hevc"
    size: str | None = None  # None: "small", or with `init` the init network's own architecture
    route: str = "real"
    proxy: str | None = None  # None: the codec's default proxy (proxy.zoo.default_proxy_name)
    preset: str = "fast"  # real-codec speed preset while training
    lam: float = 1.0  # λ, or the multiple of the break-even λ*(qp) with lam_mode "qp"
    lam_mode: str = "qp"
    beta: float = 0.5
    task_loss: str = "kl"  # "kl": to the teacher's outputs; "top1": CE to a classifier's top-1; "confident": a
    # detector's heads with its confident detections made certain (train.teacher.RecomputedTeacher)
    select: str = "task_loss"  # validation score that picks the exported weights: "task_loss" or "agreement"
    qp_min: int = 22
    qp_max: int = 44
    steps: int | None = 4000
    budget_s: float | None = None  # wall-clock seconds; the cosine LR runs over whichever ends first
    batch: int = 8
    lr: float = 3e-4
    head_lr_mult: float = 1.0  # the blend head's learning rate = lr x this (its logits must move by several units)
    lr_final_frac: float = 0.1
    warmup: int = 100
    crops: CropRecipe = field(default_factory=CropRecipe)
    init: str | None = None  # start from these NPP weights (a shipped name or an exported .pt)
    ckpt_every_s: float = 180.0
    val_every: int = 250
    val_qps: tuple[int, ...] = (22, 26, 30, 34, 38, 42)
    lam_qps: tuple[int, ...] = (22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44)
    lam_crops: int = 128  # training crops the break-even table is measured on
    log_every: int = 10
    image_every: int = 500
    workers: int = 2  # real-codec processes
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/npp-cls"


def check_config(cfg: NPPTrainConfig) -> None:
    """InputError for settings a user can get wrong, before any work starts."""
    from prepcodec.codecs.base import check_preset

    check_recipe(cfg.crops)
    check_preset(cfg.preset)
    if cfg.route not in ROUTES:
        raise InputError(f"unknown --route {cfg.route!r}; choose from {', '.join(ROUTES)}")
    if cfg.task_loss not in TASK_LOSSES:
        raise InputError(f"unknown --task-loss {cfg.task_loss!r}; choose from {', '.join(TASK_LOSSES)}")
    from prepcodec.tasks.registry import task_kind

    if cfg.task_loss == "top1" and task_kind(cfg.task) != "classification":
        raise InputError(f"--task-loss top1 needs a classifier; {cfg.task} distils its own heads (kl or confident)")
    if cfg.task_loss == "confident" and task_kind(cfg.task) != "detection":
        raise InputError(f"--task-loss confident needs a detector; for {cfg.task} use kl or top1")
    if cfg.select not in SELECT:
        raise InputError(f"unknown --select {cfg.select!r}; choose from {', '.join(SELECT)}")
    if cfg.lam_mode not in LAM_MODES:
        raise InputError(f"unknown --lam-mode {cfg.lam_mode!r}; choose from {', '.join(LAM_MODES)}")
    if cfg.size is not None and cfg.size not in NPP_SIZES:
        raise InputError(f"unknown --size {cfg.size!r}; choose from {', '.join(NPP_SIZES)}")
    if not (cfg.lam > 0 and cfg.beta >= 0):
        raise InputError("--lam must be > 0 and --beta >= 0")
    if not 0 <= cfg.qp_min <= cfg.qp_max <= 51:
        raise InputError(f"QP range [{cfg.qp_min}, {cfg.qp_max}] must lie within [0, 51]")
    if cfg.steps is None and cfg.budget_s is None:
        raise InputError("give --steps or --budget (or both)")
    if (cfg.steps is not None and cfg.steps < 0) or (cfg.budget_s is not None and cfg.budget_s <= 0):
        raise InputError("--steps must be >= 0 and --budget > 0")
    if cfg.batch < 1 or cfg.val_every < 0 or cfg.ckpt_every_s <= 0 or cfg.workers < 0:
        raise InputError("--batch >= 1, --val-every >= 0, --ckpt-every-s > 0 and --workers >= 0 are required")
    if not cfg.head_lr_mult > 0:
        raise InputError(f"--head-lr-mult must be > 0, got {cfg.head_lr_mult}")
    if not 0 <= cfg.lr_final_frac <= 1:
        raise InputError(f"--lr-final-frac must lie in [0, 1], got {cfg.lr_final_frac}")


def lr_at(cfg: NPPTrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `lr_final_frac` over progress in [0, 1]."""
    warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
    t = min(max(progress, 0.0), 1.0)
    return cfg.lr * warm * (cfg.lr_final_frac + (1 - cfg.lr_final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_qps(gen: torch.Generator, n: int, cfg: NPPTrainConfig) -> torch.Tensor:
    """One integer QP per image, uniform over [qp_min, qp_max]."""
    return torch.randint(cfg.qp_min, cfg.qp_max + 1, (n,), generator=gen).float()


def loss_terms(npp: torch.nn.Module, path: CodecPath, target: BankedTeacher, x: torch.Tensor, teacher: torch.Tensor,
               qp: torch.Tensor, lam: LambdaSchedule, beta: float) -> dict[str, torch.Tensor]:
    """The paper's loss and its parts (per-batch means); "loss" is what is minimised."""
    x_bar = npp(x, qp)
    x_hat, bits = path(x_bar, qp)
    rate = bits / (x.shape[2] * x.shape[3])
    d_task = target.distortion(x, x_hat, teacher)
    d_pre = (x_bar - x).square().mean(dim=(1, 2, 3))
    loss = (rate + lam(qp) * d_task + beta * d_pre).mean()
    return {"loss": loss, "bpp": rate.mean(), "d_task": d_task.mean(), "d_pre": d_pre.mean()}


class Validator:
    """Real-codec validation on held-out images: curves of (bpp, task loss, agreement) for NPP and plain."""

    def __init__(self, bank: CropBank, task, real, qps: tuple[int, ...], batch: int = 16, kind: str = "kl") -> None:
        self.bank, self.real, self.qps, self.batch = bank, real, qps, batch
        self.target = teacher_for(task, kind)
        self.plain: dict | None = None

    @torch.no_grad()
    def curve(self, npp: torch.nn.Module | None, device: torch.device) -> dict:
        x_all = torch.from_numpy(self.bank.val).permute(0, 3, 1, 2).float() / 255.0
        t_all = torch.from_numpy(self.bank.val_teacher).float()
        k = len(self.qps)
        bits_sum, loss_sum, pre_sum = [0.0] * k, [0.0] * k, [0.0] * k
        agree_parts: list[list] = [[] for _ in self.qps]
        # batches outside, QPs inside: the teacher's targets (a detector's: a forward pass, full-size heads) are the
        # same at every QP, so each batch's are computed once and dropped with it
        for s in range(0, len(x_all), self.batch):
            x, t = x_all[s : s + self.batch].to(device), t_all[s : s + self.batch].to(device)
            targets = self.target.targets(x, t)
            for j, qp in enumerate(self.qps):
                q = torch.full((len(x),), float(qp), device=device)
                x_bar = x if npp is None else npp(x, q)
                x_hat, bits = self.real(x_bar, q)
                bits_sum[j] += float(bits.sum())
                batch_loss, batch_agree = self.target.batch_terms(x, x_hat, t, targets)
                loss_sum[j] += batch_loss
                agree_parts[j].append(batch_agree)
                pre_sum[j] += float((x_bar - x).square().mean(dim=(1, 2, 3)).sum())
        n = len(x_all)
        return {"qps": list(self.qps), "bpp": [b / (n * x_all.shape[2] * x_all.shape[3]) for b in bits_sum],
                "task_loss": [v / n for v in loss_sum],
                "agreement": [self.target.agreement(parts, n) for parts in agree_parts],
                "d_pre": [v / n for v in pre_sum]}

    def score(self, npp: torch.nn.Module, device: torch.device) -> dict:
        """The NPP's curve and its BD-rates vs plain at equal task loss and at equal top-1 agreement (lower =
        better; None where the curves cannot be compared)."""
        from prepcodec.eval.bdrate import bd_rate

        if self.plain is None:
            self.plain = self.curve(None, device)
        was = npp.training
        npp.eval()
        try:
            cur = self.curve(npp, device)
        finally:
            npp.train(was)
        try:
            bd = bd_rate(self.plain["bpp"], [-math.log(v) for v in self.plain["task_loss"]],
                         cur["bpp"], [-math.log(v) for v in cur["task_loss"]], method="pchip")
        except PrepcodecError:
            bd = None
        try:  # top-1 agreement, on monotone envelopes as `compare` does (ties are common with 50 images)
            from prepcodec.eval.compare import bd_pair

            bd_agree = bd_pair(self.plain["bpp"], self.plain["agreement"], cur["bpp"], cur["agreement"])[1]
        except (PrepcodecError, ValueError):
            bd_agree = None
        return {**cur, "bd_rate_task_loss_pct": bd, "bd_rate_agreement_pct": bd_agree}


def param_groups(npp: NPP, head_lr_mult: float) -> list[dict]:
    """One group, or (head_lr_mult != 1) the blend head in a second group whose learning rate is scaled: measured in
    run E (docs/training.md), at the U-Net's rate its logits moved by 0.01 in 900 steps, so it never decided."""
    blend = getattr(npp.unet, "blend", None)
    head = list(blend.parameters()) if blend is not None and head_lr_mult != 1 else []
    if not head:
        return [{"params": list(npp.parameters())}]
    ids = {id(p) for p in head}
    rest = [p for p in npp.parameters() if id(p) not in ids]
    return [{"params": rest, "lr_mult": 1.0}, {"params": head, "lr_mult": head_lr_mult}]


def init_npp(cfg: NPPTrainConfig, device: torch.device, resumed: dict | None = None) -> NPP:
    """A fresh (identity) NPP of `cfg.size`, or the weights `cfg.init` names (their own architecture, or grown into
    `cfg.size`'s when that adds evidence amplification: `npp.model.grow_npp`); when resuming, the architecture the
    checkpoint records (so `--init` weights need not exist on the machine that resumes)."""
    if resumed is not None and "npp_config" in resumed:
        from prepcodec.npp.model import NPPConfig

        return NPP(NPPConfig.from_dict(resumed["npp_config"])).to(device).train()
    if cfg.init:
        from prepcodec.npp.zoo import load_npp

        model = load_npp(cfg.init).model
        if cfg.size is not None and NPP_SIZES[cfg.size] != model.config:
            model = grow_npp(model, cfg.size)
        return model.to(device).train()
    return create_npp(cfg.size or "small").to(device).train()


def _grid(x: torch.Tensor, x_bar: torch.Tensor) -> torch.Tensor:
    """Rows: x, x̄, |x − x̄| amplified 8x (for TensorBoard)."""
    return torch.cat([x, x_bar, ((x - x_bar).abs() * 8).clamp(0, 1)], dim=0)


def train_npp(cfg: NPPTrainConfig, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) an NPP and export the best validated weights as `out/npp.pt`; returns the summary.

    `stop_at` ends the run early (after a checkpoint) as an interruption would, without changing the schedule.
    """
    from prepcodec.codecs.pool import CodecPool
    from prepcodec.proxy.zoo import default_proxy_name, load_proxy
    from prepcodec.tasks.registry import create_task

    check_config(cfg)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked but no CUDA device is available")
    rank, world = dist_setup(cfg.device)
    if world > 1 and cfg.budget_s is not None:
        raise InputError("--budget runs in one process (give --steps under torchrun)")
    if cfg.batch % world:
        raise InputError(f"batch {cfg.batch} is not divisible by {world} processes")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cfg.device.startswith("cuda")
                          and world > 1 else cfg.device)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    state = load_checkpoint(out, map_location=device, restore_rng=False) if resume else None
    if state is not None and state.get("kind") != "npp":
        raise InputError(f"{out}/checkpoint.pt is not an NPP training checkpoint")
    npp = init_npp(cfg, device, state)
    task = create_task(cfg.task, device=str(device))
    proxy = load_proxy(cfg.proxy or default_proxy_name(cfg.codec), device=str(device))
    bank = load_or_build(cfg.crops, task, progress=progress and rank == 0)
    pool = CodecPool(workers=max(1, cfg.workers // world))
    real = real_codec(pool, cfg.codec, cfg.preset)
    path = CodecPath(cfg.route, proxy, real if cfg.route != "proxy" else None)
    opt = torch.optim.Adam(param_groups(npp, cfg.head_lr_mult), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, history, lam_table, best, val_log = 0, 0.0, [], None, None, []
    if state is not None:
        set_rng_state(state["rng"])
        npp.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["sampler_gen"])
        step, elapsed, history = state["step"], state["elapsed_s"], state["history"]
        lam_table, best, val_log = state["lam_table"], state["best"], state["val_log"]
    target = teacher_for(task, cfg.task_loss)
    if cfg.lam_mode == "qp" and lam_table is None:
        from prepcodec.codecs.registry import get_codec

        key = {"crops": cfg.crops.key(cfg.task), "task": cfg.task, "codec": cfg.codec, "preset": cfg.preset,
               "backend": get_codec(cfg.codec).availability()[1], "task_loss": cfg.task_loss}
        if cfg.lam_crops != 128:  # tables measured before the option keep their keys
            key["lam_crops"] = cfg.lam_crops
        lam_table = cached_break_even(bank, task, real, cfg.lam_qps, key, n_crops=cfg.lam_crops,
                                      progress=progress and rank == 0,
                                      distortion=target.distortion)
    lam = LambdaSchedule(cfg.lam, lam_table if cfg.lam_mode == "qp" else None)
    validator = Validator(bank, task, real, cfg.val_qps, kind=cfg.task_loss) if len(bank.val) and rank == 0 else None
    t0 = time.perf_counter() - elapsed

    def clock() -> float:
        return time.perf_counter() - t0

    end = cfg.steps if cfg.steps is not None else math.inf
    if stop_at is not None:
        end = min(end, stop_at)
    budget_end = cfg.budget_s - min(30.0, cfg.budget_s / 10) if cfg.budget_s else None
    net = torch.nn.parallel.DistributedDataParallel(npp) if world > 1 else npp
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step)

    def save() -> None:
        if rank == 0:
            save_checkpoint(out, {
                "kind": "npp", "npp_config": asdict(npp.config), "model": npp.state_dict(),
                "optimizer": opt.state_dict(), "sampler_gen": gen.get_state(),
                "step": step, "elapsed_s": clock(), "history": history, "lam_table": lam_table, "best": best,
                "val_log": val_log, "config": asdict(cfg),
            })

    def validate() -> None:
        nonlocal best
        v = validator.score(npp, device)
        entry = {"step": step, "t": round(clock(), 1), **v}
        val_log.append(entry)
        for k in ("bd_rate_task_loss_pct", "bd_rate_agreement_pct"):
            if v[k] is not None:
                writer.add_scalar(f"val/{k}", v[k], step)
        bd = None if cfg.select == "last" else v["bd_rate_agreement_pct" if cfg.select == "agreement"
                                                  else "bd_rate_task_loss_pct"]
        writer.add_scalar("val/mean_agreement", float(np.mean(v["agreement"])), step)
        writer.add_scalar("val/mean_bpp", float(np.mean(v["bpp"])), step)
        if bd is not None and (best is None or bd < best["score"]):
            best = {"score": bd, "step": step, "state": {k: t.detach().clone() for k, t in npp.state_dict().items()}}
        keys = ("bd_rate_task_loss_pct", "bd_rate_agreement_pct")
        shown = {k: None if v[k] is None else round(v[k], 2) for k in keys}
        bar.write(f"val step {step}: BD-rate at equal task loss {shown['bd_rate_task_loss_pct']} %, at equal "
                  f"agreement {shown['bd_rate_agreement_pct']} %, "
                  f"agreement {[round(a, 2) for a in v['agreement']]}, bpp {[round(b, 3) for b in v['bpp']]}")

    per_rank = cfg.batch // world
    last_save = clock()
    name = Path(cfg.init).stem if cfg.init else cfg.size or "small"
    bar = tqdm(total=cfg.steps, initial=step, desc=f"npp {name} {cfg.task} "
               f"{cfg.codec}/{cfg.route}",
               disable=not progress or rank != 0, unit="step")
    try:
        if validator is not None and not val_log:
            validate()
        while step < end and (budget_end is None or clock() < budget_end):
            progress_t = step / cfg.steps if cfg.steps else 0.0
            if budget_end is not None:
                progress_t = max(progress_t, clock() / budget_end)
            lr = lr_at(cfg, step, progress_t)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            pick = torch.randint(0, len(bank.train), (cfg.batch,), generator=gen)
            qp = sample_qps(gen, cfg.batch, cfg)
            sl = slice(rank * per_rank, (rank + 1) * per_rank)
            x, teacher = bank.batch(pick[sl], device)
            terms = loss_terms(net, path, target, x, teacher, qp[sl].to(device), lam, cfg.beta)
            if not torch.isfinite(terms["loss"]):
                raise TrainingDiverged(f"non-finite loss at step {step + 1} ({terms['loss'].item()}); the last good "
                                       f"checkpoint in {out} is kept: resume it with a lower --lr")
            vals = optimizer_step(opt, terms, npp.parameters(), clip=1.0)
            step += 1
            history.append(vals["loss"])
            bar.update(1)
            if writer is not None and step % cfg.log_every == 0:
                log_scalars(writer, {**vals, "lr": lr}, step)
                bar.set_postfix(loss=f"{vals['loss']:.3f}", bpp=f"{vals['bpp']:.3f}", d_task=f"{vals['d_task']:.3f}")
            if writer is not None and step % cfg.image_every == 0:
                with torch.no_grad():
                    xv = torch.from_numpy(bank.val[:4] if len(bank.val) else bank.train[:4]).permute(0, 3, 1, 2)
                    xv = xv.float().div(255).to(device)
                    writer.add_images("val/x_xbar_diff8_qp34", _grid(xv, npp(xv, 34.0)), step)
            if validator is not None and cfg.val_every and step % cfg.val_every == 0:
                validate()
            if clock() - last_save >= cfg.ckpt_every_s:
                save()
                last_save = clock()
        if validator is not None and (not val_log or val_log[-1]["step"] != step):
            validate()
        save()
    finally:
        bar.close()
        pool.close()
        if writer is not None:
            writer.close()

    summary = _summary(cfg, bank, step, clock(), history, lam_table, best, val_log, device, world)
    if rank == 0:
        from prepcodec.npp.zoo import export_npp

        if best is not None and cfg.select != "last":
            npp.load_state_dict(best["state"])
        export_npp(npp, out / "npp.pt", training=summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _summary(cfg: NPPTrainConfig, bank: CropBank, step: int, clock_s: float, history: list[float],
             lam_table: dict | None, best: dict | None, val_log: list[dict], device: torch.device, world: int) -> dict:
    return {
        "task": cfg.task, "codec": cfg.codec, "route": cfg.route, "preset": cfg.preset, "lam": cfg.lam,
        "lam_mode": cfg.lam_mode, "beta": cfg.beta, "task_loss": cfg.task_loss, "select": cfg.select,
        "qp_range": [cfg.qp_min, cfg.qp_max],
        "data": {"datasets": list(cfg.crops.datasets), "train_images": bank.train_images,
                 "train_crops": len(bank.train), "val_images": len(bank.val), "crop": cfg.crops.crop},
        "steps": step, "batch": cfg.batch, "run_clock_s": round(clock_s, 1),
        "cpu_hours": round(clock_s * (os.cpu_count() or 1) / 3600, 3) if device.type == "cpu" else None,
        "device": str(device), "world_size": world, "init": cfg.init,
        "final_loss_mean_last100": float(np.mean(history[-100:])) if history else None,
        "lam_table": lam_table, "best_step": step if cfg.select == "last" else best["step"] if best else None,
        "best_val_score_pct": None if cfg.select == "last" else best["score"] if best else None,
        "val_log": list(val_log),
        "config": asdict(cfg),
    }
