"""The NPP trainer's validation score for classical preprocessors: what the selection metric says about them.

The trainer picks checkpoints by a BD-rate at equal task loss on held-out *training* images (centre crops, real
codec at the training preset). To read those numbers, this script puts the classical baselines through the same
`Validator`: if `roi:blur:2` (−28 % at equal top-1 on imagenet-eval) scores −X % here, an NPP scoring near −X %
on validation is in the baseline's league. No evaluation image is touched.

    .venv/bin/python scripts/validate_baselines.py --pre blur:1,roi:blur:2,roi:blur:4
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from prepcodec.codecs.pool import CodecPool
from prepcodec.eval.bdrate import bd_rate
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
    args = parser.parse_args(argv)
    cfg = NPPTrainConfig()  # the defaults of `prepcodec train`: the same crops, QPs and preset
    task = create_task(cfg.task)
    bank = load_or_build(CropRecipe(), task)
    with CodecPool(args.workers) as pool:
        validator = Validator(bank, task, real_codec(pool, cfg.codec, cfg.preset), cfg.val_qps)
        plain = validator.curve(None, torch.device("cpu"))
        rows = []
        for spec in args.pre.split(","):
            cur = validator.curve(as_tensor_fn(spec, task), torch.device("cpu"))
            bd = bd_rate(plain["bpp"], [-math.log(v) for v in plain["task_loss"]],
                         cur["bpp"], [-math.log(v) for v in cur["task_loss"]], method="pchip")
            rows.append({"pre": spec, "bd_rate_task_loss_pct": round(bd, 2), "bpp": [round(b, 3) for b in cur["bpp"]],
                         "agreement": cur["agreement"]})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
