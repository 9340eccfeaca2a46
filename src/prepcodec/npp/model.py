"""The neural preprocessing network (NPP) of Lu et al. (TCSVT 2024).

x -> x̄ = clamp(pixel(x, qp) + unet(x, qp), 0, 1). The pixel-wise branch (1x1 conv, ReLU, 1x1 conv, ReLU, each conv's
output scaled per channel from the QP as the official code's `Scaling_Net` does) can express colour transforms
cheaply; the U-Net branch adds spatially-varying edits (smoothing what the task model ignores). A
quantization-adaptive layer (a 2-layer MLP on the QP) scales every U-Net block's channels, so one network serves
every QP. Initialised as the identity (pixel branch = identity, U-Net output conv = 0, every QP scale = 1): training
starts from "no preprocessing", which is what the plain codec does.

Down-sampling is a choice (`NPPConfig.down`): "pool" (2x2 max-pooling) or "stride" (a 3x3 convolution of stride 2,
as the paper's U-Net). `NPPConfig.stem` > 1 runs the U-Net on a pixel-unshuffled image (stride `stem`): the full
resolution convolutions are what dominates the cost on a CPU (docs/benchmarks.md), and the pixel branch keeps the
full resolution path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from prepcodec.errors import InputError
from prepcodec.npp import evidence

if TYPE_CHECKING:
    from prepcodec.npp.features import Attention

QP_CENTER = 34.0  # HEVC QP the conditioning is centred on (middle of the paper's 28..41 range)
QP_SCALE = 10.0
DOWN_MODES = ("pool", "stride")


@dataclass(frozen=True)
class NPPConfig:
    """Architecture hyper-parameters; stored next to the weights so a checkpoint rebuilds its own network."""

    base_channels: int = 16
    depth: int = 3  # number of down-sampling steps in the U-Net
    qp_hidden: int = 64
    down: str = "pool"  # "pool" (max-pooling) or "stride" (strided 3x3 conv, the paper's)
    pixel_qp: bool = True  # QP scaling of the pixel branch's two convs (the official code's Scaling_Net)
    stem: int = 1  # U-Net input resolution divisor (pixel-unshuffle); 1 = full resolution
    features: str | None = None  # frozen pretrained task features fed to the U-Net levels (npp.features)
    feature_width: int = 32  # channels each tapped feature map is projected to
    blend_sigmas: tuple[float, ...] = ()  # per-pixel blend towards Gaussian blurs of these sigmas (BlendHead)
    keep_bias: float = 8.0  # the blend head's initial logit of "keep the pixel" (BlendHead)
    residual: bool = True  # False: x̄ = x + blend only (no pixel branch, no free RGB residual: "mask-only")
    roi: str | None = None  # the task whose attention starts the keep-mask (ROIBlend): a classifier's forward-only
    # Grad-CAM, or a detector's boxes
    keep_sigmas: tuple[float, ...] = ()  # ROIBlend: the kept region is a per-QP mix of blurs of these sigmas (0 = x
    # itself); empty = x as is. A detector gains from a mild blur everywhere (blur:1 is its best baseline)
    blend_start: float = 2.0  # ROIBlend: the sigma both mixes start on (roi:blur:2 for the classifier)
    start_logit: float = 8.0  # ROIBlend: the mixes' initial logit on `blend_start` (others 0): 8 gives them e^-8 of the
    # weight and of the gradient (an exact start that barely moves: det-A), 3 ~5 % each (a start that can move)
    roi_sharpness: float = 40.0  # ROIBlend: slope of the soft threshold on the attention; a detector's 0/1 boxes at
    # 40 saturate the sigmoid (gradient e^-20: the mask correction cannot learn), at 6 the box keeps 95 %, outside 5 %
    graded_cuts: tuple[float, ...] = ()  # ROIBlend: attention levels below the keep cut (descending, e.g. 0.25, 0.1);
    # the pixels between two cuts get a per-QP blur mix of their own, started on the matching `graded_starts` sigma,
    # and those below the last the background's — the `roi:graded` baseline as a trainable network
    graded_starts: tuple[float, ...] = ()
    evidence_levels: float = 0.0  # ROIBlend: > 0 adds the task's own evidence (a classifier's top-1, a detector's
    # confident detections), amplified by at most this many 8-bit levels along its low-passed gradient (npp.evidence),
    # times a learned per-QP gain (1 at start)
    evidence_sigma: float = evidence.SIGMA  # the gradient's low-pass, px
    evidence_steps: int = evidence.STEPS  # projected ascent steps

    def __post_init__(self) -> None:
        if self.down not in DOWN_MODES:
            raise InputError(f"NPP down-sampling must be one of {', '.join(DOWN_MODES)}, got {self.down!r}")
        if self.depth < 1 or self.base_channels < 1 or self.qp_hidden < 1 or self.stem < 1:
            raise InputError(f"invalid NPP config {self}")
        if not self.residual and not self.blend_sigmas:
            raise InputError("a mask-only NPP (residual=False) needs blend_sigmas")
        if self.roi and (self.residual or len(self.blend_sigmas) < 1):
            raise InputError("an ROI-guided NPP is mask-only (residual=False) with blend_sigmas")
        if self.keep_sigmas and not self.roi:
            raise InputError("keep_sigmas belong to an ROI-guided NPP (roi=...)")
        if len(self.graded_cuts) != len(self.graded_starts) or (self.graded_cuts and not self.roi):
            raise InputError("graded_cuts and graded_starts pair up, in an ROI-guided NPP (roi=...)")
        if any(s not in self.blend_sigmas for s in self.graded_starts):
            raise InputError(f"graded_starts {self.graded_starts} must be among blend_sigmas {self.blend_sigmas}")
        if self.evidence_levels:
            from prepcodec.tasks.registry import task_kind

            if not self.roi or task_kind(self.roi) not in evidence.EVIDENCE_KINDS:
                raise InputError("evidence_levels belong to an ROI-guided classifier or detector NPP (roi=<a "
                                 "classifier or detector>)")
            evidence.check_evidence(self.evidence_levels, self.evidence_sigma, self.evidence_steps)

    @classmethod
    def from_dict(cls, d: dict) -> NPPConfig:
        """Rebuild from a stored dict; InputError for keys this version does not know (a foreign or newer file)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"NPP config has unknown fields {sorted(unknown)} (written by another version?)")
        d = dict(d)
        for key in ("blend_sigmas", "keep_sigmas", "graded_cuts", "graded_starts"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    def without_evidence(self) -> NPPConfig:
        """The same network without evidence amplification: what an `--init` network grows from (`grow_npp`)."""
        return replace(self, evidence_levels=0.0, evidence_sigma=NPPConfig.evidence_sigma,
                       evidence_steps=NPPConfig.evidence_steps)


NPP_SIZES: dict[str, NPPConfig] = {
    # CPU training: U-Net at stride 2 (pixel-unshuffle stem), strided convs, depth 4 (bottom at stride 32, so its
    # view covers a whole 224 crop); 2.16 M parameters, ~4x cheaper per step than "small-full" (docs/benchmarks.md)
    "small": NPPConfig(base_channels=16, depth=4, qp_hidden=32, down="stride", stem=2),
    "small-full": NPPConfig(base_channels=16, depth=3, qp_hidden=32),  # full-resolution U-Net, max-pooling
    "paper": NPPConfig(base_channels=35, depth=4, qp_hidden=128),  # 9.49 M parameters (paper: ~9.4 M)
    # "small" + the frozen EfficientNet-Lite0 trunk's features at strides 8/16/32 (what the classifier sees)
    "small-lite0": NPPConfig(base_channels=16, depth=4, qp_hidden=32, down="stride", stem=2, features="effnet-lite0"),
    # "small-lite0" + a per-pixel blend towards blurs (sigma 1, 2, 4): the ROI-blur baseline is one of its outputs
    "small-blend": NPPConfig(base_channels=16, depth=4, qp_hidden=32, down="stride", stem=2, features="effnet-lite0",
                             blend_sigmas=(1.0, 2.0, 4.0)),
    # mask-only: x̄ = x + sum_k w_k (blur_k(x) - x), nothing else, so the network can smooth where the task does not
    # look but cannot shift tone or colour globally (what every residual run learned first: docs/training.md).
    # "keep" starts at logit 4 (blurs ~5 % in total): at small-blend's 8 the head's gradients are ~e^-8 and it
    # never moved in run D (blur weights 0.11 % after 2,700 steps)
    "small-mask": NPPConfig(base_channels=16, depth=4, qp_hidden=32, down="stride", stem=2, features="effnet-lite0",
                            blend_sigmas=(1.0, 2.0, 4.0), keep_bias=4.0, residual=False),
    # the roi:blur:2 baseline as a trainable network: the classifier's own Grad-CAM (forward-only, npp.features.TaskCAM)
    # gives the keep-mask; learned are the CAM threshold and the background's blur per QP and a per-pixel mask
    # correction (ROIBlend); at initialisation it is roi:blur:2 up to a soft threshold (tested)
    "roi-blend": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(0.5, 1.0, 2.0, 4.0), residual=False,
                           roi="effnet-lite0"),
    # the detector's version: CenterNet's boxes (forward-only, npp.features.TaskBoxes) give the keep-mask; the kept
    # region and the background each get a per-QP blur mix, both starting near sigma 1 — the network starts close to
    # blur:1, the best classical baseline before hevc on COCO (docs/results.md), and learns where and how much to
    # keep. Soft start (logit 3) and threshold (slope 6) so that every part gets a gradient (det-A at 8/40 did not)
    # roi-blend graded: between the keep cut (CAM 0.5) and the background (CAM < 0.1) two bands (0.25-0.5, 0.1-0.25)
    # with blur mixes of their own, started as the roi:graded baseline (sigma 1, 2; background 4), which saves more than
    # roi:blur:2 on the validation split and on imagenet-eval (docs/results.md); cuts and mixes learned per QP
    "roi-graded": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(0.5, 1.0, 2.0, 4.0), residual=False,
                            roi="effnet-lite0", blend_start=4.0, graded_cuts=(0.25, 0.1), graded_starts=(1.0, 2.0)),
    # roi-graded on the roi:graded:2 curve (kept, then sigma 0.5 / 1, background 2: what keeps most of the half-attended
    # picture, the best variant on the validation split) with the soft start of roi-det (logit 3: each mix ~87 % on
    # its start) so that the band mixes move, which at logit 8 they did not (run I)
    "roi-graded-mild": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(0.5, 1.0, 2.0, 4.0), residual=False,
                                 roi="effnet-lite0", blend_start=2.0, graded_cuts=(0.25, 0.1),
                                 graded_starts=(0.5, 1.0), start_logit=3.0),
    # roi-graded-mild + the classifier's own top-1 evidence amplified (16 levels, gradient low-passed σ 4, 5 steps)
    # with a learned per-QP gain: blur what the classifier ignores, push what it reads so that it survives the codec
    # (npp.evidence; levels and sigma chosen on imagenet-train images, docs/training.md "Session 11"). Run J's weights
    # grow into it with `--init` (`grow_npp`): it then starts as J followed by the fixed amplification
    "roi-graded-amp": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(0.5, 1.0, 2.0, 4.0), residual=False,
                                roi="effnet-lite0", blend_start=2.0, graded_cuts=(0.25, 0.1),
                                graded_starts=(0.5, 1.0), start_logit=3.0, evidence_levels=evidence.LEVELS),
    "roi-det": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(1.0, 2.0, 4.0), residual=False,
                         roi="centernet", keep_sigmas=(0.0, 0.5, 1.0), blend_start=1.0, start_logit=3.0,
                         roi_sharpness=6.0),
    # roi-det + CenterNet's own evidence (its confident detections' log-scores) amplified, as roi-graded-amp does for
    # the classifier; npp:det grows into it (`npp grow`)
    "roi-det-amp": NPPConfig(base_channels=16, qp_hidden=32, blend_sigmas=(1.0, 2.0, 4.0), residual=False,
                             roi="centernet", keep_sigmas=(0.0, 0.5, 1.0), blend_start=1.0, start_logit=3.0,
                             roi_sharpness=6.0, evidence_levels=evidence.LEVELS),
}


class BlendHead(nn.Module):
    """Per-pixel softmax weights over {keep, blur_s1, blur_s2, ...} from the U-Net features: x̄ gets
    sum_k w_k * (blur_k(x) - x). Spatially varying smoothing (what ROI suppression does by hand) is then one
    weight per pixel instead of a large learned filter; at initialisation "keep" has all the weight."""

    def __init__(self, channels: int, sigmas: tuple[float, ...], stem: int, keep_bias: float) -> None:
        super().__init__()
        self.sigmas, self.stem = sigmas, stem
        self.logits = nn.Conv2d(channels, (len(sigmas) + 1) * stem * stem, 1)
        nn.init.zeros_(self.logits.weight)
        with torch.no_grad():
            bias = torch.zeros(len(sigmas) + 1, stem * stem)
            bias[0] = keep_bias
            self.logits.bias.copy_(bias.reshape(-1))

    def forward(self, feat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        from prepcodec.npp.baselines import gaussian_blurs

        logits = self.logits(feat)
        if self.stem > 1:
            logits = F.pixel_shuffle(logits, self.stem)
        w = logits[..., : x.shape[-2], : x.shape[-1]].softmax(dim=1)
        blurs = gaussian_blurs(x, self.sigmas)
        return sum(w[:, k + 1 : k + 2] * (blurs[s] - x) for k, s in enumerate(self.sigmas))


ROI_FEATHER_SIGMA = 0.01 * math.hypot(256, 256)  # the baseline's feathering of a 256² image, for every size
# at inference a per-QP evidence gain below this (at most 0.16 of an 8-bit level of change) switches the stage off:
# its cost, the task's read and ascent passes, is not spent on nothing (run det-E's gain is ~0 at QP 22-26). In
# training the stage always runs, so a gain that fell this low still gets its gradient.
GAIN_OFF = 0.01


class QPMLP(nn.Module):
    """QP -> `out` values (2-layer MLP), zero at initialisation."""

    def __init__(self, out: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, out)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, qp: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(((qp - QP_CENTER) / QP_SCALE).view(-1, 1))))


def _start_logits(sigmas: tuple[float, ...], start: float, logit: float) -> torch.Tensor:
    """Mix logits with most weight on `start` (the others at e^-logit relative)."""
    logits = torch.zeros(len(sigmas))
    if start in sigmas:
        logits[sigmas.index(start)] = logit
    return logits


def _weighted(images: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k·images_k, weights (N, K) summing to 1 per image."""
    return sum(weights[:, k].view(-1, 1, 1, 1) * im for k, im in enumerate(images))


def _unshuffled_conv(x: torch.Tensor, conv: nn.Conv2d, factor: int) -> torch.Tensor:
    """conv(pixel_unshuffle(x, factor)) as one strided conv on x, its kernel rearranged: the same multiply-adds
    without the image-sized transpose of the unshuffle, which took ~5x the conv's time in onnxruntime (and ~4x in
    torch) on a 4-channel 512² input (a loaded 2-core VM, minimum of 30)."""
    out_ch, in_ch = conv.out_channels, conv.in_channels // factor**2
    kh, kw = conv.kernel_size
    # unshuffled channel c·f² + i·f + j holds x[c, f·y + i, f·x + j]: kernel tap (ky, kx) on it is tap (f·ky + i,
    # f·kx + j) of a kernel f times larger, moved f pixels per output
    weight = conv.weight.view(out_ch, in_ch, factor, factor, kh, kw).permute(0, 1, 4, 2, 5, 3)
    weight = weight.reshape(out_ch, in_ch, kh * factor, kw * factor)
    padding = (conv.padding[0] * factor, conv.padding[1] * factor)
    return F.conv2d(x, weight, conv.bias, stride=factor, padding=padding)


class RecentInputMemo:
    """`fn(x)` remembered for the most recent inputs (exact match), at inference only. A sweep runs a network on the
    same batches at every level (one per image size in a chunk), and what the task reads on x (its Grad-CAM, its
    top-1 or detections) does not depend on the level: computed once, not once per level. The output is
    bit-identical: same input, same computation. The inputs kept are bounded by `budget_bytes` (the newest is
    always kept)."""

    def __init__(self, budget_bytes: int = 256 * 2**20) -> None:
        self.budget_bytes = budget_bytes
        self._entries: list[tuple[torch.Tensor, object]] = []  # oldest first

    def __call__(self, x: torch.Tensor, fn: Callable[[torch.Tensor], object], active: bool) -> object:
        if not active:
            self._entries.clear()
            return fn(x)
        for i, (seen, value) in enumerate(self._entries):
            if seen.shape == x.shape and seen.dtype == x.dtype and torch.equal(seen, x):
                self._entries.append(self._entries.pop(i))
                return value
        value = fn(x)
        self._entries.append((x.detach().clone(), value))
        while len(self._entries) > 1 and self._bytes() > self.budget_bytes:
            self._entries.pop(0)
        return value

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t, _ in self._entries)


class ROIBlend(nn.Module):
    """x̄ = m·keep(x) + (1 − m)·Σ_k a_k(qp)·blur_k(x), m = feather(sigmoid(S·(r − t(qp)) + u(x, r, qp))).

    r is what the task attends to on x: a classifier's Grad-CAM for its top-1 class (what `roi:blur` keeps), or a
    detector's boxes (0/1, what `roi:blur` keeps for detection). t(qp) starts at the baseline's 0.5, a(qp) with all
    weight on `blend_start`, keep(x) = x, or with `keep_sigmas` a per-QP blur mix started on `blend_start` too, and
    the per-pixel correction u (a small conv net at half resolution) at 0: training moves the baseline where the task
    loss and the real bits say it should. With `graded_cuts` the pixels between the keep cut and the background fall
    into bands of the attention, each with a per-QP cut and blur mix of its own (`roi:graded` at the start).
    """

    def __init__(self, config: NPPConfig) -> None:
        super().__init__()
        from prepcodec.npp.features import task_attention

        self.attention = task_attention(config.roi)
        self.sigmas, self.keep_sigmas = config.blend_sigmas, config.keep_sigmas
        self.sharpness = config.roi_sharpness
        self.threshold = QPMLP(1, config.qp_hidden)
        self.mix = QPMLP(len(self.sigmas), config.qp_hidden)
        self.mix_bias = nn.Parameter(_start_logits(self.sigmas, config.blend_start, config.start_logit))
        self.graded_cuts = config.graded_cuts
        if self.graded_cuts:  # per band: a cut shift and a blur mix, both per QP
            self.band_threshold = QPMLP(len(self.graded_cuts), config.qp_hidden)
            self.band_mix = nn.ModuleList(QPMLP(len(self.sigmas), config.qp_hidden) for _ in self.graded_cuts)
            self.band_bias = nn.ParameterList(
                nn.Parameter(_start_logits(self.sigmas, s, config.start_logit)) for s in config.graded_starts)
        self._attention_memo = RecentInputMemo()
        self.memo = True  # False: every read recomputed (to time what the memo saves; the pictures are the same)
        self.evidence = None
        if config.evidence_levels:
            self.evidence = evidence.TaskEvidence(self.attention.task, config.evidence_levels, config.evidence_sigma,
                                                  config.evidence_steps)
            self.evidence_gain = QPMLP(1, config.qp_hidden)  # gain 2·sigmoid(·): 1 at the start, within [0, 2]
        if self.keep_sigmas:
            self.keep_mix = QPMLP(len(self.keep_sigmas), config.qp_hidden)
            self.keep_bias = nn.Parameter(_start_logits(self.keep_sigmas, config.blend_start, config.start_logit))
        c = config.base_channels
        self.conv1 = nn.Conv2d(4 * 4, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.qp = QPAdaptive(c, config.qp_hidden)
        self.out = nn.Conv2d(c, 4, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        attention = self.attend(x)
        out = self.suppressed(x, qp, attention)
        if self.evidence is None:
            return out
        gain = self.gain(qp)
        on = gain >= GAIN_OFF if not self.training else torch.ones_like(gain, dtype=torch.bool)
        if not bool(on.any()):
            return out
        # what the task reads on the original (a class, detections: read with the attention, in the same forward
        # pass); the ascent starts from the suppressed picture, which is what the codec gets
        delta = torch.zeros_like(out)
        delta[on] = self.evidence(out[on].detach(), _select(attention.reading, on))
        return out + (gain * on).view(-1, 1, 1, 1) * delta

    @property
    def _memo_active(self) -> bool:
        """Reuse what the task read on a recent input only in inference (training differentiates through the
        network and must not hold a batch past its step; an export traces the computation, not a remembered value)."""
        return self.memo and not self.training and not torch.is_grad_enabled() and not torch.jit.is_tracing()

    def gain(self, qp: torch.Tensor) -> torch.Tensor:
        """Per-QP multiplier (N,) of the evidence amplification, 1 at the start; zeros without it."""
        if self.evidence is None:
            return torch.zeros_like(qp)
        return 2.0 * torch.sigmoid(self.evidence_gain(qp)).view(-1)

    def suppressed(self, x: torch.Tensor, qp: torch.Tensor, attention: Attention | None = None) -> torch.Tensor:
        """The blur part: what the attention says may go, blurred per QP (the whole network without evidence).
        `attention`: `attend(x)` when the caller has it."""
        from prepcodec.npp.baselines import gaussian_blur, gaussian_blurs

        if attention is None:
            attention = self.attend(x)
        cam, feathered = attention.map, attention.feathered
        t = self.keep_cut(qp).view(-1, 1, 1, 1)
        u = self.correction(x, cam, qp)
        background_weights, kept_weights = self.mix_weights(qp)
        blurs = gaussian_blurs(x, self.sigmas + self.keep_sigmas)  # a sigma in both is blurred once
        kept = x if kept_weights is None else _weighted([blurs[s] for s in self.keep_sigmas], kept_weights)
        if self.graded_cuts:
            return self._graded(blurs, qp, feathered, t, u, kept, background_weights)
        m = gaussian_blur(torch.sigmoid(self.sharpness * (cam - t) + u), ROI_FEATHER_SIGMA).clamp(0, 1)
        background = _weighted([blurs[s] for s in self.sigmas], background_weights)
        return m * kept + (1 - m) * background

    def attend(self, x: torch.Tensor) -> Attention:
        """`attention_maps(x)`, remembered for a recent input at inference (a sweep's levels, or a probe's gains,
        share one forward pass of the task)."""
        return self._attention_memo(x, self.attention_maps, self._memo_active)

    def attention_maps(self, x: torch.Tensor) -> Attention:
        """What the task attends to on x, (graded bands only, which cut it) that map feathered, and (with the
        evidence stage) what the task reads on x: one forward pass of the task."""
        return self.attention.maps(x, ROI_FEATHER_SIGMA if self.graded_cuts else 0.0, read=self.evidence is not None)

    def correction(self, x: torch.Tensor, cam: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """The per-pixel correction u (N, 1, H, W) of the keep logit: a small QP-scaled conv net on (x, attention) at
        half resolution, 0 at initialisation."""
        height, width = x.shape[-2:]
        h = F.pad(torch.cat([x, cam], dim=1), (0, width % 2, 0, height % 2), mode="replicate")
        h = self.qp(F.relu(self.conv2(F.relu(_unshuffled_conv(h, self.conv1, 2)))), qp)
        return F.pixel_shuffle(self.out(h), 2)[..., :height, :width]

    def _graded(self, blurs: dict[float, torch.Tensor], qp: torch.Tensor, cam: torch.Tensor, t: torch.Tensor,
                u: torch.Tensor, kept: torch.Tensor, background_weights: torch.Tensor) -> torch.Tensor:
        """Bands of the (feathered) attention from the top down, each pixel's weight taken from what the bands above
        left, as `baselines.graded_blur` does with hard cuts; every band's blur mix from one set of blurs."""
        n = cam.shape[0]
        levels = torch.cat([t.view(n, 1), self.band_cuts(qp)], dim=1)  # (N, 1 + bands): keep cut, then band cuts
        # every level's sigmoid at once; level j takes its share of what the levels above it left
        share = torch.sigmoid(self.sharpness * (cam - levels[:, :, None, None]) + u)  # (N, 1 + bands, H, W)
        takes, left = [], torch.ones_like(cam)
        for j in range(levels.shape[1]):
            takes.append(left * share[:, j : j + 1])
            left = left - takes[-1]
        # per blur one single-channel coefficient map, Σ over the bands (and the background, what is left) of their
        # share times their mix weight: one batched matrix product, then one image-sized product per blur
        shares = torch.cat([*takes[1:], left], dim=1).flatten(2)  # (N, bands + 1, H·W)
        mixes = torch.stack([*self.band_weights(qp), background_weights], dim=1)  # (N, bands + 1, K)
        coefficients = (mixes.transpose(1, 2) @ shares).view(n, len(self.sigmas), *cam.shape[-2:])
        out = takes[0] * kept
        for k, sigma in enumerate(self.sigmas):
            out = out + coefficients[:, k : k + 1] * blurs[sigma]
        return out

    @torch.no_grad()
    def knobs(self, qp: float) -> dict[str, float | dict[float, float]]:
        """What the network learned at one QP, readable without an image: the keep cut on the attention, each band's
        cut, and every blur mix as {sigma: weight} (the per-pixel correction u is not in it)."""
        q = torch.tensor([float(qp)])
        out: dict[str, float | dict[float, float]] = {"keep_cut": float(self.keep_cut(q)[0])}
        background, kept = self.mix_weights(q)
        if kept is not None:
            out["kept_mix"] = dict(zip(self.keep_sigmas, kept[0].tolist(), strict=True))
        if self.graded_cuts:
            cuts = self.band_cuts(q)
            for j, weights in enumerate(self.band_weights(q)):
                out[f"band{j + 1}_cut"] = float(cuts[0, j])
                out[f"band{j + 1}_mix"] = dict(zip(self.sigmas, weights[0].tolist(), strict=True))
        out["background_mix"] = dict(zip(self.sigmas, background[0].tolist(), strict=True))
        if self.evidence is not None:
            out["evidence_gain"] = float(self.gain(q)[0])
        return out

    def keep_cut(self, qp: torch.Tensor) -> torch.Tensor:
        """Per-QP attention level (N,) above which pixels are kept: the baseline's 0.5, moved by up to ±0.5."""
        from prepcodec.npp.baselines import ROI_CAM_THRESHOLD

        return ROI_CAM_THRESHOLD + 0.5 * torch.tanh(self.threshold(qp)).view(-1)

    def band_cuts(self, qp: torch.Tensor) -> torch.Tensor:
        """Per-QP lower attention level of each band (N, bands): each cut moves by up to ±50 % of itself."""
        shift = 0.5 * torch.tanh(self.band_threshold(qp))
        return torch.tensor(self.graded_cuts, dtype=shift.dtype, device=shift.device) * (1 + shift)

    def band_weights(self, qp: torch.Tensor) -> list[torch.Tensor]:
        """Per band (top down), per-QP weights (N, K) over `sigmas`; empty without graded cuts."""
        if not self.graded_cuts:
            return []
        return [(mix(qp) + bias).softmax(dim=1) for mix, bias in zip(self.band_mix, self.band_bias, strict=True)]

    def mix_weights(self, qp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-QP weights (N, K) over `sigmas` for the background and (with `keep_sigmas`) for the kept region:
        what the network learned to blur by, readable without an image."""
        background = (self.mix(qp) + self.mix_bias).softmax(dim=1)
        kept = (self.keep_mix(qp) + self.keep_bias).softmax(dim=1) if self.keep_sigmas else None
        return background, kept


def _select(reading: object, on: torch.Tensor) -> object:
    """The images `on` (N,) of what a task read on a batch: a classifier's classes (N,), a detector's per-head
    masks [(N, ...)]."""
    if isinstance(reading, torch.Tensor):
        return reading[on]
    return [r[on] for r in reading]


class QPAdaptive(QPMLP):
    """Per-channel scales from the QP: s = 2·sigmoid(MLP(qp_norm)), initialised to s = 1."""

    def forward(self, feat: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        scale = 2.0 * torch.sigmoid(super().forward(qp.to(feat.dtype)))
        return feat * scale.view(feat.shape[0], -1, 1, 1)


class _Block(nn.Module):
    """Two 3x3 convs with ReLU, then QP-adaptive channel scaling."""

    def __init__(self, cin: int, cout: int, qp_hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.qp = QPAdaptive(cout, qp_hidden)

    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        return self.qp(F.relu(self.conv2(F.relu(self.conv1(x)))), qp)


class PixelBranch(nn.Module):
    """1x1 conv, QP scale, ReLU, 1x1 conv, QP scale, ReLU: a per-pixel colour map that depends on the QP."""

    def __init__(self, qp_hidden: int, qp_scaled: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.qp1 = QPAdaptive(3, qp_hidden) if qp_scaled else None
        self.qp2 = QPAdaptive(3, qp_hidden) if qp_scaled else None
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
                conv.bias.zero_()

    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = F.relu(self.qp1(h, qp) if self.qp1 is not None else h)
        h = self.conv2(h)
        return F.relu(self.qp2(h, qp) if self.qp2 is not None else h)


class UNetBranch(nn.Module):
    """A QP-adaptive U-Net that outputs an RGB residual (zero at initialisation)."""

    def __init__(self, config: NPPConfig) -> None:
        super().__init__()
        c, d, h, s = config.base_channels, config.depth, config.qp_hidden, config.stem
        self.config = config
        widths = [c * 2**i for i in range(d + 1)]
        self.features = None
        self.adapter = None
        self._level_of_stride: dict[int, int] = {}  # feature stride -> the U-Net level whose input it joins
        if config.features:
            from prepcodec.npp.features import FeatureAdapter, TaskFeatures, feature_channels

            channels = feature_channels(config.features)
            self.features = TaskFeatures(config.features)
            self.adapter = FeatureAdapter(channels, config.feature_width)
            self._level_of_stride = {s * 2**i: i for i in range(d + 1) if s * 2**i in channels}
        extra = {i: config.feature_width for i in self._level_of_stride.values()}  # level -> extra input channels
        self.down = nn.ModuleList([
            _Block((3 * s * s if i == 0 else widths[i - 1]) + extra.get(i, 0), widths[i], h) for i in range(d)
        ])
        self.pool = nn.ModuleList(
            [nn.Conv2d(widths[i], widths[i], 3, stride=2, padding=1) for i in range(d)] if config.down == "stride"
            else [nn.MaxPool2d(2) for _ in range(d)]
        )
        self.bottom = _Block(widths[d - 1] + extra.get(d, 0), widths[d], h)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(d)])
        self.dec = nn.ModuleList([_Block(2 * widths[i], widths[i], h) for i in range(d)])
        self.out = nn.Conv2d(widths[0], 3 * s * s, 1) if config.residual else None
        if self.out is not None:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.blend = BlendHead(widths[0], config.blend_sigmas, s, config.keep_bias) if config.blend_sigmas else None

    def forward(self, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        unit = self.config.stem * 2**self.config.depth
        if self.features is not None:
            unit = max(unit, 32)  # the task trunk's deepest tap has stride 32
        ph, pw = (unit - height % unit) % unit, (unit - width % unit) % unit  # non-negative operands: traces
        mode = "reflect" if height > ph and width > pw else "replicate"
        h = F.pad(x, (0, pw, 0, ph), mode=mode)  # unconditional (a no-op pad is cheap): traces for any size
        side = {}  # U-Net level -> projected task features to concatenate at its input
        if self.features is not None:
            feats = self.adapter(self.features(h))
            side = {self._level_of_stride[stride]: f for stride, f in feats.items()}
        if self.config.stem > 1:
            h = F.pixel_unshuffle(h, self.config.stem)
        skips = []
        for i, (block, pool) in enumerate(zip(self.down, self.pool, strict=True)):
            h = block(torch.cat([h, side[i]], dim=1) if i in side else h, qp)
            skips.append(h)
            h = pool(h)
        d = self.config.depth
        h = self.bottom(torch.cat([h, side[d]], dim=1) if d in side else h, qp)
        for i in reversed(range(self.config.depth)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], dim=1), qp)
        edit = self.blend(h, x) if self.blend is not None else 0.0
        if self.out is None:
            return edit
        out = self.out(h)
        if self.config.stem > 1:
            out = F.pixel_shuffle(out, self.config.stem)
        return out[..., :height, :width] + edit


class NPP(nn.Module):
    """`NPP(x, qp) -> x̄`, x float RGB NCHW in [0, 1] of any size, qp a float or a per-image tensor (HEVC QP)."""

    def __init__(self, config: NPPConfig | None = None) -> None:
        super().__init__()
        self.config = config or NPPConfig()
        self.pixel = PixelBranch(self.config.qp_hidden, self.config.pixel_qp) if self.config.residual else None
        self.roi = ROIBlend(self.config) if self.config.roi else None
        self.unet = UNetBranch(self.config) if self.roi is None else None

    def qp_tensor(self, qp: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One QP per image as a float tensor on x's device (a scalar is broadcast)."""
        n = x.shape[0]
        qp_t = torch.as_tensor(qp, dtype=x.dtype, device=x.device).reshape(-1)
        qp_t = qp_t.expand(n) if qp_t.numel() == 1 else qp_t
        if qp_t.numel() != n:
            raise InputError(f"got {qp_t.numel()} QPs for {n} images")
        return qp_t

    def forward(self, x: torch.Tensor, qp: float | torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"NPP expects float RGB images shaped (N, 3, H, W), got {tuple(x.shape)}")
        qp_t = self.qp_tensor(qp, x)
        if self.roi is not None:
            return self.roi(x, qp_t).clamp(0.0, 1.0)
        base = self.pixel(x, qp_t) if self.pixel is not None else x
        return (base + self.unet(x, qp_t)).clamp(0.0, 1.0)


def create_npp(size: str | NPPConfig = "small") -> NPP:
    """Build an NPP by size name ("small" for CPU, "paper" for the paper's ~9.4 M parameters) or from a config."""
    if isinstance(size, NPPConfig):
        return NPP(size)
    if size not in NPP_SIZES:
        raise InputError(f"unknown NPP size {size!r}; known: {', '.join(NPP_SIZES)}")
    return NPP(NPP_SIZES[size])


def grow_npp(trained: NPP, size: str | NPPConfig) -> NPP:
    """`trained`'s weights in the network of `size`, which must be the same network plus evidence amplification
    (`NPPConfig.without_evidence`): the added gain starts at 1, so the grown network starts as `trained` followed by
    the fixed amplification. InputError for any other pair."""
    grown = create_npp(size)
    if grown.config.without_evidence() != trained.config:
        raise InputError("--init network and --size differ by more than evidence amplification: "
                         f"{trained.config} vs {grown.config}")
    missing, unexpected = grown.load_state_dict(trained.state_dict(), strict=False)
    if unexpected or any(not k.startswith("roi.evidence_gain.") for k in missing):
        raise InputError(f"cannot grow the --init network: missing {missing}, unexpected {unexpected}")
    return grown


def with_evidence_steps(trained: NPP, steps: int) -> NPP:
    """`trained` with its evidence stage's ascent cut (or lengthened) to `steps` steps, every weight unchanged: the
    stage's cost is one task forward-and-backward pass a step, so this is the encoder cost's dial
    (docs/training.md, "Session 21"). InputError for a network without the stage."""
    if not trained.config.evidence_levels:
        raise InputError("this network has no evidence stage (evidence_levels = 0): there are no ascent steps to set")
    derived = NPP(replace(trained.config, evidence_steps=steps))  # the config checks the steps
    derived.load_state_dict(trained.state_dict())
    return derived


def config_dict(model: NPP) -> dict:
    """JSON-able config, saved beside weights."""
    return asdict(model.config)


def count_parameters(model: nn.Module) -> int:
    """Trainable size of a network (the NPP's or a proxy's), as the docs report it."""
    return sum(p.numel() for p in model.parameters())
