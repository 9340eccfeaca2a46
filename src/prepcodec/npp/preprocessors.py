"""`--pre` spec strings -> preprocessors (uint8 RGB -> uint8 RGB) with a canonical `.spec` used as cache key.

Grammar (numbers in any float syntax; the canonical spec prints them with %g):
  none                        identity
  blur:SIGMA                  Gaussian blur, sigma in pixels
  bilateral:SIGMA_R[:SIGMA_S] bilateral denoiser, range sigma in 8-bit levels, spatial sigma in pixels (default 2)
  roi:blur:SIGMA[:CUT]        keep the task's region of interest, Gaussian-blur the rest; CUT (classifiers only):
                              the Grad-CAM level above which a pixel is kept (default 0.5)
  roi:flat:ALPHA[:CUT]        keep the region of interest, pull the rest towards the mean colour (ALPHA in [0, 1])
  roi:graded[:SIGMA_MAX]      (classifiers) blur in steps that fall as the Grad-CAM rises (baselines.GRADED_STEPS,
                              their sigmas scaled so the least attended pixels get SIGMA_MAX; default 4)
  npp:NAME|PATH               learned preprocessing network: a shipped name (`npp list`) or an exported .pt;
                              QP-aware (it is run at each level's HEVC-axis QP); its canonical spec carries the
                              weights' content hash (npp:cls@1a2b3c4d5e6f), and its cache key that hash and its
                              config's, so cached results follow the network, whatever the file is called
  SPEC+unseen                 (classifiers) SPEC, then what the classifier's resize + centre crop never reads
                              replaced by the read window's edge, replicated (`baselines.fill_unseen`)
  SPEC+amp[:LEVELS[:SIGMA[:STEPS[:REACH]]]]
                              (classifiers, detectors) SPEC, then the task model's own evidence amplified: at most
                              LEVELS 8-bit levels of change along its low-passed (SIGMA px) log-likelihood gradient,
                              STEPS steps of REACH·LEVELS/STEPS each at the gradient's peak (`npp.evidence`; defaults
                              16, 4, 5, 2) — of the classifier's top-1 class, of the detector's confident detections,
                              both read on the *original*
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from prepcodec.errors import InputError
from prepcodec.npp import baselines
from prepcodec.tasks.base import Task

PRE_HELP = ("none | blur:SIGMA | bilateral:SIGMA_R[:SIGMA_S] | roi:blur:SIGMA[:CUT] | roi:flat:ALPHA[:CUT] | "
            "roi:graded[:SIGMA_MAX] | npp:NAME|PATH, each optionally +unseen and/or "
            "+amp[:LEVELS[:SIGMA[:STEPS[:REACH]]]]")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float (1,3,H,W) in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (1,3,H,W) in [0,1] -> uint8 HxWx3 (rounded, clipped)."""
    return (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class Preprocessor:
    """rgb uint8 -> rgb uint8 before encoding. `qp` is the HEVC-QP-axis level (used by QP-aware NPPs only)."""

    def __init__(self, spec: str, fn: Callable[..., torch.Tensor] | None, qp_aware: bool = False,
                 revision: str = "", identity: str | None = None, network: torch.nn.Module | None = None) -> None:
        self.spec = spec
        self._fn = fn
        self.qp_aware = qp_aware
        self.revision = revision
        self.identity = identity or spec  # what the output depends on (a network's weights, not its file's name)
        self.network = network  # the learned NPP it runs, if any (a benchmark turns its read memo off)

    @property
    def cache_spec(self) -> str:
        """What the output depends on, plus the revision of the code behind it: a fixed bug must not be served its
        old results, and a network is the same network under any name or path."""
        return f"{self.identity}#{self.revision}" if self.revision else self.identity

    @property
    def is_identity(self) -> bool:
        return self._fn is None

    def __call__(self, rgb: np.ndarray, qp: float | None = None) -> np.ndarray:
        if self._fn is None:
            return rgb
        with torch.no_grad():
            return to_uint8(self.tensor(to_tensor(rgb), qp))

    def many(self, images: list[np.ndarray], qp: float | None = None, batch: int = 20) -> list[np.ndarray]:
        """`self(rgb, qp)` for every image, same-sized ones stacked `batch` at a time: a network that runs the task
        model (CAM, evidence) costs several model passes an image, which batched run ~2x faster on a CPU."""
        if self._fn is None:
            return list(images)
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(np.shape(im), []).append(i)
        step = max(1, batch)
        for idx in by_shape.values():
            for b in range(0, len(idx), step):
                chunk = idx[b : b + step]
                x = torch.cat([to_tensor(images[i]) for i in chunk])
                with torch.no_grad():
                    y = self.tensor(x, qp)
                for j, i in enumerate(chunk):
                    out[i] = to_uint8(y[j : j + 1])
        return out  # type: ignore[return-value]

    def tensor(self, x: torch.Tensor, qp: float | None = None) -> torch.Tensor:
        """The same preprocessing on a float (1, 3, H, W) tensor in [0, 1] (gradients as the caller sets them)."""
        if self._fn is None:
            return x
        if self.qp_aware and qp is None:
            raise InputError(f"{self.spec} is QP-aware: give the HEVC-axis QP it preprocesses for")
        return self._fn(x, qp) if self.qp_aware else self._fn(x)

    def __repr__(self) -> str:
        return f"Preprocessor({self.spec!r})"


def npp_preprocessor(name_or_path: str) -> Preprocessor:
    """The learned NPP as a QP-aware preprocessor; spec `npp:<name or path>@<first 12 hex of its weights' sha256>`,
    cache identity the weights' and the config's hashes (the same weights run with another config are another
    network)."""
    from prepcodec.errors import WeightsMissing
    from prepcodec.npp.zoo import load_npp

    try:
        net = load_npp(name_or_path)
    except WeightsMissing as exc:
        raise InputError(str(exc)) from None
    return loaded_npp_preprocessor(net)


def loaded_npp_preprocessor(net) -> Preprocessor:
    """`npp_preprocessor` of an already loaded network (`npp.zoo.LoadedNPP`), for callers that also read its
    training summary."""

    def run(x: torch.Tensor, qp: float) -> torch.Tensor:
        return net.model(x, float(qp))

    revision = baselines.CAM_REVISION if net.model.config.roi else ""
    return Preprocessor(f"npp:{net.name}@{net.sha256[:12]}", run, qp_aware=True, revision=revision,
                        identity=f"npp@{net.sha256[:12]}.{net.config_digest[:8]}", network=net.model)


def _number(text: str, what: str, spec: str, lo: float = 0.0, hi: float = float("inf")) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--pre {spec!r}: {what} must be a number, got {text!r} ({PRE_HELP})") from None
    if not (lo <= value <= hi) or value != value:
        raise InputError(f"--pre {spec!r}: {what} must be in [{lo:g}, {hi:g}], got {text}")
    return value


UNSEEN = "+unseen"
AMP = "amp"  # the evidence-amplification suffix: SPEC+amp[:LEVELS[:SIGMA[:STEPS[:REACH]]]] (defaults: npp.evidence)


def _suffix(text: str) -> tuple[str, str] | None:
    """(inner spec, suffix) when `text` ends in a known `+` suffix (`unseen`, `amp[...]`), else None."""
    inner, plus, tail = text.rpartition("+")
    if not plus or not inner:
        return None
    word = tail.strip().lower()
    return (inner, word) if word == UNSEEN[1:] or word.split(":")[0] == AMP else None


def needs_task(spec: str) -> bool:
    """True for specs whose preprocessor needs the task model (ROI suppression, the crop window, its gradient)."""
    text = spec.strip().lower()
    return text.startswith("roi:") or _suffix(text) is not None


Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (original, inner's output) -> output


def _after(inner: Preprocessor, suffix: str, step: Step) -> Preprocessor:
    """`inner`, then `step(original, inner's output)`: a separate cache entry (spec and identity carry the suffix)."""

    def run(x: torch.Tensor, qp: float | None = None) -> torch.Tensor:
        return step(x, inner.tensor(x, qp))

    return Preprocessor(inner.spec + suffix, run, qp_aware=inner.qp_aware, revision=inner.revision,
                        identity=inner.identity + suffix, network=inner.network)


def _with_suffix(inner: Preprocessor, word: str, task: Task | None, spec: str) -> Preprocessor:
    """`+unseen` (`baselines.fill_unseen`) or `+amp` (`evidence.amplify_evidence`, the class read on the original)."""
    from prepcodec.npp import evidence

    if word == UNSEEN[1:]:
        if task is None or task.kind != "classification":
            raise InputError(f"--pre {spec!r}: +unseen flattens what a classifier's centre crop never reads; it needs "
                             "a classifier task")
        return _after(inner, UNSEEN, lambda _x, y: baselines.fill_unseen(task, y))
    if task is None or task.kind not in evidence.EVIDENCE_KINDS:
        raise InputError(f"--pre {spec!r}: +amp amplifies what a classifier or detector reads; it needs a "
                         "classifier or detection task")

    parts = word.split(":")[1:]
    if len(parts) > 4:
        raise InputError(f"--pre {spec!r}: +amp takes at most LEVELS:SIGMA:STEPS:REACH ({PRE_HELP})")
    levels = _number(parts[0], "LEVELS", spec, 0.0, 64.0) if len(parts) > 0 else evidence.LEVELS
    sigma = _number(parts[1], "SIGMA", spec, 0.0, 32.0) if len(parts) > 1 else evidence.SIGMA
    steps_f = _number(parts[2], "STEPS", spec, 1.0, 20.0) if len(parts) > 2 else evidence.STEPS
    if steps_f != int(steps_f):
        raise InputError(f"--pre {spec!r}: STEPS must be a whole number, got {parts[2]}")
    steps = int(steps_f)
    reach = _number(parts[3], "REACH", spec, 0.0, 64.0) if len(parts) > 3 else evidence.REACH
    evidence.check_evidence(levels, sigma, steps, reach)

    def amplified(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        delta = evidence.amplify_evidence(task, y, levels, sigma, steps, task.evidence_read(x), reach)
        return (y + delta).clamp(0.0, 1.0)

    # the default reach is left out of the canonical spec, so results cached before REACH existed keep their keys
    tail = f":{reach:g}" if reach != evidence.REACH else ""
    return _after(inner, f"+{AMP}:{levels:g}:{sigma:g}:{steps}{tail}", amplified)


def parse_pre(spec: str, task: Task | None = None) -> Preprocessor:
    """Build the preprocessor a `--pre` string names; ROI baselines need the task whose attention they keep."""
    text = spec.strip()
    suffix = _suffix(text)
    if suffix is not None:
        return _with_suffix(parse_pre(suffix[0], task), suffix[1], task, spec)
    parts = text.split(":")
    kind = parts[0].lower()
    if kind == "none" and len(parts) == 1:
        return Preprocessor("none", None)
    if kind == "blur" and len(parts) == 2:
        sigma = _number(parts[1], "SIGMA", spec, 0.0, 64.0)
        return Preprocessor(f"blur:{sigma:g}", lambda x: baselines.gaussian_blur(x, sigma))
    if kind == "bilateral" and len(parts) in (2, 3):
        sigma_r = _number(parts[1], "SIGMA_R", spec, 0.5, 255.0)
        sigma_s = _number(parts[2], "SIGMA_S", spec, 0.5, 16.0) if len(parts) == 3 else 2.0
        return Preprocessor(
            f"bilateral:{sigma_r:g}:{sigma_s:g}", lambda x: baselines.bilateral(x, sigma_s, sigma_r / 255.0)
        )
    if kind == "roi" and len(parts) in (3, 4) and parts[1] in ("blur", "flat"):
        mode = parts[1]
        hi = 64.0 if mode == "blur" else 1.0
        strength = _number(parts[2], "SIGMA" if mode == "blur" else "ALPHA", spec, 0.0, hi)
        if task is None:
            raise InputError(f"--pre {spec!r} needs a task (its region of interest comes from the task model)")
        cut = baselines.ROI_CAM_THRESHOLD
        if len(parts) == 4:
            if task.kind != "classification":
                raise InputError(f"--pre {spec!r}: CUT is the Grad-CAM threshold of a classifier; {task.kind} keeps "
                                 "its boxes")
            cut = _number(parts[3], "CUT", spec, 0.0, 1.0)

        def roi(x: torch.Tensor) -> torch.Tensor:
            mask = baselines.roi_mask(task, x, cut)
            return baselines.suppress(x, mask, mode, strength)

        revision = baselines.CAM_REVISION if task.kind == "classification" else ""
        name = f"roi:{mode}:{strength:g}" + ("" if cut == baselines.ROI_CAM_THRESHOLD else f":{cut:g}")
        return Preprocessor(name, roi, revision=revision)
    if kind == "roi" and len(parts) in (2, 3) and parts[1] == "graded":
        if task is None or task.kind != "classification":
            raise InputError(f"--pre {spec!r} needs a classifier task (it grades by the classifier's Grad-CAM)")
        top = baselines.GRADED_STEPS[-1][1]
        sigma_max = _number(parts[2], "SIGMA_MAX", spec, 0.1, 64.0) if len(parts) == 3 else top
        steps = baselines.graded_steps(sigma_max)
        name = "roi:graded" + ("" if sigma_max == top else f":{sigma_max:g}")
        return Preprocessor(name, lambda x: baselines.graded_blur(x, baselines.grad_cam(task, x), steps),
                            revision=baselines.CAM_REVISION)
    if kind == "npp" and len(parts) >= 2 and text[4:].strip():
        return npp_preprocessor(text[4:].strip())
    raise InputError(f"unknown --pre {spec!r}; expected {PRE_HELP}")
