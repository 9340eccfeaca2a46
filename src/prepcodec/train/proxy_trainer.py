"""Train a QP-conditioned proxy to imitate a real codec per image: its bits and its decoded image.

loss = w_rate * |log2 bits_proxy - log2 bits_codec|  (per image, mean)
     + w_rec  * ||x_hat_proxy - x_hat_codec||^2      (per pixel, mean)
     + w_rd   * (bpp_proxy + lambda_rd * ||x_hat_proxy - x||^2)   (a small RD term of its own, keeps it a codec)

Targets come from `proxy.targets` (a cached real-codec target set). Resumable: `out/checkpoint.pt` every
`ckpt_every` steps with model, optimizer, scheduler, step and RNG states; `resume=True` continues bit-exactly in a
single process. Runs under `torchrun` (DDP; gloo on CPU, nccl on CUDA): every rank draws the same global batch from
one shared generator and trains on its own slice; rank 0 logs and saves.
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
import torch.nn.functional as F
from tqdm import tqdm

from prepcodec.errors import InputError
from prepcodec.proxy.models import ProxyCodec, make_config
from prepcodec.proxy.targets import TargetRecipe, TargetSampler, load_or_build
from prepcodec.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    codec: str = "hevc"
    size: str = "small"
    steps: int = 2000
    batch: int = 8
    lr: float = 1e-3
    lr_final_frac: float = 0.1
    w_rate: float = 2.0
    w_rec: float = 1000.0
    w_rd: float = 0.02
    lambda_rd: float = 100.0
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/proxy-hevc-small"
    recipe: TargetRecipe = field(default_factory=TargetRecipe)


def loss_terms(
    model: torch.nn.Module, x: torch.Tensor, qp: torch.Tensor, bits: torch.Tensor, x_codec: torch.Tensor,
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    """The three loss terms and their weighted sum ("loss")."""
    x_hat, bits_p = model(x, qp)
    rate = (torch.log2(bits_p.clamp_min(1.0)) - torch.log2(bits.clamp_min(1.0))).abs().mean()
    rec = F.mse_loss(x_hat, x_codec)
    npix = x.shape[2] * x.shape[3]
    rd = (bits_p / npix).mean() + cfg.lambda_rd * F.mse_loss(x_hat, x)
    loss = cfg.w_rate * rate + cfg.w_rec * rec + cfg.w_rd * rd
    return {"loss": loss, "rate_l1_log2": rate, "rec_mse": rec, "rd": rd}


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        t = min(step / max(cfg.steps, 1), 1.0)
        return cfg.lr_final_frac + (1 - cfg.lr_final_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _dist_setup(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train_proxy(
    cfg: TrainConfig, resume: bool = False, targets: dict[str, np.ndarray] | None = None, stop_at: int | None = None
) -> dict:
    """Train (or resume) and export `out/<codec>-<size>.pt`; returns the training summary.

    `stop_at` ends the run early (after a checkpoint) as an interruption would, without changing the schedule.
    """
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked but no CUDA device is available")
    rank, world = _dist_setup(cfg.device)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cfg.device.startswith("cuda") and world > 1
                          else cfg.device)
    if cfg.batch % world:
        raise InputError(f"batch {cfg.batch} is not divisible by {world} processes")
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out)
    if targets is None:
        targets = load_or_build(cfg.recipe)
    sampler = TargetSampler(targets)
    gen = torch.Generator().manual_seed(cfg.seed)

    model = ProxyCodec(make_config(cfg.codec, cfg.size)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    step, elapsed, history = 0, 0.0, []
    if resume:
        state = load_checkpoint(out, map_location=device)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["sampler_gen"])
            step, elapsed, history = state["step"], state["elapsed_s"], state["history"]
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step)
    per_rank = cfg.batch // world
    model.train()
    t0 = time.perf_counter() - elapsed
    bar = tqdm(total=cfg.steps, initial=step, desc=f"proxy {cfg.codec}-{cfg.size}", disable=rank != 0)
    end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    while step < end:
        x, qp, bits, x_codec = sampler.sample(cfg.batch, gen)
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        x, qp, bits, x_codec = (t[sl].to(device) for t in (x, qp, bits, x_codec))
        terms = loss_terms(net, x, qp, bits, x_codec, cfg)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        vals = {k: v.item() for k, v in terms.items()}
        history.append(vals["loss"])
        bar.update(1)
        if writer is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            for k, v in vals.items():
                writer.add_scalar(f"train/{k}", v, step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{vals['loss']:.3f}", rate=f"{vals['rate_l1_log2']:.3f}")
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == end):
            save_checkpoint(out, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "sampler_gen": gen.get_state(), "step": step, "elapsed_s": time.perf_counter() - t0,
                "history": history, "config": asdict(cfg),
            })
    bar.close()
    wall = time.perf_counter() - t0
    tail = history[-50:]
    summary = {
        "steps": step, "wall_s": round(wall, 1), "device": str(device), "world_size": world,
        "first_loss": history[0] if history else None, "final_loss_mean_last50": float(np.mean(tail)) if tail else None,
        "targets": {"recipe_key": cfg.recipe.key(), "n": len(sampler), **asdict(cfg.recipe)},
        "config": {k: v for k, v in asdict(cfg).items() if k != "recipe"},
    }
    if rank == 0:
        from prepcodec.proxy.zoo import export_weights

        export_weights(model, out / f"{cfg.codec}-{cfg.size}.pt", training=summary)
        writer.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
