"""λ paired with the QP: the trade-off at which preprocessing beats what the codec itself does at that level.

Minimising R + λ·D accepts an edit that removes ΔR bits at a distortion cost ΔD when ΔD/ΔR < 1/λ. The plain codec
already trades at its own exchange rate s(q) = −dD/dR along its curve (raise the QP a little), so an edit earns its
place against plain coding only if ΔD/ΔR < s(q). The break-even λ*(q) = 1/s(q) therefore spans orders of magnitude
over the QP range: near QP 22 the task loss barely moves with the bits (λ* large: only nearly free edits pay), near
QP 44 each bit matters (λ* small). A constant λ is too aggressive at one end and idle at the other; the paper's
official code pairs λ with the QP for this reason. `measure_break_even` reads s(q) off the plain real codec on
training crops (never an evaluation split); the trainer then uses λ(q) = scale · λ*(q).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from prepcodec.errors import InputError

LAMBDA_RANGE = (1e-2, 1e3)
MIN_SLOPE = 0.05  # |d log D / d log R| floor: a flat (noisy) stretch of the curve must not give an infinite λ*


def break_even(qps: Sequence[float], bpp: Sequence[float], distortion: Sequence[float]) -> np.ndarray:
    """λ*(q) = 1/s(q) from a plain curve, with log D smoothed as a quadratic in log R (robust to noise)."""
    q, r, d = (np.asarray(v, dtype=np.float64) for v in (qps, bpp, distortion))
    if len(q) < 3 or (r <= 0).any() or (d <= 0).any():
        raise InputError("the plain curve needs >= 3 levels with positive bpp and distortion")
    lr, ld = np.log(r), np.log(d)
    coef = np.polyfit(lr, ld, 2)
    deriv = np.minimum(np.polyval(np.polyder(coef), lr), -MIN_SLOPE)  # d log D / d log R, negative
    slope = -np.exp(np.polyval(coef, lr)) / r * deriv  # s = -dD/dR > 0
    return np.clip(1.0 / slope, *LAMBDA_RANGE)


@torch.no_grad()
def measure_break_even(bank, task, real, qps: Sequence[int], n_crops: int = 128, batch: int = 16,
                       progress: bool = True, distortion=None) -> dict:
    """Plain real-codec curve on the first `n_crops` training crops: mean bpp and task loss per QP, and λ*(q).

    `distortion(x, x_hat, teacher) -> per-image loss` is the D_task being trained (default: the task's own
    distillation loss, `train.teacher`)."""
    from prepcodec.train.teacher import teacher_for

    distortion = distortion or teacher_for(task).distortion
    n = min(n_crops, len(bank.train))
    idx = torch.linspace(0, len(bank.train) - 1, n).round().long()  # spread over the bank, not one image's crops
    bpp, dist = [], []
    for qp in tqdm(qps, desc="lambda: plain codec curve", disable=not progress, unit="qp"):
        bits_sum, d_sum = 0.0, 0.0
        for s in range(0, n, batch):
            x, t = bank.batch(idx[s : s + batch], torch.device("cpu"))
            x_hat, bits = real(x, torch.full((len(x),), float(qp)))
            bits_sum += float(bits.sum())
            d_sum += float(distortion(x, x_hat, t).sum())
        bpp.append(bits_sum / (n * x.shape[2] * x.shape[3]))
        dist.append(max(d_sum / n, 1e-6))
    lam = break_even(qps, bpp, dist)
    return {"qps": [float(q) for q in qps], "bpp": bpp, "task_loss": dist, "break_even": lam.tolist(), "crops": n}


class LambdaSchedule:
    """λ per image from its QP: a constant, or scale · λ*(q) interpolated (in log λ) over a measured table."""

    def __init__(self, scale: float, table: dict | None = None) -> None:
        if not scale > 0:
            raise InputError(f"--lam must be > 0, got {scale}")
        self.scale = float(scale)
        self.table = table
        if table is not None:
            self._q = torch.tensor(table["qps"], dtype=torch.float64)
            self._log = torch.tensor(np.log(table["break_even"]), dtype=torch.float64)

    def __call__(self, qp: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            return torch.full_like(qp, self.scale)
        q = qp.detach().double().cpu().clamp(float(self._q[0]), float(self._q[-1]))
        i = torch.searchsorted(self._q, q).clamp(1, len(self._q) - 1)
        q0, q1 = self._q[i - 1], self._q[i]
        w = (q - q0) / (q1 - q0)
        lam = torch.exp(self._log[i - 1] * (1 - w) + self._log[i] * w) * self.scale
        return lam.to(device=qp.device, dtype=qp.dtype)


def cached_break_even(bank, task, real, qps, key: dict, n_crops: int = 128, progress: bool = True,
                      distortion=None) -> dict:
    """`measure_break_even`, cached as JSON under the prepcodec cache by everything that determines it (crop
    recipe, task, codec, backend, preset, QPs): the plain curve of the same crops does not change between runs."""
    import hashlib
    import json

    from prepcodec.atomic import write_text
    from prepcodec.tasks.weights import cache_dir

    digest = hashlib.sha256(json.dumps({**key, "qps": list(qps), "v": 1}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "npp-lambda" / f"{digest}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            path.unlink(missing_ok=True)  # damaged: measured again
    table = measure_break_even(bank, task, real, qps, n_crops=n_crops, progress=progress, distortion=distortion)
    write_text(path, json.dumps(table) + "\n")
    return table
