"""Class-evidence amplification: push an image towards what the classifier already reads in it, before the codec.

Every blur-based preprocessor (the `roi:*` baselines, the ROI networks G and J) saves bits by removing what the
classifier does not need and slides along the same rate–accuracy curve (docs/training.md). What none of them does is
*add* what it needs: at high QP the codec smears the features the classifier's decision rests on. Here the image is
moved a few 8-bit levels along the low-passed gradient of the classifier's own top-1 log-probability on the
uncompressed image (an "anti-adversarial" step: projected gradient ascent in an L∞ ball instead of descent), so the
decision has margin left after quantisation. Low-passing the gradient (Gaussian, `sigma` px) puts the change where
the codec keeps it — large structures, not texture — so it costs almost no bits (docs/training.md, "Session 11").

The top-1 class comes from the device's own classifier on the uncompressed image — no label, and nothing from the
codec's output. The change is made for that classifier: how much of it carries over to another backbone is measured,
not assumed (docs/results.md, generalisation). It needs the classifier's input gradient (a backward pass), so a
network with it runs on torch only; ONNX export refuses it.
"""

from __future__ import annotations

import torch

from prepcodec.errors import InputError
from prepcodec.tasks.base import Task

# LEVELS, SIGMA, STEPS chosen on 100 labelled imagenet-train images (docs/training.md, "Session 11"): the `+amp` spec's
# defaults and the `roi-graded-amp` network's
LEVELS, SIGMA, STEPS = 16.0, 4.0, 5


def check_evidence(levels: float, sigma: float, steps: int) -> None:
    """InputError for an amplification no one should ask for (the `+amp` spec and the NPP config share it)."""
    if not (0 < levels <= 64):
        raise InputError(f"evidence amplification: LEVELS (8-bit levels of change) must be in (0, 64], got {levels}")
    if not (0 <= sigma <= 32):
        raise InputError(f"evidence amplification: SIGMA (the gradient's low-pass, px) must be in [0, 32], got {sigma}")
    if not (1 <= steps <= 20):
        raise InputError(f"evidence amplification: STEPS must be in [1, 20], got {steps}")


def top1(task: Task, x: torch.Tensor) -> torch.Tensor:
    """The classifier's top-1 class (N,) on x: the class whose evidence is amplified (read on the original)."""
    with torch.no_grad():
        return task.logits(x).argmax(dim=1)


def evidence_direction(task: Task, x: torch.Tensor, classes: torch.Tensor, sigma: float) -> torch.Tensor:
    """∇_x log p_classes(x), Gaussian low-passed by `sigma` px, scaled per image to a peak of 1 (N, 3, H, W)."""
    from prepcodec.npp.baselines import gaussian_blur

    z = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():  # preprocessors run under no_grad
        log_p = task.logits(z).log_softmax(dim=1).gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, z)
    grad = gaussian_blur(grad, sigma)
    peak = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return grad / peak


def amplify_evidence(task: Task, x: torch.Tensor, levels: float = LEVELS, sigma: float = SIGMA, steps: int = STEPS,
                     classes: torch.Tensor | None = None) -> torch.Tensor:
    """The change δ (N, 3, H, W), |δ| ≤ levels/255, x + δ in [0, 1], that raises the classifier's log-probability of
    `classes` (default: its own top-1 on x): `steps` steps of projected ascent along the low-passed gradient, each
    2·levels/steps/255 long at the gradient's peak. Detached: the caller scales it, nothing differentiates it."""
    check_evidence(levels, sigma, steps)
    if getattr(task, "kind", None) != "classification":
        raise InputError("evidence amplification needs a classifier (it follows the gradient of its top-1)")
    x = x.detach()
    eps = levels / 255.0
    classes = top1(task, x) if classes is None else classes
    z = x
    for _ in range(steps):
        z = z + (2.0 * eps / steps) * evidence_direction(task, z, classes, sigma)
        z = (x + (z - x).clamp(-eps, eps)).clamp(0.0, 1.0)
    return (z - x).detach()


class TaskEvidence:
    """Callable `(x, classes) -> δ` for an NPP: `amplify_evidence` with a fixed classifier and settings. Not an
    `nn.Module` (the classifier's weights are not the NPP's: not saved with it, not optimised)."""

    def __init__(self, task: Task, levels: float, sigma: float, steps: int) -> None:
        check_evidence(levels, sigma, steps)
        self.task, self.levels, self.sigma, self.steps = task, levels, sigma, steps
        for p in getattr(task, "model", torch.nn.Module()).parameters():
            p.requires_grad_(False)  # frozen: the ascent needs the input's gradient only

    def top1(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's top-1 on (uncompressed) x: the class whose evidence is amplified."""
        return top1(self.task, x)

    def __call__(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return amplify_evidence(self.task, x.float(), self.levels, self.sigma, self.steps, classes).to(x.dtype)
