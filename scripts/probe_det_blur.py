"""Build the session-20 probe networks: CenterNet's evidence stage after blur:1 everywhere (not det-B's ROI blur).

`start.pt` = `npp:det`'s architecture with both blur mixes reduced to σ 1 (kept region and background alike, so its
box mask has no effect: x̄ = blur(x, 1) + g(qp)·δ), its evidence gain transplanted from `npp:det` (det-E);
`blur1.pt` = the same without the evidence stage (blur:1 as a network, for the trainer's validation). Then the gain
is fitted on training crops and both are validated (docs/training.md, "Session 20"):

    python scripts/probe_det_blur.py --out runs/det-blur
    python scripts/probe_evidence_gain.py --npp runs/det-blur/start.pt --crops 32 --qps 22,26,30,34,38,42,44 \
        --gains 0,0.5,1,1.5,1.9 --fit runs/det-blur/fit.pt
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    from prepcodec.npp.baselines import gaussian_blur
    from prepcodec.npp.model import NPP
    from prepcodec.npp.zoo import export_npp, load_npp

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/det-blur"))
    args = ap.parse_args()
    torch.manual_seed(0)  # the parts without effect (mask correction) are initialised, reproducibly
    det = load_npp("npp:det")
    config = replace(det.model.config, blend_sigmas=(1.0,), keep_sigmas=(1.0,))
    start = NPP(config).eval()
    gain = {k: v for k, v in det.model.state_dict().items() if k.startswith("roi.evidence_gain.")}
    _, unexpected = start.load_state_dict(gain, strict=False)
    assert not unexpected, unexpected
    blur1 = NPP(config.without_evidence()).eval()
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():  # the suppressed picture is blur:1 to float rounding, whatever the QP
        for qp in (22.0, 38.0):
            assert float((start.roi.suppressed(x, torch.full((2,), qp)) - gaussian_blur(x, 1.0)).abs().max()) < 1e-6
            assert float((blur1(x, qp) - gaussian_blur(x, 1.0).clamp(0, 1)).abs().max()) < 1e-6
    training = det.meta.get("training", {})  # the crop bank the gain fit draws from: det-E's own
    args.out.mkdir(parents=True, exist_ok=True)
    for name, net in (("start", start), ("blur1", blur1)):
        print(export_npp(net, args.out / f"{name}.pt", training))


if __name__ == "__main__":
    main()
