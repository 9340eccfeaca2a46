"""Evidence amplification: push an image towards what the task model already reads in it, before the codec.

Every blur-based preprocessor (the `roi:*` baselines, the ROI networks G and J) saves bits by removing what the
classifier does not need and slides along the same rate–accuracy curve (docs/training.md). What none of them does is
*add* what it needs: at high QP the codec smears the features the decision rests on. Here the image is moved a few
8-bit levels along the low-passed gradient of the model's own log-likelihood of what it reads on the uncompressed
image (an "anti-adversarial" step: projected gradient ascent in an L∞ ball instead of descent), so the decision has
margin left after quantisation. Low-passing the gradient (Gaussian, `sigma` px) puts the change where the codec keeps
it — large structures, not texture — so it costs almost no bits (docs/training.md, "Session 11").

What is read comes from the device's own model on the uncompressed image (`Task.evidence_read`) — no label, and
nothing from the codec's output: a classifier's top-1 class (its log-probability is climbed), a detector's confident
detections (score ≥ 0.3; the log-scores at their heatmap cells are climbed). The change is made for that model: how
much of it carries over to another is measured, not assumed (docs/results.md, generalisation). It needs the model's
input gradient (a backward pass), so a network with it runs on torch only; ONNX export refuses it.
"""

from __future__ import annotations

import torch

from prepcodec.errors import InputError
from prepcodec.tasks.base import Task

# LEVELS, SIGMA, STEPS chosen on 100 labelled imagenet-train images (docs/training.md, "Session 11"): the `+amp` spec's
# defaults and the `roi-graded-amp` network's. REACH: the ascent's whole path at the gradient's peak, in units of
# LEVELS, split evenly over the steps (2: a 5-step ascent can reach the ball's edge where the gradient is half its peak)
LEVELS, SIGMA, STEPS, REACH = 16.0, 4.0, 5, 2.0


def check_evidence(levels: float, sigma: float, steps: int, reach: float = REACH) -> None:
    """InputError for an amplification no one should ask for (the `+amp` spec and the NPP config share it)."""
    if not (0 < levels <= 64):
        raise InputError(f"evidence amplification: LEVELS (8-bit levels of change) must be in (0, 64], got {levels}")
    if not (0 <= sigma <= 32):
        raise InputError(f"evidence amplification: SIGMA (the gradient's low-pass, px) must be in [0, 32], got {sigma}")
    if not (1 <= steps <= 20):
        raise InputError(f"evidence amplification: STEPS must be in [1, 20], got {steps}")
    if not (0 < reach <= 64):
        raise InputError(f"evidence amplification: REACH (the path's length in LEVELS) must be in (0, 64], got {reach}")


EVIDENCE_KINDS = ("classification", "detection")


def check_task(task: Task) -> None:
    """InputError unless `task` says what it reads and how strongly (`Task.evidence_read` / `evidence_score`)."""
    if getattr(task, "kind", None) not in EVIDENCE_KINDS:
        raise InputError("evidence amplification needs a classifier (its top-1) or a detector (its confident "
                         f"detections); {getattr(task, 'name', task)} is a {getattr(task, 'kind', '?')} task")


def evidence_direction(task: Task, x: torch.Tensor, reading: object, sigma: float) -> torch.Tensor:
    """∇_x of the task's log-likelihood of `reading` (a classifier: log p_top1; a detector: the log-scores of its
    confident detections), Gaussian low-passed by `sigma` px, scaled per image to a peak of 1 (N, 3, H, W)."""
    from prepcodec.npp.baselines import gaussian_blur

    z = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():  # preprocessors run under no_grad
        (grad,) = torch.autograd.grad(task.evidence_score(z, reading), z)  # 0 where nothing is read: no change
    grad = gaussian_blur(grad, sigma)
    peak = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return grad / peak


def amplify_evidence(task: Task, x: torch.Tensor, levels: float = LEVELS, sigma: float = SIGMA, steps: int = STEPS,
                     reading: object | None = None, reach: float = REACH) -> torch.Tensor:
    """The change δ (N, 3, H, W), |δ| ≤ levels/255, x + δ in [0, 1], that raises the task's log-likelihood of
    `reading` (default: what it reads on x itself): `steps` steps of projected ascent along the low-passed gradient,
    each reach·levels/steps/255 long at the gradient's peak (a longer reach fills more of the ball per step but
    re-aims less often: one step at reach 4 measured worse than at 2, docs/training.md "Session 21"). Detached: the
    caller scales it, nothing differentiates it."""
    check_evidence(levels, sigma, steps, reach)
    check_task(task)
    x = x.detach()
    eps = levels / 255.0
    reading = task.evidence_read(x) if reading is None else reading
    z = x
    for _ in range(steps):
        z = z + (reach * eps / steps) * evidence_direction(task, z, reading, sigma)
        z = (x + (z - x).clamp(-eps, eps)).clamp(0.0, 1.0)
    return (z - x).detach()


class TaskEvidence:
    """Callable `(x, reading) -> δ` for an NPP: `amplify_evidence` with a fixed task and settings. Not an
    `nn.Module` (the task's weights are not the NPP's: not saved with it, not optimised)."""

    def __init__(self, task: Task, levels: float, sigma: float, steps: int) -> None:
        check_evidence(levels, sigma, steps)
        check_task(task)
        self.task, self.levels, self.sigma, self.steps = task, levels, sigma, steps
        for module in (getattr(task, "model", None), getattr(task, "net", None)):
            for p in module.parameters() if module is not None else ():
                p.requires_grad_(False)  # frozen: the ascent needs the input's gradient only

    def read(self, x: torch.Tensor) -> object:
        """What the task reads on (uncompressed) x: the evidence that is amplified."""
        return self.task.evidence_read(x)

    def __call__(self, x: torch.Tensor, reading: object) -> torch.Tensor:
        return amplify_evidence(self.task, x.float(), self.levels, self.sigma, self.steps, reading).to(x.dtype)
