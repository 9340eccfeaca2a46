"""The NPP trainer's validation score for classical preprocessors: what the selection metric says about them.

The trainer picks checkpoints by a BD-rate at equal task loss on held-out *training* images (centre crops, real
codec at the training preset). To read those numbers, this script puts the classical baselines through the same
`Validator`: if `roi:blur:2` (−28 % at equal top-1 on imagenet-eval) scores −X % here, an NPP scoring near −X %
on validation is in the baseline's league. No evaluation image is touched.

    .venv/bin/python scripts/validate_baselines.py --pre blur:1,roi:blur:2,roi:blur:4
    # the split runs E–H validate on (150 whole 256² images), networks too, top-1 cross-entropy as the task loss:
    .venv/bin/python scripts/validate_baselines.py --datasets imagenet-train,photos-train,coco-train \
        --val-images 150 --val-crop 256 --task-loss top1 --pre roi:blur:2,npp:cls,npp:PATH.pt
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from prepcodec.codecs.pool import CodecPool
from prepcodec.eval.bdrate import bd_rate
from prepcodec.eval.compare import bd_pair
from prepcodec.npp.preprocessors import parse_pre
from prepcodec.tasks.registry import create_task
from prepcodec.train.crops import CropRecipe, load_or_build
from prepcodec.train.npp_trainer import NPPTrainConfig, Validator
from prepcodec.train.routes import real_codec


def as_tensor_fn(spec: str, task):
    """A `--pre` spec as the (x, qp) -> x̄ tensor function the validator calls (gradients on for Grad-CAM)."""
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
