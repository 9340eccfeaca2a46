"""The NPP trainer's validation score for classical preprocessors: what the selection metric says about them.

The trainer picks checkpoints by a BD-rate at equal task loss on held-out *training* images (centre crops, real
codec at the training preset). To read those numbers, this script puts the classical baselines through the same
`Validator`: if `roi:blur:2` (−28 % at equal top-1 on imagenet-eval) scores −X % here, an NPP scoring near −X %
on validation is in the baseline's league. No evaluation image is touched.

    .venv/bin/python scripts/validate_baselines.py --pre blur:1,roi:blur:2,roi:blur:4
    # the split runs E–H validate on (150 whole 256² images), networks too, top-1 cross-entropy as the task loss:
    .venv/bin/python scripts/validate_baselines.py --datasets imagenet-train,photos-train,coco-train \
        --val-images 150 --val-crop 256 --task-loss top1 --pre roi:blur:2,npp:cls,npp:PATH.pt
    # variants that are no --pre spec (top-5 CAMs, confidence gate, chroma blur, ...): --pre probe:NAME (PROBES)
"""

from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

from prepcodec.codecs.pool import CodecPool
from prepcodec.eval.bdrate import bd_rate
from prepcodec.eval.compare import bd_pair
from prepcodec.npp.baselines import feathered, gaussian_blur, graded_blur, suppress
from prepcodec.npp.features import TaskCAM
from prepcodec.npp.preprocessors import parse_pre
from prepcodec.tasks.registry import create_task
from prepcodec.train.crops import CropRecipe, load_or_build
from prepcodec.train.npp_trainer import NPPTrainConfig, Validator
from prepcodec.train.routes import real_codec

YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _chroma_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    ycc = torch.einsum("ij,njhw->nihw", YCC, x)
    ycc = torch.cat([ycc[:, :1], gaussian_blur(ycc[:, 1:], sigma)], dim=1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(YCC), ycc).clamp(0, 1)


def _border_extended(x: torch.Tensor, crop: float = 224 / 256) -> torch.Tensor:
    """The part of the picture the classifier's centre crop never sees replaced by the crop's edge, replicated."""
    h, w = x.shape[-2:]
    bh, bw = round(h * (1 - crop) / 2), round(w * (1 - crop) / 2)
    return F.pad(x[..., bh : h - bh, bw : w - bw], (bw, bw, bh, bh), mode="replicate")


def _roi(x: torch.Tensor, cam: torch.Tensor, cut: float = 0.5, sigma: float = 2.0) -> torch.Tensor:
    return suppress(x, feathered((cam >= cut).to(x.dtype)), "blur", sigma)


MILD = ((0.5, 0.0), (0.25, 0.5), (0.1, 1.0), (0.0, 2.0))  # = --pre roi:graded:2

# variants that are not --pre specs (session 8's probes, docs/training.md): name -> (top_k, fn(x, cam, confidence))
PROBES = {
    "top5": (5, lambda x, cam, conf: _roi(x, cam)),
    "top5-cut0.3": (5, lambda x, cam, conf: _roi(x, cam, 0.3)),
    "gate": (1, lambda x, cam, conf: x + conf.view(-1, 1, 1, 1) * (_roi(x, cam) - x)),
    "chroma2": (1, lambda x, cam, conf: _chroma_blur(_roi(x, cam), 2.0)),
    "chroma4": (1, lambda x, cam, conf: _chroma_blur(_roi(x, cam), 4.0)),
    "border": (1, lambda x, cam, conf: _border_extended(_roi(x, cam))),
    "graded-mild": (1, lambda x, cam, conf: graded_blur(x, cam, MILD)),
    "graded-wide": (1, lambda x, cam, conf: graded_blur(x, cam, ((0.3, 0.0), (0.15, 1.0), (0.05, 2.0), (0.0, 4.0)))),
    "graded-5": (1, lambda x, cam, conf: graded_blur(
        x, cam, ((0.5, 0.0), (0.3, 0.5), (0.15, 1.0), (0.05, 2.0), (0.0, 4.0)))),
    "graded-gate": (1, lambda x, cam, conf: x + conf.view(-1, 1, 1, 1) * (graded_blur(x, cam) - x)),
    "graded-mild-gate": (1, lambda x, cam, conf: x + conf.view(-1, 1, 1, 1) * (graded_blur(x, cam, MILD) - x)),
}


def probe_fn(name: str, task):
    """`probe:NAME`: the classifier's (top-k) Grad-CAM placed on x, then one of PROBES."""
    top_k, fn = PROBES[name]
    cam_of = TaskCAM(NPPTrainConfig().task, top_k)  # the validator's classifier

    def run(x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            confidence = task.logits(x).softmax(dim=1).amax(dim=1)
        return fn(x, cam_of(x), confidence)

    return run


def as_tensor_fn(spec: str, task):
    """A `--pre` spec as the (x, qp) -> x̄ tensor function the validator calls (gradients on for Grad-CAM)."""
    if spec.startswith("probe:"):
        return probe_fn(spec[len("probe:"):], task)
    pre = parse_pre(spec, task)

    def run(x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            if not pre.qp_aware:
                return pre.tensor(x)
            return torch.cat([pre.tensor(x[i : i + 1], float(q)) for i, q in enumerate(qp.tolist())])

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pre", default="blur:1,roi:blur:2,roi:blur:4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--datasets", default="imagenet-train", help="as `prepcodec train --datasets`")
    parser.add_argument("--val-images", type=int, default=50)
    parser.add_argument("--val-crop", type=int, default=0)
    parser.add_argument("--task-loss", default="kl", choices=["kl", "top1"])
    args = parser.parse_args(argv)
    cfg = NPPTrainConfig()  # the defaults of `prepcodec train`: the same QPs and preset
    task = create_task(cfg.task)
    recipe = CropRecipe(datasets=tuple(args.datasets.split(",")), val_images=args.val_images, val_crop=args.val_crop)
    bank = load_or_build(recipe, task)
    with CodecPool(args.workers) as pool:
        validator = Validator(bank, task, real_codec(pool, cfg.codec, cfg.preset), cfg.val_qps, kind=args.task_loss)
        plain = validator.curve(None, torch.device("cpu"))
        rows = []
        for spec in args.pre.split(","):
            cur = validator.curve(as_tensor_fn(spec, task), torch.device("cpu"))
            bd = bd_rate(plain["bpp"], [-math.log(v) for v in plain["task_loss"]],
                         cur["bpp"], [-math.log(v) for v in cur["task_loss"]], method="pchip")
            agree = bd_pair(plain["bpp"], plain["agreement"], cur["bpp"], cur["agreement"])[1]
            rows.append({"pre": spec, "bd_rate_task_loss_pct": round(bd, 2),
                         "bd_rate_agreement_pct": None if agree is None else round(agree, 2),
                         "bpp": [round(b, 3) for b in cur["bpp"]], "agreement": cur["agreement"]})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
