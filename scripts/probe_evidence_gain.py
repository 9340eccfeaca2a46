"""What the NPP trainer's objective says about the evidence stage's gain, measured with the real codec.

For an evidence network (`roi-*-amp`), x̄(g) = suppress(x, qp) + g·δ. The trainer minimises
L = bpp + λ(qp)·D_task + β·D_pre and moves g by the proxy's gradient; this script walks g itself on *training*
crops (the crop bank the network was trained on, from its training summary: no validation or evaluation image) and
reports, per QP, the real codec's bpp, the task loss (the trainer's `--task-loss kl`; for a detector also
`confident` with --lam-from-confident), D_pre, L, and the trainer's validation agreement (a classifier's top-1
agreement with the teacher, a detector's mAP against the teacher's boxes). `--grad` puts the trainer's own dL/dg
beside the real codec's secant slope; `--fit` writes the network with its gain fitted, per QP, to the gain of the
highest agreement (docs/training.md, "Session 13": run det-E).

    python scripts/probe_evidence_gain.py --npp npp:det --lam-from training/npp-det-c/checkpoint.pt \
        --lam-from-confident training/npp-det-d/checkpoint.pt --crops 16 --qps 22,30,38,44 --gains 0,0.5,1,1.5
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from prepcodec.codecs.pool import CodecPool
    from prepcodec.npp.zoo import load_npp
    from prepcodec.train.routes import real_codec
    from prepcodec.train.teacher import teacher_for

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npp", default="npp:det")
    ap.add_argument("--lam-from", default=None, help="a `--task-loss kl` run's checkpoint: its λ*(qp) table gives "
                    "the L column (without it L is not shown)")
    ap.add_argument("--lam-from-confident", default=None, help="a detector's `--task-loss confident` run's "
                    "checkpoint: adds that loss and its L")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--qps", default="22,30,38,44")
    ap.add_argument("--gains", default="0,0.5,1,1.5")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--fit", default=None, help="write NPP weights (.pt) whose gain is, per QP, the gain of the "
                    "highest agreement in this table (ties: the smaller), fitted by the gain MLP")
    ap.add_argument("--grad", action="store_true", help="instead: the trainer's gradient of each loss term w.r.t. "
                    "the gain at g = 1, per route, beside the real codec's secant slope over g in [0.5, 1.5]")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    loaded = load_npp(args.npp)
    net = loaded.model.eval()
    roi = net.roi
    if roi is None or roi.evidence is None:
        raise SystemExit(f"{args.npp} has no evidence stage")
    task = roi.evidence.task
    target = teacher_for(task)
    bank = training_bank(loaded.meta, task)
    lam = {k: lambda_table(p, args.lam) for k, p in (("kl", args.lam_from), ("confident", args.lam_from_confident))}
    real = real_codec(CodecPool(workers=2), "hevc", "fast")  # the trainer's default preset
    idx = torch.linspace(0, len(bank.train) - 1, args.crops).round().long()
    if args.grad:
        if lam["kl"] is None:
            raise SystemExit("--grad needs --lam-from")
        return gradient_table(roi, task, bank, idx, real, lam["kl"], args)
    gains = [float(g) for g in args.gains.split(",")]
    confident = lam["confident"] is not None and getattr(task, "kind", "") == "detection"
    print("| QP | g | bpp | D kl | D confident | D_pre | L kl | L confident | agreement |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = {}
    for qp_int in [int(q) for q in args.qps.split(",")]:
        rows = walk_gain(roi, task, target, bank, idx, real, qp_int, gains, args.batch, confident)
        for g, (bpp, d_kl, d_conf, d_pre, agreement) in rows.items():
            if qp_int not in best or agreement > best[qp_int][1]:
                best[qp_int] = (g, agreement)
            q = torch.tensor([float(qp_int)])
            ls = [bpp + float(lam[k](q)) * d + args.beta * d_pre if lam[k] is not None and d == d else float("nan")
                  for k, d in (("kl", d_kl), ("confident", d_conf))]
            print(f"| {qp_int} | {g:g} | {bpp:.4f} | {d_kl:.2f} | {d_conf:.2f} | {d_pre:.5f} | {ls[0]:.4f} | "
                  f"{ls[1]:.4f} | {agreement:.3f} |", flush=True)
    lams = {k: [round(float(fn(torch.tensor([float(q)]))), 4) for q in args.qps.split(",")]
            for k, fn in lam.items() if fn is not None}
    print(f"\n{len(idx)} training crops of the network's crop bank, real x265 fast preset; λ = {args.lam} λ*(qp), "
          f"β = {args.beta}; λ*(QP) {lams}")
    if args.fit:
        fit_gain(net, {q: g for q, (g, _) in best.items()}, args, {**loaded.meta.get("training", {}),
                                                                    "gain_fit_from_sha256": loaded.sha256})


def training_bank(meta: dict, task):
    """The crop bank the network was trained on (its training summary's recipe; cached by the trainer)."""
    from prepcodec.train.crops import CropRecipe, load_or_build

    crops = dict(meta.get("training", {}).get("config", {}).get("crops") or {})
    if not crops:
        raise SystemExit("the network's training summary has no crop recipe")
    return load_or_build(CropRecipe(**{**crops, "datasets": tuple(crops["datasets"])}), task)


def lambda_table(checkpoint: str | None, scale: float):
    """λ(qp) from a training checkpoint's λ*(qp) table, or None."""
    from prepcodec.safe_load import safe_torch_load
    from prepcodec.train.lambda_qp import LambdaSchedule

    return None if checkpoint is None else LambdaSchedule(scale, safe_torch_load(checkpoint, "checkpoint")["lam_table"])


def walk_gain(roi, task, target, bank, idx, real, qp_int: int, gains: list[float], batch: int,
              confident: bool) -> dict[float, tuple[float, float, float, float, float]]:
    """Per gain: (bpp, D kl, D confident or nan, D_pre, agreement) over the crops at one QP, the real codec."""
    acc = {g: {"bits": 0.0, "kl": 0.0, "confident": 0.0, "pre": 0.0, "parts": []} for g in gains}
    for s in range(0, len(idx), batch):
        x, teacher = bank.batch(idx[s : s + batch], torch.device("cpu"))
        qp = torch.full((len(x),), float(qp_int))
        attention = roi.attend(x)  # the attention and what the task reads: one forward pass
        base = roi.suppressed(x, qp, attention).clamp(0, 1)
        delta = roi.evidence(base, attention.reading)
        targets = target.targets(x, teacher)  # once per batch, for every gain (a detector's: one forward pass)
        hard = task.confident_targets(targets) if confident else None
        for g in gains:
            x_bar = (base + g * delta).clamp(0, 1)
            x_hat, bits = real(x_bar, qp)
            loss, part = target.batch_terms(x, x_hat, teacher, targets)
            a = acc[g]
            a["bits"] += float(bits.sum())
            a["kl"] += loss
            a["confident"] += float(task.loss(x_hat, hard, reduction="none").sum()) if confident else float("nan")
            a["pre"] += float((x_bar - x).square().mean(dim=(1, 2, 3)).sum())
            a["parts"].append(part)
    n, pixels = len(idx), bank.train.shape[1] * bank.train.shape[2]
    return {g: (a["bits"] / (n * pixels), a["kl"] / n, a["confident"] / n, a["pre"] / n,
                target.agreement(a["parts"], n)) for g, a in acc.items()}


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
                                         "criterion": "the trainer's validation agreement (classifier: top-1 with "
                                                      "the teacher; detector: mAP against its boxes >= 0.3), real "
                                                      "x265 fast preset, training crops of the network's bank",
                                         "command": "scripts/probe_evidence_gain.py"}}
    print(f"wrote {export_npp(net, args.fit, training=training)}")


def loss_parts(target, x, teacher, x_bar, x_hat, bits, lam_q: float, beta: float) -> list[torch.Tensor]:
    """The trainer's three loss terms per image (`npp_trainer.loss_terms`): rate, λ·D_task, β·D_pre."""
    return [bits / (x.shape[2] * x.shape[3]), lam_q * target.distortion(x, x_hat, teacher),
            beta * (x_bar - x).square().mean(dim=(1, 2, 3))]


def gradient_table(roi, task, bank, idx, real, lam, args) -> None:
    """dL_term/dg at g = 1 as the trainer computes it (routes real and ste, --task-loss kl), and the real codec's
    secant slope (L(1.5) − L(0.5)) / 1 of the same term, per QP, averaged over the crop batches."""
    from prepcodec.proxy.zoo import default_proxy_name, load_proxy
    from prepcodec.train.routes import CodecPath
    from prepcodec.train.teacher import teacher_for

    target = teacher_for(task)
    proxy = load_proxy(default_proxy_name("hevc"))
    paths = {r: CodecPath(r, proxy, real) for r in ("real", "ste")}
    print("| QP | route | dR/dg | λ·dD/dg | β·dD_pre/dg | dL/dg | real secant: ΔR | λ·ΔD | β·ΔD_pre | ΔL |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for qp_int in [int(q) for q in args.qps.split(",")]:
        sums = {r: torch.zeros(3) for r in paths} | {"secant": torch.zeros(3)}
        lam_q = float(lam(torch.tensor([float(qp_int)])))
        for s in range(0, len(idx), args.batch):
            x, teacher = bank.batch(idx[s : s + args.batch], torch.device("cpu"))
            qp = torch.full((len(x),), float(qp_int))
            attention = roi.attend(x)
            base = roi.suppressed(x, qp, attention)
            delta = roi.evidence(base, attention.reading)
            for name, path in paths.items():
                with torch.enable_grad():
                    g = torch.ones((), requires_grad=True)
                    x_bar = (base + g * delta).clamp(0, 1)
                    parts = loss_parts(target, x, teacher, x_bar, *path(x_bar, qp), lam_q, args.beta)
                    sums[name] += torch.stack([torch.autograd.grad(t.mean(), g, retain_graph=True)[0] for t in parts])
            ends = []
            for gv in (0.5, 1.5):
                x_bar = (base + gv * delta).clamp(0, 1)
                parts = loss_parts(target, x, teacher, x_bar, *real(x_bar, qp), lam_q, args.beta)
                ends.append(torch.stack([t.mean() for t in parts]))
            sums["secant"] += ends[1] - ends[0]
        batches = (len(idx) + args.batch - 1) // args.batch
        sec = sums["secant"] / batches
        for name in paths:
            d = sums[name] / batches
            print(f"| {qp_int} | {name} | {d[0]:+.4f} | {d[1]:+.4f} | {d[2]:+.6f} | {d.sum():+.4f} | {sec[0]:+.4f} | "
                  f"{sec[1]:+.4f} | {sec[2]:+.6f} | {sec.sum():+.4f} |", flush=True)


if __name__ == "__main__":
    main()
