"""Amortised evidence: can a small decoder predict `npp:cls`'s ascent δ in one forward pass?

`npp:cls`'s evidence stage (`npp.evidence`) climbs the classifier's log-probability of its own top-1 class with five
forward-and-backward passes of Lite0 (~370 ms here, 2.7x the x265 encode at 512², `docs/benchmarks.md`), and the
backward pass is why the network does not export to ONNX. The ROI part already runs Lite0 forward on the same crop
for its Grad-CAM; its head gives the exact gradient at the last convolution for the top-1 class (`TaskCAM
.class_gradient`). This probe trains a small decoder from that gradient and the trunk's stride-8/16/32 features to
the real ascent's δ, mapped onto the image as the real gradient is (`uncrop_map_matrix`, Gaussian σ of the stage,
bounded by its levels), and measures what it keeps of the stage's gain on *held-out training* crops (the network's
own validation crops: images never in the decoder's data, no evaluation split), real x265 at the trainer's preset:

    python scripts/probe_amortised_evidence.py data --crops 1200 --dir runs/amortised   # the real ascent's δ
    python scripts/probe_amortised_evidence.py train --dir runs/amortised --epochs 30
    python scripts/probe_amortised_evidence.py eval --dir runs/amortised --qps 22,26,30,34,38,42,44
    python scripts/probe_amortised_evidence.py stats --dir runs/amortised --crops 32   # what δ looks like

    python scripts/probe_amortised_evidence.py generator --dir runs/amortised --steps 800   # the objective instead

`data` and `generator` resume; everything is on the CPU. Outcome (session 18, docs/training.md): imitating δ does
not generalise — on held-out crops the prediction is no closer to δ than zero is (cosine 0.04) — and the generator
trained on the ascent's objective had not raised the held-out top-1 log-probability after 300 steps (−0.03 nats;
the ascent: +0.47), so `eval` was not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

NPP = "npp:cls"
BATCH = 8


def load(npp: str = NPP):
    """(the NPP's ROI part, its crop bank) — the bank the network was trained on, from its training summary."""
    from probe_evidence_gain import training_bank

    from prepcodec.npp.zoo import load_npp

    loaded = load_npp(npp)
    roi = loaded.model.eval().roi
    if roi is None or roi.evidence is None or not hasattr(roi.attention, "read_head"):
        raise SystemExit(f"{npp} has no classifier evidence stage")
    return roi, training_bank(loaded.meta, roi.evidence.task)


class EvidenceDecoder(nn.Module):
    """Top-1 gradient at the head conv (stride 32) + trunk features (strides 32, 16, 8) -> a 3-channel map on the
    classifier's crop grid at stride 4, which `image_delta` puts onto the picture as the real gradient arrives."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.grad32, self.feat32 = nn.Conv2d(1280, w, 1), nn.Conv2d(320, w, 1)
        self.mix32 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.feat16, self.mix16 = nn.Conv2d(112, w, 1), nn.Conv2d(2 * w, w, 3, padding=1)
        self.feat8, self.mix8 = nn.Conv2d(40, w // 2, 1), nn.Conv2d(w + w // 2, w, 3, padding=1)
        # the crop itself at stride 4: the input gradient follows the picture's edges, which the trunk's stride-8
        # features no longer place (a first decoder without it fitted nothing: held-out MSE at the zero prediction's)
        self.pix2, self.pix4 = nn.Conv2d(3, w // 2, 3, stride=2, padding=1), nn.Conv2d(w // 2, w // 2, 3, stride=2,
                                                                                           padding=1)
        self.mix4 = nn.Conv2d(w + w // 2, w // 2, 3, padding=1)
        self.out = nn.Conv2d(w // 2, 3, 1)

    def forward(self, grad: torch.Tensor, f32: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor,
                crop: torch.Tensor) -> torch.Tensor:
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
        h = F.relu(self.mix32(torch.cat([F.relu(self.grad32(grad)), F.relu(self.feat32(f32))], dim=1)))
        h = F.relu(self.mix16(torch.cat([up(h), F.relu(self.feat16(f16))], dim=1)))
        h = F.relu(self.mix8(torch.cat([up(h), F.relu(self.feat8(f8))], dim=1)))
        pixels = F.relu(self.pix4(F.relu(self.pix2(crop))))
        return self.out(F.relu(self.mix4(torch.cat([up(h), pixels], dim=1))))


def decoder_inputs(cam, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the ROI part computes anyway (one Lite0 forward on x's crop): the top-1 gradient at the head conv, scaled
    to a peak of 1 per image, the trunk's outputs at strides 32, 16, 8, and the (normalised) crop itself."""
    from prepcodec.npp.features import TAPS
    from prepcodec.tasks.resize_matrix import resize_center_crop_matrix

    head = cam.read_head(x, frozenset(TAPS.values()))
    grad = cam.class_gradient(head, head.probs.argmax(dim=1))
    grad = grad / grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    task = cam.task
    crop = task.normalise(resize_center_crop_matrix(x.float(), task.resolution, task.crop_ratio))
    return grad, head.tapped[TAPS[32]], head.tapped[TAPS[16]], head.tapped[TAPS[8]], crop


def image_delta(cam, raw: torch.Tensor, x: torch.Tensor, levels: float, sigma: float) -> torch.Tensor:
    """The decoder's crop-grid map onto x as the real gradient arrives (uncrop, low-pass), bounded by `levels`."""
    from prepcodec.npp.baselines import gaussian_blur
    from prepcodec.tasks.resize_matrix import uncrop_map_matrix

    task = cam.task
    on_image = gaussian_blur(uncrop_map_matrix(raw, x, task.resolution, task.crop_ratio), sigma)
    return levels / 255.0 * torch.tanh(on_image)


def real_delta(roi, x: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
    """The stage's own δ: the ascent from the suppressed picture at `qp`, reading the top-1 on x."""
    with torch.no_grad():
        attention = roi.attend(x)
        base = roi.suppressed(x, qp, attention).clamp(0, 1)
    return roi.evidence(base, attention.reading)


def make_data(args) -> None:
    from tqdm import tqdm

    from prepcodec.safe_load import safe_torch_load
    from prepcodec.train.checkpoint import atomic_torch_save

    roi, bank = load()
    path = Path(args.dir) / "data.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(bank.train), generator=gen)[: args.crops]
    qps = torch.randint(22, 45, (args.crops,), generator=gen).float()
    done = safe_torch_load(path, "amortised evidence data") if path.exists() else {"index": [], "qp": [], "delta": []}
    start = len(done["index"])
    bar = tqdm(range(start, args.crops, BATCH), desc="real ascent δ", unit="batch")
    for s in bar:
        idx = order[s : s + BATCH]
        x, _ = bank.batch(idx, torch.device("cpu"))
        delta = real_delta(roi, x, qps[s : s + BATCH])
        done["index"] += idx.tolist()
        done["qp"] += qps[s : s + BATCH].tolist()
        done["delta"].append(delta.half())
        if len(done["index"]) % 100 < BATCH or s + BATCH >= args.crops:
            atomic_torch_save(done, path)
    print(f"{len(done['index'])} crops in {path}")


def _cat_delta(data: dict) -> torch.Tensor:
    return torch.cat(data["delta"]).float() if data["delta"] else torch.zeros(0)


def train(args) -> None:
    from tqdm import tqdm

    from prepcodec.safe_load import safe_torch_load
    from prepcodec.train.checkpoint import atomic_torch_save

    torch.manual_seed(0)
    roi, bank = load()
    data = safe_torch_load(Path(args.dir) / "data.pt", "amortised evidence data")
    index, delta = torch.tensor(data["index"]), _cat_delta(data)
    cam, ev = roi.attention, roi.evidence
    eps = ev.levels / 255.0
    x_all, _ = bank.batch(index, torch.device("cpu"))
    with torch.no_grad():
        inputs = [torch.cat(parts) for parts in zip(*(decoder_inputs(cam, x_all[s : s + 32])
                                                     for s in range(0, len(index), 32)), strict=True)]
    held = len(index) // 10  # the last tenth: a check on crops the decoder did not fit (same images' other crops)
    fit = torch.arange(len(index) - held)
    decoder = EvidenceDecoder(args.width)
    opt = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    steps = args.epochs * ((len(fit) + 15) // 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    held_rows = slice(len(fit), None)
    bar = tqdm(range(args.epochs), desc="decoder", unit="epoch")
    for _ in bar:
        for b in fit[torch.randperm(len(fit))].split(16):
            pred = image_delta(cam, decoder(*(t[b] for t in inputs)), x_all[b], ev.levels, ev.sigma)
            loss = _loss(pred, delta[b], eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        stats = _fit_stats(decoder, cam, ev, inputs, x_all, delta, held_rows)
        bar.set_postfix(train=f"{float(loss):.3f}", held_mse=f"{stats['mse']:.4f}/{stats['zero']:.4f}",
                        held_cos=f"{stats['cos']:.3f}")
    print(f"held-out crops ({held}): mse/eps² {stats['mse']:.4f} (zero prediction {stats['zero']:.4f}), "
          f"cosine {stats['cos']:.3f}")
    saved = {"state": decoder.state_dict(), "width": args.width, "stats": stats}
    atomic_torch_save(saved, Path(args.dir) / "decoder.pt")


def _loss(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """MSE relative to the target's energy, plus 1 − cosine per image: δ is sparse (|δ| > eps/2 on 0.3 % of the
    pixels) and a plain MSE is met by predicting ~0 (the first decoder did exactly that)."""
    mse = (pred - target).square().mean() / target.square().mean().clamp_min(1e-12)
    cos = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1, eps=1e-12 * eps)
    return mse + (1 - cos).mean()


@torch.no_grad()
def _fit_stats(decoder, cam, ev, inputs, x_all, delta, rows) -> dict:
    eps = ev.levels / 255.0
    pred = image_delta(cam, decoder(*(t[rows] for t in inputs)), x_all[rows], ev.levels, ev.sigma)
    target = delta[rows]
    cos = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1).mean()
    return {"mse": float(((pred - target) / eps).square().mean()), "zero": float((target / eps).square().mean()),
            "cos": float(cos)}


def train_generator(args) -> None:
    """The decoder trained on the stage's own objective instead of its δ: raise the classifier's log-probability of
    its top-1 on x for the suppressed picture plus gain·δ̂ (the ascent's objective, its bound and low-pass built in
    by `image_delta`), on random crops of the whole training bank and random QPs. The task's backward pass is paid
    per training step, not at inference. Checkpoints every `--every` steps; rerunning resumes."""
    from tqdm import tqdm

    from prepcodec.safe_load import safe_torch_load
    from prepcodec.train.checkpoint import atomic_torch_save

    roi, bank = load()
    cam, ev = roi.attention, roi.evidence
    task = ev.task
    decoder = EvidenceDecoder(args.width)
    opt = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    path = Path(args.dir) / "generator.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    gen, step, log = torch.Generator().manual_seed(0), 0, []
    if path.exists():
        saved = safe_torch_load(path, "amortised evidence generator")
        decoder.load_state_dict(saved["state"])
        opt.load_state_dict(saved["optimiser"])
        gen.set_state(saved["rng"])
        step, log = saved["step"], saved["log"]
    held_out = HeldOut(roi, bank, args.held)
    held = held_out.scores(decoder)
    bar = tqdm(range(step, args.steps), desc="generator", unit="step", initial=step, total=args.steps)
    for step in bar:
        x, _ = bank.batch(torch.randint(len(bank.train), (args.batch,), generator=gen), torch.device("cpu"))
        qp = torch.randint(22, 45, (args.batch,), generator=gen).float()
        with torch.no_grad():
            attention = roi.attend(x)
            base = roi.suppressed(x, qp, attention).clamp(0, 1)
            gain = roi.gain(qp).view(-1, 1, 1, 1)
            inputs = decoder_inputs(cam, x)
            read = attention.reading
        delta = image_delta(cam, decoder(*inputs), x, ev.levels, ev.sigma)
        loss = -task.evidence_score((base + gain * delta).clamp(0, 1), read) / len(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{float(loss):.3f}", **{k: f"{v:.3f}" for k, v in held.items()})
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            held = held_out.scores(decoder)
            log.append({"step": step + 1, "loss": float(loss), **held})
            atomic_torch_save({"state": decoder.state_dict(), "optimiser": opt.state_dict(), "rng": gen.get_state(),
                               "step": step + 1, "log": log, "width": args.width}, path)
    for row in log:
        print(row)


class HeldOut:
    """The first n validation crops (images the generator never sees) at QP 38, where the fitted gain is 1.9: the
    suppressed picture, the top-1 read and the real ascent's rise of its log-probability, computed once; `scores`
    adds the amortised δ̂'s rise for the decoder as it is now."""

    @torch.no_grad()
    def __init__(self, roi, bank, n: int) -> None:
        self.roi = roi
        ev = roi.evidence
        self.x = torch.from_numpy(bank.val[:n]).permute(0, 3, 1, 2).float() / 255
        qp = torch.full((len(self.x),), 38.0)
        attention = roi.attend(self.x)
        self.base = roi.suppressed(self.x, qp, attention).clamp(0, 1)
        self.gain = roi.gain(qp).view(-1, 1, 1, 1)
        self.read = attention.reading
        self.base_score = self._score(self.base)
        self.real_rise = self._score((self.base + self.gain * ev(self.base, self.read)).clamp(0, 1)) - self.base_score

    def _score(self, z: torch.Tensor) -> float:
        return float(self.roi.evidence.task.evidence_score(z, self.read)) / len(z)

    @torch.no_grad()
    def scores(self, decoder: nn.Module) -> dict[str, float]:
        """Mean rise of the top-1 log-probability over the suppressed picture: amortised δ̂ and the real ascent."""
        cam, ev = self.roi.attention, self.roi.evidence
        amortised = image_delta(cam, decoder(*decoder_inputs(cam, self.x)), self.x, ev.levels, ev.sigma)
        rise = self._score((self.base + self.gain * amortised).clamp(0, 1)) - self.base_score
        return {"held_amortised": rise, "held_real": self.real_rise}


def evaluate(args) -> None:
    from prepcodec.codecs.pool import CodecPool
    from prepcodec.safe_load import safe_torch_load
    from prepcodec.train.routes import real_codec
    from prepcodec.train.teacher import teacher_for

    roi, bank = load()
    saved = safe_torch_load(Path(args.dir) / args.weights, "amortised evidence decoder")
    decoder = EvidenceDecoder(saved["width"])
    decoder.load_state_dict(saved["state"])
    decoder.eval()
    cam, ev = roi.attention, roi.evidence
    target = teacher_for(ev.task)
    real = real_codec(CodecPool(workers=2), "hevc", "fast")
    n = min(args.val, len(bank.val))
    x_val = torch.from_numpy(bank.val[:n]).permute(0, 3, 1, 2).float() / 255
    t_val = torch.from_numpy(bank.val_teacher[:n]).float()
    print("| QP | gain | bpp none / real δ / amortised δ | agreement none / real δ / amortised δ | cosine |")
    print("|---:|---:|---|---|---:|")
    for qp_int in [int(q) for q in args.qps.split(",")]:
        acc = {k: {"bits": 0.0, "parts": []} for k in ("none", "real", "amortised")}
        cos = []
        for s in range(0, n, BATCH):
            x, teacher = x_val[s : s + BATCH], t_val[s : s + BATCH]
            qp = torch.full((len(x),), float(qp_int))
            with torch.no_grad():
                attention = roi.attend(x)
                base = roi.suppressed(x, qp, attention).clamp(0, 1)
                gain = roi.gain(qp).view(-1, 1, 1, 1)
                amortised = image_delta(cam, decoder(*decoder_inputs(cam, x)), x, ev.levels, ev.sigma)
            delta = ev(base, attention.reading)
            cos += F.cosine_similarity(amortised.flatten(1), delta.flatten(1), dim=1).tolist()
            targets = target.targets(x, teacher)
            for name, d in (("none", 0 * delta), ("real", delta), ("amortised", amortised)):
                x_hat, bits = real((base + gain * d).clamp(0, 1), qp)
                _, part = target.batch_terms(x, x_hat, teacher, targets)
                acc[name]["bits"] += float(bits.sum())
                acc[name]["parts"].append(part)
        pixels = x_val.shape[-1] * x_val.shape[-2]
        bpp = " / ".join(f"{acc[k]['bits'] / (n * pixels):.3f}" for k in acc)
        agree = " / ".join(f"{target.agreement(acc[k]['parts'], n):.3f}" for k in acc)
        gain = float(roi.gain(torch.tensor([float(qp_int)])).detach()[0])
        print(f"| {qp_int} | {gain:.2f} | {bpp} | {agree} | "
              f"{sum(cos) / len(cos):.3f} |", flush=True)
    print(f"\n{n} validation crops of {NPP}'s bank ({bank.val.shape[1]}²; images the decoder never saw), real x265 "
          "fast preset, top-1 agreement with the teacher on the uncompressed crop")
    timing(roi, decoder)


@torch.no_grad()
def timing(roi, decoder, side: int = 512, repeats: int = 5) -> None:
    """Median ms of the real stage (read + ascent) and the amortised one (decoder + mapping; its Lite0 forward is
    the ROI part's), on one side² picture, this machine's threads (`benchmark_npp.timed`: one warm-up)."""
    from benchmark_npp import timed

    cam, ev = roi.attention, roi.evidence
    x = torch.rand(1, 3, side, side)
    qp = torch.tensor([38.0])
    base = roi.suppressed(x, qp)
    inputs = decoder_inputs(cam, x)

    stage = 1000 * timed(lambda: ev(base, ev.read(x)), repeats)
    extra = 1000 * timed(lambda: image_delta(cam, decoder(*inputs), x, ev.levels, ev.sigma), repeats)
    head = 1000 * timed(lambda: decoder_inputs(cam, x), repeats)
    print(f"at {side}², torch, {torch.get_num_threads()} threads, median of {repeats}: real stage {stage:.0f} ms; "
          f"amortised {extra:.1f} ms on top of the ROI part's Lite0 forward ({head:.0f} ms, with the taps)")


def target_stats(args) -> None:
    """What the decoder is asked to predict, on the first `--crops` crops of the data: how sparse δ is, how far it
    is from one gradient step (at the suppressed picture the ascent starts from, and at x, which is all the decoder
    sees), its spatial correlation, and how much of it is the channel mean (luma-like) rather than colour."""
    from prepcodec.npp.evidence import evidence_direction
    from prepcodec.safe_load import safe_torch_load

    roi, bank = load()
    data = safe_torch_load(Path(args.dir) / "data.pt", "amortised evidence data")
    n = min(args.crops, len(data["index"]))
    eps = roi.evidence.levels / 255.0
    delta = _cat_delta(data)[:n]
    x, _ = bank.batch(torch.tensor(data["index"][:n]), torch.device("cpu"))
    qp = torch.tensor(data["qp"][:n])
    with torch.no_grad():
        attention = roi.attend(x)
        base = roi.suppressed(x, qp, attention).clamp(0, 1)
    task, sigma, read = roi.evidence.task, roi.evidence.sigma, attention.reading
    cos = lambda a, b: float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())  # noqa: E731
    all_delta = _cat_delta(data) / eps
    print(f"{len(all_delta)} crops: mean (δ/eps)² {float(all_delta.square().mean()):.4f}, "
          f"|δ| > eps/2 on {100 * float((all_delta.abs() > 0.5).float().mean()):.2f} % of the values")
    at_base, at_x = evidence_direction(task, base, read, sigma), evidence_direction(task, x, read, sigma)
    print(f"first {n} crops: cosine(δ, one gradient step at the suppressed picture) {cos(delta, at_base):.3f}, "
          f"at x {cos(delta, at_x):.3f}; "
          f"δ recomputed {cos(delta, roi.evidence(base, read)):.3f}")
    shifts = ", ".join(f"{k} px {cos(delta[..., k:], delta[..., :-k]):.2f}" for k in (1, 2, 4, 8))
    mean = delta.mean(dim=1, keepdim=True)
    print(f"cosine with itself shifted {shifts}; channel mean's share of the energy "
          f"{float(3 * mean.square().sum() / delta.square().sum()):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("--crops", type=int, default=1200)
    t = sub.add_parser("train")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    e = sub.add_parser("eval")
    e.add_argument("--qps", default="22,26,30,34,38,42,44")
    e.add_argument("--val", type=int, default=150)
    e.add_argument("--weights", default="decoder.pt", help="decoder.pt (train) or generator.pt (generator)")
    g = sub.add_parser("generator")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--width", type=int, default=32)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--every", type=int, default=50)
    g.add_argument("--held", type=int, default=32)
    st = sub.add_parser("stats")
    st.add_argument("--crops", type=int, default=32)
    for p in (d, t, e, g, st):
        p.add_argument("--dir", default="runs/amortised")
    args = ap.parse_args()
    {"data": make_data, "train": train, "eval": evaluate, "generator": train_generator,
     "stats": target_stats}[args.cmd](args)


if __name__ == "__main__":
    main()
