"""Real-codec training targets for the proxy: random crops of training photos, round-tripped once and cached.

A real encode at the evaluation preset (x265 veryslow) costs far more than a proxy training step, so the target set
is fixed: `TargetRecipe` draws K crops (photos-train + imagenet-train; never Kodak, the proxy's test set), gives
each several random integer QPs in [22, 47], runs the codec's batch round-trip once and stores everything as a
compressed uint8 .npz under the user cache dir, keyed by a hash of the recipe. Training then samples from it.
On a machine with many cores, `proxy.stream` generates fresh targets during training instead; both kinds of
target source give the trainer `available()` and `get(indices)`, and `train_indices` keeps held-out targets out
of training batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prepcodec.atomic import atomic_path
from prepcodec.errors import InputError
from prepcodec.tasks.weights import cache_dir as user_cache_dir

RoundTrip = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
TRAIN_DATASETS = ("photos-train", "imagenet-train")


@dataclass(frozen=True)
class TargetRecipe:
    """What a cached target set contains; its hash names the cache file."""

    codec: str = "hevc"
    crops: int = 640
    crop_size: int = 128
    qps_per_crop: int = 2
    qp_min: int = 22
    qp_max: int = 47
    preset: str = "eval"
    seed: int = 0
    datasets: tuple[str, ...] = TRAIN_DATASETS

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """`$PREPCODEC_CACHE/proxy-targets` (default ~/.cache/prepcodec/proxy-targets)."""
    return user_cache_dir() / "proxy-targets"


def refuse_test_set(datasets: tuple[str, ...]) -> None:
    """InputError if the data sets name Kodak (plain or sliced): it is the proxies' test set, never trained on."""
    from prepcodec.data.datasets import base_name

    if "kodak" in {base_name(d) for d in datasets}:
        raise InputError("kodak is the proxy's test set; train on other images")


def draw_crops(recipe: TargetRecipe) -> np.ndarray:
    """K random crops (uint8, K x S x S x 3) spread evenly over the training images of `recipe.datasets`."""
    from prepcodec.data.datasets import get_dataset

    refuse_test_set(recipe.datasets)
    rng = np.random.default_rng(recipe.seed)
    sources = [(ds, item) for name in recipe.datasets for ds in [get_dataset(name)] for item in ds.items]
    if not sources:
        raise InputError("no training images found for the proxy targets")
    order = rng.permutation(len(sources))
    per_image = -(-recipe.crops // len(sources))
    s = recipe.crop_size
    crops: list[np.ndarray] = []
    for i in tqdm(order, desc="crops", unit="img", leave=False):
        if len(crops) >= recipe.crops:
            break
        ds, item = sources[i]
        img = ds.load(item)
        h, w = img.shape[:2]
        if h < s or w < s:
            continue
        for _ in range(per_image):
            y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crops.append(img[y0 : y0 + s, x0 : x0 + s])
    if len(crops) < recipe.crops:
        raise InputError(f"only {len(crops)} crops of {s}px could be drawn, {recipe.crops} asked")
    return np.stack(crops[: recipe.crops])


def codec_roundtrip(codec: str, preset: str = "eval") -> RoundTrip:
    """`f(x NCHW [0,1], qp (N,)) -> (x_hat, bits)` through the real codec's batch pool; QP mapped to its level."""
    from prepcodec.codecs import default_pool, get_codec

    ok, why = get_codec(codec).availability()
    if not ok:
        from prepcodec.errors import BackendUnavailable

        raise BackendUnavailable(f"{codec}: {why}")

    def run(x: torch.Tensor, qp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return default_pool().roundtrip_tensor(codec, x, qp_to_levels(codec, qp), preset=preset)

    return run


def qp_to_levels(codec: str, qp: np.ndarray | torch.Tensor) -> list[float]:
    """HEVC-axis QPs -> the codec's own levels (identity for hevc; e.g. JPEG quality via the shared QP axis)."""
    from prepcodec.codecs import get_codec

    qps = [float(q) for q in np.asarray(qp, dtype=np.float64).reshape(-1)]
    if codec == "hevc":
        return qps
    c = get_codec(codec)
    return [float(c.from_hevc_qp(q)) for q in qps]


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float (N,3,H,W) in [0,1]; read-only inputs (np.asarray of a PIL image) are copied."""
    return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def build_targets(
    recipe: TargetRecipe, roundtrip: RoundTrip | None = None, crops: np.ndarray | None = None, batch: int = 32
) -> dict[str, np.ndarray]:
    """Round-trip every (crop, QP) pair once; returns arrays crops, idx, qp, bits, x_hat."""
    roundtrip = roundtrip or codec_roundtrip(recipe.codec, recipe.preset)
    crops = draw_crops(recipe) if crops is None else crops
    rng = np.random.default_rng(recipe.seed + 1)
    idx = np.repeat(np.arange(len(crops)), recipe.qps_per_crop)
    qp = rng.integers(recipe.qp_min, recipe.qp_max + 1, size=len(idx)).astype(np.float32)
    bits = np.zeros(len(idx), np.float32)
    x_hat = np.zeros((len(idx), *crops.shape[1:]), np.uint8)
    for s in tqdm(range(0, len(idx), batch), desc=f"{recipe.codec} targets", unit="batch"):
        sl = slice(s, s + batch)
        xh, b = roundtrip(to_tensor(crops[idx[sl]]), torch.from_numpy(qp[sl]))
        x_hat[sl], bits[sl] = to_uint8(xh), b.detach().cpu().numpy()
    return {"crops": crops, "idx": idx, "qp": qp, "bits": bits, "x_hat": x_hat}


def load_or_build(recipe: TargetRecipe, roundtrip: RoundTrip | None = None) -> dict[str, np.ndarray]:
    """The cached target set for `recipe`, building (and atomically saving) it on first use."""
    path = cache_dir() / f"{recipe.codec}-{recipe.key()}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = build_targets(recipe, roundtrip)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, recipe=json.dumps(asdict(recipe)), **data)
    return data


def held_out(n: int, every: int) -> np.ndarray:
    """Indices of the held-out (validation) targets among the first n: 0, every, 2*every, ... (none if every=0)."""
    return np.arange(0, n, every) if every else np.zeros(0, np.int64)


def train_indices(n: int, batch: int, gen: torch.Generator, holdout_every: int = 0) -> np.ndarray:
    """`batch` random indices among the first n targets, never a held-out one (see `held_out`).

    Drawn from `gen` (checkpointed), so a resumed run draws the same batches. With no hold-out this is exactly
    `torch.randint(n, (batch,))`.
    """
    h = holdout_every
    n_train = n - len(held_out(n, h))
    if n_train < 1:
        raise InputError(f"no training targets among the first {n} (every {h}th is held out)")
    k = torch.randint(n_train, (batch,), generator=gen).numpy()
    return k if not h else (k // (h - 1)) * h + k % (h - 1) + 1


class TargetSampler:
    """A fixed (cached) target set with the interface of `proxy.stream.StreamTargets`: `available()`, `get()`."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data

    def __len__(self) -> int:
        return len(self.data["idx"])

    def available(self) -> int:
        """All targets are ready from the start."""
        return len(self)

    def get(self, pick: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, qp, bits, x_hat) for target indices `pick`."""
        return (
            to_tensor(self.data["crops"][self.data["idx"][pick]]),
            torch.from_numpy(self.data["qp"][pick]),
            torch.from_numpy(self.data["bits"][pick]),
            to_tensor(self.data["x_hat"][pick]),
        )

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, qp, bits, x_hat) for `batch` random targets."""
        return self.get(train_indices(len(self), batch, gen))
