"""Generate real HEVC targets and fine-tune the `small` HEVC proxy on the lent GPU machine, within a time budget.

Runs on one machine with many cores and a GPU: a background thread round-trips random 128x128 crops of the
carried training images (`scripts/proxy_gpu_bundle.py`; photos-train + imagenet-train, never Kodak) through the
real codec at the eval preset with a `CodecPool`, one random integer QP in [22, 47] per crop, while the main
thread trains the proxy on the targets generated so far (the set grows as training runs). Every 20th crop is a
held-out validation target; the checkpoint with the lowest validation loss (hard rounding, i.e. eval mode) is
exported. Training alternates noise-rate steps (train mode) and hard-rounded steps (eval mode, straight-through),
so the proxy is fitted on the same quantiser it is evaluated with. The loss is `proxy_trainer.loss_terms`.

    python scripts/proxy_gpu_train.py --images .gpu/imgs --out $OUT --budget 470
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prepcodec.codecs import CodecPool
from prepcodec.proxy.targets import to_tensor
from prepcodec.proxy.zoo import WEIGHTS_DIR, export_weights, load_weights
from prepcodec.train.proxy_trainer import TrainConfig, loss_terms

VAL_EVERY = 20  # every 20th crop is held out


def draw(images: dict[str, list[np.ndarray]], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random crops, half from each data set (photos are fewer but larger)."""
    names = sorted(images)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        pool = images[names[i % len(names)]]
        img = pool[int(rng.integers(len(pool)))]
        h, w = img.shape[:2]
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        out[i] = img[y0 : y0 + size, x0 : x0 + size]
    return out


class Generator(threading.Thread):
    """Fills bits/x_hat for crops in order, chunk by chunk, until done or the deadline passes."""

    def __init__(self, crops: np.ndarray, qp: np.ndarray, workers: int, deadline: float, chunk: int):
        super().__init__(daemon=True)
        self.crops, self.qp, self.deadline, self.chunk = crops, qp, deadline, chunk
        self.bits = np.zeros(len(crops), np.float32)
        self.x_hat = np.zeros_like(crops)
        self.done = 0
        self.pool = CodecPool(workers)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.done < len(self.crops) and time.perf_counter() < self.deadline:
                sl = slice(self.done, min(self.done + self.chunk, len(self.crops)))
                res = self.pool.roundtrip("hevc", list(self.crops[sl]), self.qp[sl].tolist(), preset="eval")
                self.x_hat[sl] = np.stack([r.decoded for r in res])
                self.bits[sl] = [r.bits for r in res]
                self.done = sl.stop
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
        finally:
            self.pool.close()


def batch_of(gen: Generator, pick: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (to_tensor(gen.crops[pick]).to(device), torch.from_numpy(gen.qp[pick]).to(device),
            torch.from_numpy(gen.bits[pick]).to(device), to_tensor(gen.x_hat[pick]).to(device))


@torch.no_grad()
def validate(model, gen: Generator, val: np.ndarray, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Eval-mode (hard rounding) loss terms over the fixed validation targets."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    for s in range(0, len(val), 256):
        pick = val[s : s + 256]
        terms = loss_terms(model, *batch_of(gen, pick, device), cfg)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(pick)
    model.train(was)
    return {k: v / len(val) for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default=".gpu/imgs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole run")
    ap.add_argument("--gen-frac", type=float, default=0.85, help="fraction of the budget for target generation")
    ap.add_argument("--max-crops", type=int, default=40000)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--lr-final", type=float, default=1e-5)
    ap.add_argument("--val-after", type=int, default=3000, help="fix the validation set once this many targets exist")
    ap.add_argument("--val-every-s", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    images: dict[str, list[np.ndarray]] = {}
    for p in sorted(Path(args.images).glob("*.jpg")):
        images.setdefault(p.name.rsplit("-", 1)[0], []).append(np.asarray(Image.open(p).convert("RGB")))
    crops = draw(images, args.max_crops, 128, rng)
    qp = rng.integers(22, 48, size=len(crops)).astype(np.float32)
    print(f"[{time.perf_counter() - t0:.1f}s] {sum(map(len, images.values()))} images, {len(crops)} crops drawn",
          flush=True)
    gen = Generator(crops, qp, args.workers, t0 + args.gen_frac * args.budget, chunk=args.workers * 8)
    gen.start()

    cfg = TrainConfig(codec="hevc", size="small", batch=args.batch, device=args.device)
    model = load_weights(WEIGHTS_DIR / "hevc-small.pt", args.device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    while gen.done < 2 * args.batch and gen.error is None:
        time.sleep(0.5)
    print(f"[{time.perf_counter() - t0:.1f}s] first {gen.done} targets ready", flush=True)
    train_start = time.perf_counter()
    train_end = t0 + args.budget - 15
    span = train_end - train_start
    step, val, best, last_val_t, log = 0, None, None, 0.0, []
    baseline = None
    while time.perf_counter() < train_end:
        if gen.error is not None:
            raise gen.error
        n = gen.done
        if val is None and n >= args.val_after:
            val = np.arange(0, args.val_after, VAL_EVERY)
            baseline = validate(load_weights(WEIGHTS_DIR / "hevc-small.pt", args.device), gen, val, cfg, device)
            print(f"[{time.perf_counter() - t0:.1f}s] val set {len(val)}; shipped weights: {baseline}", flush=True)
        pick = rng.integers(0, n, size=args.batch)
        pick = pick[pick % VAL_EVERY != 0]
        frac = (time.perf_counter() - train_start) / span
        lr = args.lr_final + (args.lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train(step % 2 == 0)  # alternate noise-rate and hard-rounded (straight-through) steps
        terms = loss_terms(model, *batch_of(gen, pick, device), cfg)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        now = time.perf_counter()
        if val is not None and (now - last_val_t > args.val_every_s or now >= train_end):
            last_val_t = now
            v = validate(model, gen, val, cfg, device)
            entry = {"t": round(now - t0, 1), "step": step, "targets": gen.done, "lr": lr, **v}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            if best is None or v["loss"] < best[0]:
                best = (v["loss"], step, {k: t.detach().clone() for k, t in model.state_dict().items()})
    gen.join(timeout=60)
    if val is None:
        val = np.arange(0, gen.done, VAL_EVERY)
    v = validate(model, gen, val, cfg, device)
    if best is None or v["loss"] < best[0]:
        best = (v["loss"], step, {k: t.detach().clone() for k, t in model.state_dict().items()})
    model.load_state_dict(best[2])
    all_val = np.arange(0, gen.done, VAL_EVERY)
    final_all = validate(model, gen, all_val, cfg, device)
    shipped_all = validate(load_weights(WEIGHTS_DIR / "hevc-small.pt", args.device), gen, all_val, cfg, device)
    summary = {
        "script": "scripts/proxy_gpu_train.py", "args": vars(args),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "wall_s": round(time.perf_counter() - t0, 1), "train_s": round(train_end - train_start, 1),
        "init": "src/prepcodec/proxy/weights/hevc-small.pt (7000-step GPU run)", "steps": step,
        "best_step": best[1], "targets_generated": gen.done, "val_targets_fixed": len(val) if val is not None else 0,
        "val_fixed_best": best[0], "val_fixed_shipped": baseline,
        "val_all": {"n": len(all_val), "new": final_all, "shipped": shipped_all}, "val_log": log,
        "targets": {"codec": "hevc", "preset": "eval", "crop_size": 128, "qp": "one random integer in [22, 47]",
                    "datasets": ["photos-train", "imagenet-train"], "images": "JPEG q90 (proxy_gpu_bundle.py)"},
        "loss": {k: getattr(cfg, k) for k in ("w_rate", "w_rec", "w_rd", "lambda_rd")},
    }
    export_weights(model.float().cpu(), out / "hevc-small.pt", training=summary)
    np.savez_compressed(out / "targets_meta.npz", qp=gen.qp[: gen.done], bits=gen.bits[: gen.done])
    print(json.dumps({k: summary[k] for k in ("wall_s", "steps", "best_step", "targets_generated", "val_all")}))


if __name__ == "__main__":
    main()
