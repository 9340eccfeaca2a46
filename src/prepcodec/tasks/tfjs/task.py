"""Shared plumbing of the tasks backed by a TF.js graph: model loading, device moves, input validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from prepcodec.errors import InputError
from prepcodec.tasks.base import Task
from prepcodec.tasks.tfjs.module import GraphModule, load_tfjs_model
from prepcodec.tasks.weights import npm_model_file


def check_images(images: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse anything that is not a float NCHW RGB batch in [0, 1] (one-line InputError)."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name}: images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise InputError(f"{name}: images must be float in [0, 1], got dtype {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name}: images must be N x 3 x H x W, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] < 1 or images.shape[3] < 1:
        raise InputError(f"{name}: empty image batch {tuple(images.shape)}")
    lo, hi = float(images.detach().min()), float(images.detach().max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name}: images contain NaN or infinite values")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{name}: pixel values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] (divide by 255?)")
    return images


class TfjsTask(Task):
    """A Task whose network is a converted TF.js graph cut at `outputs` (fed at `inputs`, default placeholders)."""

    model_file: str  # e.g. "models/centernet.json"
    outputs: Sequence[str]
    inputs: Sequence[str] | None = None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        npm_model_file(self.model_file.removesuffix(".json") + ".bin")  # WeightsMissing naming the fetch command
        self.net: GraphModule = load_tfjs_model(npm_model_file(self.model_file), self.outputs, self.inputs)
        self.device = torch.device(device)
        self.net.to(self.device)

    def to(self, device: str | torch.device) -> TfjsTask:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return check_images(images, self.name).to(self.device)
