"""Training crops for the NPP and their teacher outputs, computed once per crop and cached.

The NPP learns from random crops (with flips) of the training splits only; evaluation splits, Kodak and the bundled
samples are refused, so no number in `docs/results.md` is measured on an image the network saw. A *crop bank* is a
fixed list of crop boxes drawn from a seed: the teacher's output on each uncompressed crop (the distillation
target) is computed once and cached under the prepcodec cache folder, keyed by the recipe and the task, so a
resumed or repeated run pays for it once. Whole images (not crops) are held out for validation: every crop of a
held-out image is kept out of training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from prepcodec.errors import InputError
from prepcodec.train.teacher import teacher_for

TRAINING_SETS = ("imagenet-train", "photos-train", "coco-train")  # the splits a network may learn from


@dataclass(frozen=True)
class CropRecipe:
    """Which crops a run trains and validates on (all deterministic given the seed)."""

    datasets: tuple[str, ...] = ("imagenet-train",)
    crop: int = 192
    crops_per_image: int = 8
    val_images: int = 50  # whole images held out (their centre crop validates)
    seed: int = 0
    val_crop: int = 0  # side of the validation centre crops; 0 = `crop`. 256 = whole imagenet-train images, which
    # is what the evaluation feeds the codec (the classifier then sees their centre 224 after its own resize)

    @property
    def val_side(self) -> int:
        return self.val_crop or self.crop

    def key(self, task: str) -> str:
        fields = asdict(self)
        if not self.val_crop:  # recipes from before the field keep their cached banks
            fields.pop("val_crop")
        text = json.dumps({**fields, "task": task, "v": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def refuse_evaluation_sets(datasets: tuple[str, ...]) -> None:
    """InputError unless every data set (plain or sliced) is a training split."""
    from prepcodec.data.datasets import base_name

    bad = [d for d in datasets if base_name(d) not in TRAINING_SETS]
    if bad:
        raise InputError(f"{', '.join(bad)}: not a training split; the NPP trains on {', '.join(TRAINING_SETS)} "
                         "(optionally sliced, e.g. imagenet-train[:400]) and is evaluated on the others")
    if not datasets:
        raise InputError("no training data set given")


def check_recipe(recipe: CropRecipe) -> None:
    refuse_evaluation_sets(recipe.datasets)
    if recipe.crop < 32 or recipe.crop % 16:
        raise InputError(f"--crop must be a multiple of 16 and >= 32, got {recipe.crop}")
    if recipe.val_crop and (recipe.val_crop < 32 or recipe.val_crop % 16):
        raise InputError(f"--val-crop must be 0 or a multiple of 16 and >= 32, got {recipe.val_crop}")
    if recipe.crops_per_image < 1 or recipe.val_images < 0:
        raise InputError("--crops-per-image must be >= 1 and --val-images >= 0")


@dataclass
class CropBank:
    """uint8 crops (N, S, S, 3) of training images + teacher outputs, and the validation crops likewise."""

    train: np.ndarray
    train_teacher: np.ndarray  # (N, ...) float16
    val: np.ndarray
    val_teacher: np.ndarray
    train_images: int
    val_ids: list[str]

    def batch(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Float crops in [0, 1] (B, 3, S, S) and float32 teacher targets of the given training indices."""
        idx = indices.cpu().numpy()
        x = torch.from_numpy(self.train[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        return x.to(device), torch.from_numpy(self.train_teacher[idx]).float().to(device)


def _images(recipe: CropRecipe) -> list[tuple[str, np.ndarray]]:
    from prepcodec.data.datasets import get_dataset

    out = []
    for name in recipe.datasets:
        ds = get_dataset(name)
        out.extend((f"{name}/{it.id}", ds.load(it)) for it in ds.items)
    if not out:
        raise InputError(f"data sets {', '.join(recipe.datasets)} hold no images")
    return out


def _random_crop(rng: np.random.Generator, rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h < side or w < side:  # small photos: upscale so the crop fits (rare; the training splits are >= 256)
        from PIL import Image

        s = side / min(h, w)
        rgb = np.asarray(Image.fromarray(rgb).resize((max(side, round(w * s)), max(side, round(h * s))),
                                                     Image.Resampling.BICUBIC))
        h, w = rgb.shape[:2]
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = rgb[top : top + side, left : left + side]
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


def _centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h < side or w < side:
        return _random_crop(np.random.default_rng(0), rgb, side)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def build_bank(recipe: CropRecipe, task, progress: bool = True) -> CropBank:
    """Draw the crops and compute the teacher's outputs (no cache)."""
    check_recipe(recipe)
    images = _images(recipe)
    order = np.random.default_rng(recipe.seed).permutation(len(images))
    n_val = min(recipe.val_images, len(images) - 1)
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    rng = np.random.default_rng(recipe.seed + 1)
    train = np.stack([_random_crop(rng, images[i][1], recipe.crop) for i in train_idx
                      for _ in range(recipe.crops_per_image)])
    val = (np.stack([_centre_crop(images[i][1], recipe.val_side) for i in val_idx]) if val_idx
           else np.zeros((0, recipe.val_side, recipe.val_side, 3), np.uint8))
    teacher = teacher_for(task)
    return CropBank(
        train=train, train_teacher=teacher.rows(train, progress, "teacher (train crops)"),
        val=val, val_teacher=teacher.rows(val, progress, "teacher (val crops)") if len(val) else
        np.zeros((0, 1), np.float16),
        train_images=len(train_idx), val_ids=[images[i][0] for i in val_idx],
    )


def _cache_path(recipe: CropRecipe, task_name: str) -> Path:
    from prepcodec.tasks.weights import cache_dir

    return cache_dir() / "npp-crops" / f"{task_name}-{recipe.key(task_name)}.npz"


def load_or_build(recipe: CropRecipe, task, progress: bool = True) -> CropBank:
    """The cached crop bank of `recipe` for `task`, built (and cached atomically) on first use."""
    from prepcodec.atomic import atomic_path

    check_recipe(recipe)
    path = _cache_path(recipe, task.name)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return CropBank(z["train"], z["train_teacher"], z["val"], z["val_teacher"],
                                int(z["train_images"]), [str(s) for s in z["val_ids"]])
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    bank = build_bank(recipe, task, progress)
    with atomic_path(path) as tmp:
        np.savez(tmp, train=bank.train, train_teacher=bank.train_teacher, val=bank.val, val_teacher=bank.val_teacher,
                 train_images=bank.train_images, val_ids=np.array(bank.val_ids, dtype=str))
    return bank
