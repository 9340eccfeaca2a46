"""Atomic, resumable training checkpoints shared by every trainer (proxy now, NPP later).

A checkpoint holds whatever a trainer puts in its state dict (model, optimizer, scheduler, step, ...) plus every
RNG state, so that resuming continues bit-exactly. Writes go to a temporary file and are `os.replace`d in, so a
kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prepcodec.atomic import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch: Python, NumPy, torch CPU and (when present) CUDA."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to `path` atomically (see `prepcodec.atomic`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_checkpoint(out_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` + RNG states as `out_dir/checkpoint.pt` atomically."""
    return atomic_torch_save({**state, "rng": rng_state()}, Path(out_dir) / CHECKPOINT_NAME)


def load_checkpoint(out_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint in `out_dir` with RNG states restored, or None when there is none."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    state = torch.load(path, map_location=map_location, weights_only=False)
    set_rng_state(state["rng"])
    return state
