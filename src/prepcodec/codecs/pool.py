"""Batch round-trips through a persistent process pool of single-threaded encoders.

Training calls the real codec every step, so worker start-up must be paid once: the pool is created once and
reused (`default_pool`). Workers start with `spawn` (torch + fork is unsafe) and pin every threading library to
one thread so N workers use N cores, not N x cores.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prepcodec.codecs.base import check_preset
from prepcodec.codecs.registry import get_codec
from prepcodec.errors import InputError

if TYPE_CHECKING:
    import torch

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class RoundTrip:
    """One image through a codec: the real bytes and what a decoder makes of them."""

    data: bytes
    decoded: np.ndarray  # uint8 HxWx3, same shape as the input

    @property
    def bits(self) -> int:
        return 8 * len(self.data)

    @property
    def bpp(self) -> float:
        h, w = self.decoded.shape[:2]
        return self.bits / (h * w)


PARENT_POLL_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (kill -9 leaves no time to stop the pool) exits instead of living on as an
    orphan: it is re-parented, so its parent pid changes."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="prepcodec-parent-watch", daemon=True).start()


def _worker_init(parent: int | None = None) -> None:
    for var in THREAD_ENV_VARS:
        os.environ[var] = "1"
    if parent is not None:
        _exit_with_parent(parent)


def roundtrip_one(codec: str, rgb: np.ndarray, level: float, preset: str) -> RoundTrip:
    """Encode + decode one image in this process."""
    c = get_codec(codec)
    data = c.encode(rgb, level, preset)
    return RoundTrip(data=data, decoded=c.decode(data))


def decode_one(codec: str, data: bytes) -> np.ndarray:
    """Decode one stored bitstream in this process (RGB uint8)."""
    return get_codec(codec).decode(data)


def _broadcast_levels(levels: float | Sequence[float] | np.ndarray, n: int) -> list[float]:
    if hasattr(levels, "detach"):  # torch tensor
        levels = levels.detach().cpu().reshape(-1).tolist()
    elif isinstance(levels, np.ndarray):
        levels = levels.reshape(-1).tolist()
    if isinstance(levels, int | float | np.integer | np.floating):
        return [float(levels)] * n
    levels = [float(v) for v in levels]
    if len(levels) == 1:
        return levels * n
    if len(levels) != n:
        raise InputError(f"got {len(levels)} levels for {n} images")
    return levels


EXECUTORS = ("local", "ray")


class CodecPool:
    """A persistent pool of codec workers. `workers` None = one per CPU core; 0 or 1 = run in this process.

    `executor="ray"` runs the same work as Ray tasks (`codecs.ray_executor`): a private local instance of `workers`
    CPUs, or the cluster at `address`.
    """

    def __init__(self, workers: int | None = None, executor: str = "local", address: str | None = None) -> None:
        if executor not in EXECUTORS:
            raise InputError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
        if address is not None and executor != "ray":
            raise InputError("--address needs --executor ray")
        if workers is None:
            workers = os.cpu_count() or 1
        if workers < 0:
            raise InputError(f"workers must be >= 0, got {workers}")
        self.workers = int(workers)
        self.executor = executor
        self._executor = None
        if executor == "ray":
            from prepcodec.codecs.ray_executor import RayExecutor

            self._executor = RayExecutor(self.workers or None, address)
        elif self.workers > 1:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(os.getpid(),),
            )

    def __enter__(self) -> CodecPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def roundtrip(
        self,
        codec: str,
        images: Sequence[np.ndarray],
        levels: float | Sequence[float],
        preset: str = "eval",
    ) -> list[RoundTrip]:
        """Encode+decode every image (in order) at its level; errors of any image propagate."""
        return self.submit(codec, images, levels, preset)()

    def submit(
        self,
        codec: str,
        images: Sequence[np.ndarray],
        levels: float | Sequence[float],
        preset: str = "eval",
    ) -> Callable[[], list[RoundTrip]]:
        """Queue the round-trips and return a function that waits for their results (in order).

        Lets a caller keep the workers busy with the next batch while it scores this one (the sweep queues every
        level of a chunk up front). Without worker processes the work runs when the function is called.
        """
        c = get_codec(codec)  # validate name, levels and preset here, before any work is queued
        check_preset(preset)
        lv = [c.level_spec.check(v) for v in _broadcast_levels(levels, len(images))]
        if self._executor is None or (len(images) <= 1 and self.executor == "local"):
            return lambda: [roundtrip_one(c.name, img, level, preset) for img, level in zip(images, lv, strict=True)]
        futures = [
            self._executor.submit(roundtrip_one, c.name, img, level, preset)
            for img, level in zip(images, lv, strict=True)
        ]
        return lambda: [f.result() for f in futures]

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> Iterator:
        """`fn(*job)` for every job, results in job order (a generator; all jobs are queued at once); `fn` must be
        a module-level function (the workers import it). Without workers the jobs run here, one by one."""
        if self._executor is None:
            return (fn(*job) for job in jobs)
        futures = [self._executor.submit(fn, *job) for job in jobs]
        return (f.result() for f in futures)

    def roundtrip_tensor(
        self,
        codec: str,
        x: torch.Tensor,
        levels: float | Sequence[float] | torch.Tensor,
        preset: str = "fast",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoded NCHW float on x's device/dtype, bits per image (N,)) for a float batch in [0, 1].

        The input is quantised to uint8 exactly once (round to nearest) before encoding. No gradient flows.
        """
        import torch

        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        u8 = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        results = self.roundtrip(codec, [np.ascontiguousarray(im) for im in u8], levels, preset)
        dec = torch.from_numpy(np.stack([r.decoded for r in results])).permute(0, 3, 1, 2)
        dec = (dec.to(torch.float32) / 255.0).to(device=x.device, dtype=x.dtype)
        bits = torch.tensor([float(r.bits) for r in results], device=x.device, dtype=x.dtype)
        return dec.contiguous(), bits


_DEFAULT: CodecPool | None = None


def default_pool(workers: int | None = None) -> CodecPool:
    """The process-wide shared pool (created on first use; recreated if a different worker count is asked for)."""
    global _DEFAULT
    if _DEFAULT is not None and workers is not None and _DEFAULT.workers != workers:
        _DEFAULT.close()
        _DEFAULT = None
    if _DEFAULT is None:
        _DEFAULT = CodecPool(workers)
    return _DEFAULT


@atexit.register
def _close_default() -> None:
    if _DEFAULT is not None:
        _DEFAULT.close()
