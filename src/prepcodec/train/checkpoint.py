"""Atomic, resumable training checkpoints shared by every trainer (proxy and NPP), loaded without running code.

A checkpoint holds whatever a trainer puts in its state dict (model, optimizer, scheduler, step, ...) plus every
RNG state, so that resuming continues bit-exactly. Writes go to a temporary file and are `os.replace`d in, so a
kill mid-save leaves the previous checkpoint intact. A checkpoint is a file a user can hand us (`--resume` on a
folder someone else wrote), and a pickle is code: it is read with `torch.load(weights_only=True)`, so RNG states
are stored as tensors and plain lists, and a file that is not a checkpoint gets a one-line error.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prepcodec.atomic import atomic_path
from prepcodec.errors import InputError
from prepcodec.safe_load import safe_torch_load

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch (Python, NumPy, torch CPU and CUDA), as weights-only-loadable values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
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


def load_checkpoint(out_dir: str | os.PathLike, map_location: str | torch.device = "cpu",
                    restore_rng: bool = True) -> dict[str, Any] | None:
    """The checkpoint in `out_dir` with RNG states restored (unless `restore_rng` is False: then the caller calls
    `set_rng_state(state["rng"])` once it has built what consumes random numbers), or None when there is none."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    state = safe_torch_load(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "rng" not in state:
        raise InputError(f"checkpoint {path} is not a prepcodec training checkpoint")
    if restore_rng:
        set_rng_state(state["rng"])
    return state
