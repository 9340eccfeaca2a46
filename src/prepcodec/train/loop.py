"""Pieces every trainer's loop shares: the process group, one optimiser step, the logged scalars."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def dist_setup(device: str) -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group (nccl on CUDA, gloo on CPU) when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def optimizer_step(opt: torch.optim.Optimizer, terms: dict[str, torch.Tensor], params: Iterable[torch.Tensor],
                   clip: float) -> dict[str, float]:
    """Backward of terms["loss"], gradient-norm clipping, one step; the terms as floats."""
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(list(params), clip)
    opt.step()
    return {k: v.item() for k, v in terms.items()}


def log_scalars(writer, values: dict[str, float], step: int, prefix: str = "train") -> None:
    """Every value as `prefix/name` at `step` (TensorBoard)."""
    for k, v in values.items():
        writer.add_scalar(f"{prefix}/{k}", v, step)
