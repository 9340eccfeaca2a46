"""Reading tensor files a user can hand us (weights, checkpoints) without running code, with one-line errors.

A `.pt` file is a pickle, and a pickle is a program: `torch.load(weights_only=True)` refuses everything but tensors
and plain containers. Every loader in prepcodec goes through `safe_torch_load`, so a crafted, empty, truncated or
foreign file gives the same clear message instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prepcodec.errors import InputError


def safe_torch_load(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)`; InputError naming `what` and the file when it is missing or refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except Exception as exc:  # UnpicklingError, zip errors, EOFError, RuntimeError of a truncated file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} {path} is not a file prepcodec wrote, or it is damaged "
                         f"(refused by the weights-only loader: {first[:160]})") from None
