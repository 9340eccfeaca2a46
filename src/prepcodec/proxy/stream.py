"""Streaming real-codec targets: fresh random crops round-tripped by the real codec while the proxy trains.

The cached target set (`proxy.targets`) is small because a real encode at the eval preset costs far more than a
proxy step. On a machine with many cores the codec keeps up with training instead: `StreamTargets` draws N random
crops up front (one random integer QP each), a background thread round-trips them in order through a `CodecPool`,
and the trainer samples from the prefix that is done, so the set grows while training runs. Crops and QPs depend
only on the images and the seed, so a rerun (or a resume) regenerates the same targets; which of them a given step
sees depends on how fast the codec was, so streaming runs are not bit-reproducible.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prepcodec.errors import InputError
from prepcodec.proxy.targets import TRAIN_DATASETS, qp_to_levels, refuse_test_set, to_tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff")
CHUNK_PER_WORKER = 8  # crops per worker per pool call: large enough to keep every worker busy


@dataclass(frozen=True)
class StreamRecipe:
    """What a streaming run generates: `crops` random crops, one random integer QP each, at `preset`."""

    codec: str = "hevc"
    crops: int = 40000
    crop_size: int = 128
    qp_min: int = 22
    qp_max: int = 47
    preset: str = "eval"
    seed: int = 0
    datasets: tuple[str, ...] = TRAIN_DATASETS
    images: str | None = None  # a folder of images instead of `datasets` (a GPU machine without the shared data)
    workers: int | None = None  # codec processes (None: one per CPU core)


def _group_name(path: Path) -> str:
    """`photos-train-0012.jpg` -> `photos-train`: files that differ only by a trailing index form one group."""
    return re.sub(r"-\d+$", "", path.stem)


def load_sources(recipe: StreamRecipe) -> dict[str, list[np.ndarray]]:
    """RGB uint8 images by group: per data set, or per file-name group of `recipe.images` (see `_group_name`).

    Crops are drawn round-robin over the groups, so e.g. the 69 large photos and the 500 small ImageNet images
    each give half of the crops. Kodak is refused: it is the proxy's test set.
    """
    groups: dict[str, list[np.ndarray]] = {}
    if recipe.images is not None:
        folder = Path(recipe.images)
        if not folder.is_dir():
            raise InputError(f"image folder {folder} not found")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(p) as im:
                    groups.setdefault(_group_name(p), []).append(np.asarray(im.convert("RGB")))
    else:
        from prepcodec.data.datasets import get_dataset

        refuse_test_set(recipe.datasets)
        for name in recipe.datasets:
            ds = get_dataset(name)
            groups[name] = [ds.load(item) for item in ds.items]
    s = recipe.crop_size
    groups = {k: kept for k, v in groups.items() if (kept := [im for im in v if min(im.shape[:2]) >= s])}
    if not groups:
        where = recipe.images or ", ".join(recipe.datasets)
        raise InputError(f"no images of at least {s}x{s} pixels in {where}")
    return groups


def draw_balanced(images: dict[str, list[np.ndarray]], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random crops (uint8, n x size x size x 3): crop i from group i mod #groups (sorted), a random image of it."""
    names = sorted(images)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pool = images[names[i % len(names)]]
        img = pool[int(rng.integers(len(pool)))]
        h, w = img.shape[:2]
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        out[i] = img[y0 : y0 + size, x0 : x0 + size]
    return out


class StreamTargets:
    """Crops + QPs drawn up front; `start()` fills their real-codec bits and decodes, in order, in a thread.

    `available()` is how many leading targets are done; `get(pick)` returns them as training tensors. The same
    interface as `proxy.targets.TargetSampler`, so the trainer's loop does not care where targets come from.
    """

    def __init__(self, recipe: StreamRecipe, images: dict[str, list[np.ndarray]] | None = None):
        if recipe.crops < 1:
            raise InputError(f"streaming needs at least 1 crop, got {recipe.crops}")
        if recipe.workers is not None and recipe.workers < 1:
            raise InputError(f"--workers must be >= 1, got {recipe.workers}")
        self.recipe = recipe
        rng = np.random.default_rng(recipe.seed)
        self.crops = draw_balanced(images or load_sources(recipe), recipe.crops, recipe.crop_size, rng)
        self.qp = rng.integers(recipe.qp_min, recipe.qp_max + 1, size=len(self.crops)).astype(np.float32)
        self.bits = np.zeros(len(self.crops), np.float32)
        self.x_hat = np.zeros_like(self.crops)
        self.done = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def start(self, deadline: float | None = None) -> None:
        """Start generating (once); stops when all are done, at `deadline` (perf_counter s) or on `close()`."""
        from prepcodec.codecs import get_codec

        if self._thread is not None:
            return
        ok, why = get_codec(self.recipe.codec).availability()
        if not ok:
            from prepcodec.errors import BackendUnavailable

            raise BackendUnavailable(f"{self.recipe.codec}: {why}")
        self._thread = threading.Thread(target=self._run, args=(deadline,), name="proxy-targets", daemon=True)
        self._thread.start()

    def _run(self, deadline: float | None) -> None:
        from prepcodec.codecs import CodecPool

        levels = qp_to_levels(self.recipe.codec, self.qp)
        pool = CodecPool(self.recipe.workers)
        chunk = max(pool.workers, 1) * CHUNK_PER_WORKER
        try:
            while self.done < len(self) and not self._stop.is_set():
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                sl = slice(self.done, min(self.done + chunk, len(self)))
                res = pool.roundtrip(self.recipe.codec, list(self.crops[sl]), levels[sl], preset=self.recipe.preset)
                self.x_hat[sl] = np.stack([r.decoded for r in res])
                self.bits[sl] = [r.bits for r in res]
                self.done = sl.stop  # published after the arrays are filled
        except BaseException as e:  # noqa: BLE001 - re-raised in the training thread by available()
            self.error = e
        finally:
            pool.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def available(self) -> int:
        """Number of leading targets with real-codec results; re-raises an error of the generator thread."""
        if self.error is not None:
            raise self.error
        return self.done

    def wait_for(self, n: int, poll_s: float = 0.2) -> int:
        """Block until `n` targets are done or generation has ended; returns the number available."""
        while self.available() < n and self.running:
            time.sleep(poll_s)
        return self.available()

    def get(self, pick: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, qp, bits, x_hat) for target indices `pick` (all < `available()`)."""
        return (to_tensor(self.crops[pick]), torch.from_numpy(self.qp[pick]), torch.from_numpy(self.bits[pick]),
                to_tensor(self.x_hat[pick]))

    def close(self, timeout: float | None = None) -> None:
        """Stop after the chunk in flight and wait for the thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
