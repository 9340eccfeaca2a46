"""What the NPP trainer's objective says about the evidence stage's gain, measured with the real codec.

For an evidence network (`roi-*-amp`), x̄(g) = suppress(x, qp) + g·δ. The trainer minimises
L = bpp + λ(qp)·D_task + β·D_pre and moves g by the proxy's gradient; this script walks g itself on training crops
(the trainer's crop bank: no evaluation image) and reports, per QP, the real codec's bpp, both detector task losses
(`kl`: soft distillation; `confident`: the teacher's confident detections made certain), D_pre, L for each loss,
and mAP against the teacher's boxes (the trainer's validation "agreement"). It answers whether a run that turns the
gain down (docs/training.md, "Session 13") does so for the task loss, the bits or D_pre.

    python scripts/probe_evidence_gain.py --npp npp:det --lam-from runs/npp-det-c/checkpoint.pt \
        --lam-from-confident runs/npp-det-d/checkpoint.pt --crops 16 --qps 22,30,38,44 --gains 0,0.5,1,1.5
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from prepcodec.codecs.pool import CodecPool
    from prepcodec.npp.zoo import load_npp
    from prepcodec.safe_load import safe_torch_load
    from prepcodec.tasks.coco_eval import detection_map, gt_from_predictions
    from prepcodec.tasks.detection import TEACHER_THRESHOLD
    from prepcodec.tasks.registry import create_task
    from prepcodec.train.crops import CropRecipe, load_or_build
    from prepcodec.train.lambda_qp import LambdaSchedule
    from prepcodec.train.routes import real_codec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npp", default="npp:det")
    ap.add_argument("--lam-from", required=True, help="a `--task-loss kl` run's checkpoint (its λ*(qp) table)")
    ap.add_argument("--lam-from-confident", required=True, help="a `--task-loss confident` run's checkpoint")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--qps", default="22,30,38,44")
    ap.add_argument("--gains", default="0,0.5,1,1.5")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--fit", default=None, help="write NPP weights (.pt) whose gain is, per QP, the gain of the "
                    "highest mAP against the teacher in this table (ties: the smaller), fitted by the gain MLP "
                    "(the confident-loss column is then skipped)")
    ap.add_argument("--grad", action="store_true", help="instead: the trainer's gradient of each loss term w.r.t. "
                    "the gain at g = 1, per route, beside the real codec's secant slope over g in [0.5, 1.5]")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    loaded = load_npp(args.npp)
    net = loaded.model.eval()
    roi = net.roi
    if roi is None or roi.evidence is None:
        raise SystemExit(f"{args.npp} has no evidence stage")
    task = create_task(roi.evidence.task.name)
    recipe = CropRecipe(datasets=("coco-train", "photos-train"), crop=512, crops_per_image=2, val_images=32)
    bank = load_or_build(recipe, task)
    lam = {k: LambdaSchedule(args.lam, safe_torch_load(p, "training checkpoint")["lam_table"])
           for k, p in (("kl", args.lam_from), ("confident", args.lam_from_confident))}
    real = real_codec(CodecPool(workers=2), "hevc", "fast")  # the trainer's default preset
    idx = torch.linspace(0, len(bank.train) - 1, args.crops).round().long()
    if args.grad:
        return gradient_table(roi, task, bank, idx, real, lam["kl"], args)
    gains = [float(g) for g in args.gains.split(",")]
    print("| QP | g | bpp | D kl | D confident | D_pre | L kl | L confident | mAP vs teacher |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = {}
    for qp_int in [int(q) for q in args.qps.split(",")]:
        acc = {g: {"bits": 0.0, "kl": 0.0, "confident": 0.0, "pre": 0.0, "preds": [], "teach": []} for g in gains}
        for s in range(0, len(idx), args.batch):
            x, _ = bank.batch(idx[s : s + args.batch], torch.device("cpu"))
            qp = torch.full((len(x),), float(qp_int))
            base = roi.suppressed(x, qp).clamp(0, 1)
            delta = roi.evidence(base, roi.evidence.read(x))
            soft = task.pseudo_targets(x)
            hard = None if args.fit else task.confident_targets(soft)
            for g in gains:
                x_bar = (base + g * delta).clamp(0, 1)
                x_hat, bits = real(x_bar, qp)
                loss_kl, preds = task.loss_and_predictions(x_hat, soft, reduction="none")
                loss_conf = task.loss(x_hat, hard, reduction="none") if hard is not None else torch.full_like(
                    loss_kl, float("nan"))
                a = acc[g]
                a["bits"] += float(bits.sum())
                a["kl"] += float(loss_kl.sum())
                a["confident"] += float(loss_conf.sum())
                a["pre"] += float((x_bar - x).square().mean(dim=(1, 2, 3)).sum())
                a["preds"] += preds
                a["teach"] += soft.predictions
        n, pixels = len(idx), x.shape[2] * x.shape[3]
        for g in gains:
            a = acc[g]
            bpp, d_kl, d_conf, d_pre = a["bits"] / (n * pixels), a["kl"] / n, a["confident"] / n, a["pre"] / n
            q = torch.tensor([float(qp_int)])
            l_kl = bpp + float(lam["kl"](q)) * d_kl + args.beta * d_pre
            l_conf = bpp + float(lam["confident"](q)) * d_conf + args.beta * d_pre
            m = detection_map(a["preds"], gt_from_predictions(a["teach"], TEACHER_THRESHOLD))["map"]
            if qp_int not in best or m > best[qp_int][1]:
                best[qp_int] = (g, m)
            print(f"| {qp_int} | {g:g} | {bpp:.4f} | {d_kl:.2f} | {d_conf:.2f} | {d_pre:.5f} | {l_kl:.4f} | "
                  f"{l_conf:.4f} | {m:.3f} |", flush=True)
    lams = {k: [round(float(fn(torch.tensor([float(q)]))), 4) for q in args.qps.split(",")] for k, fn in lam.items()}
    print(f"\n{n} training crops (512², coco-train + photos-train bank), real x265 fast preset; "
          f"λ = {args.lam} λ*(qp), β = {args.beta}; λ*(QP) kl {lams['kl']}, confident {lams['confident']}")
    if args.fit:
        fit_gain(net, {q: g for q, (g, _) in best.items()}, args, {**loaded.meta.get("training", {}),
                                                                    "gain_fit_from_sha256": loaded.sha256})


def fit_gain(net, targets: dict[int, float], args, training: dict) -> None:
    """Fit the network's per-QP gain MLP to `targets` (QP -> gain) and export the network with its provenance."""
    from prepcodec.npp.zoo import export_npp

    qps = torch.tensor(sorted(targets), dtype=torch.float32)
    want = torch.tensor([targets[int(q)] for q in qps.tolist()])
    roi = net.roi
    params = list(roi.evidence_gain.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    with torch.enable_grad():
        for p in params:
            p.requires_grad_(True)
        for _ in range(3000):
            opt.zero_grad()
            loss = (roi.gain(qps) - want).square().mean()
            loss.backward()
            opt.step()
    got = roi.gain(qps).detach()
    print(f"\nfitted gain per QP {dict(zip(qps.int().tolist(), [round(float(v), 3) for v in got], strict=True))}"
          f" (targets {dict(zip(qps.int().tolist(), want.tolist(), strict=True))})")
    fitted = {int(q): float(v) for q, v in zip(qps, got, strict=True)}
    training = {**training, "gain_fit": {"from": args.npp, "targets": dict(zip(fitted, want.tolist(), strict=True)),
                             "fitted": fitted, "crops": args.crops, "gains": args.gains,
                             "criterion": "mAP against the teacher's boxes (score >= 0.3), real x265 fast preset, "
                                          "training crops of the coco-train + photos-train bank",
                             "command": "scripts/probe_evidence_gain.py"}}
    print(f"wrote {export_npp(net, args.fit, training=training)}")


def gradient_table(roi, task, bank, idx, real, lam, args) -> None:
    """dL_term/dg at g = 1 as the trainer computes it (routes real and ste, --task-loss kl), and the real codec's
    secant slope (L(1.5) − L(0.5)) / 1 of the same term, per QP, summed over the crops' means."""
    from prepcodec.proxy.zoo import default_proxy_name, load_proxy
    from prepcodec.train.routes import CodecPath

    proxy = load_proxy(default_proxy_name("hevc"))
    paths = {r: CodecPath(r, proxy, real) for r in ("real", "ste")}
    print("| QP | route | dR/dg | λ·dD/dg | β·dD_pre/dg | dL/dg | real secant: ΔR | λ·ΔD | β·ΔD_pre | ΔL |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for qp_int in [int(q) for q in args.qps.split(",")]:
        sums = {r: torch.zeros(3) for r in paths} | {"secant": torch.zeros(3)}
        q1 = torch.tensor([float(qp_int)])
        for s in range(0, len(idx), args.batch):
            x, _ = bank.batch(idx[s : s + args.batch], torch.device("cpu"))
            qp = torch.full((len(x),), float(qp_int))
            with torch.no_grad():
                base = roi.suppressed(x, qp)
                delta = roi.evidence(base, roi.evidence.read(x))
                soft = task.pseudo_targets(x)
            for name, path in paths.items():
                with torch.enable_grad():
                    g = torch.ones((), requires_grad=True)
                    x_bar = (base + g * delta).clamp(0, 1)
                    x_hat, bits = path(x_bar, qp)
                    terms = [bits / (x.shape[2] * x.shape[3]), float(lam(q1)) * task.loss(x_hat, soft, "none"),
                             args.beta * (x_bar - x).square().mean(dim=(1, 2, 3))]
                    sums[name] += torch.stack([torch.autograd.grad(t.mean(), g, retain_graph=True)[0] for t in terms])
            with torch.no_grad():
                ends = []
                for gv in (0.5, 1.5):
                    x_bar = (base + gv * delta).clamp(0, 1)
                    x_hat, bits = real(x_bar, qp)
                    ends.append(torch.stack([(bits / (x.shape[2] * x.shape[3])).mean(),
                                             float(lam(q1)) * task.loss(x_hat, soft, "none").mean(),
                                             args.beta * (x_bar - x).square().mean()]))
                sums["secant"] += ends[1] - ends[0]
        batches = (len(idx) + args.batch - 1) // args.batch
        sec = sums["secant"] / batches
        for name in paths:
            d = sums[name] / batches
            print(f"| {qp_int} | {name} | {d[0]:+.4f} | {d[1]:+.4f} | {d[2]:+.6f} | {d.sum():+.4f} | {sec[0]:+.4f} | "
                  f"{sec[1]:+.4f} | {sec[2]:+.6f} | {sec.sum():+.4f} |", flush=True)


if __name__ == "__main__":
    main()
