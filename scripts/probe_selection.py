"""Per-image blur strength chosen by the classifier, and a loss-sensitivity map: do they get off roi:graded's curve?

The ROI networks (runs G, J) and every per-QP knob moved along the graded family's rate–accuracy curve. Two things
the family cannot express were left: choosing the strength per *image* (strongest graded blur whose output the
classifier still reads as the original's top-1), and a map of where blurring changes the classifier's score
instead of its Grad-CAM. This probe measures both on labelled *training* images (`imagenet-train`, never an
evaluation split), Lite0 top-1 against the labels, real x265 at the eval preset:

- fixed candidates: plain, `roi:graded` with its largest sigma 1 / 2 / 4 / 8 (`g4` = roi:graded, `g2` =
  roi:graded:2), `g2` with the never-seen 16 px border replicated from the crop (`g2-border`), and `g2` on the
  loss-sensitivity map |∇ log p_c · (blur₂(x) − x)| (smoothed σ 8, given the CAM's values in its rank order, so
  the bands cover the same areas: `g2-sens`), and `g2` with the kept region (CAM ≥ 0.5) sharpened by an unsharp
  mask x + 0.5·(x − blur₁(x)) (`g2-sharp0.5`: what the codec takes from the object at high QP, put back first);
- selections among g8 > g4 > g2 > g1 > plain, per image and QP: the first candidate whose *uncompressed* output
  keeps the original's top-1 with ≥ a·p (open loop), whose `hevc-dct` proxy decode at the QP does (proxy loop),
  or whose *real* decode does (closed loop: the encoder tries the real codec with the evaluating model).

    .venv/bin/python scripts/probe_selection.py --start 0 --images 200 --out runs/probe-selection.json

Records are written after every batch of 20 images and a rerun continues from them. BD-rates are point estimates
(cubic, monotone envelope) on the images given; paired differences of a few percent are within the noise of a
few hundred images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from prepcodec.codecs.pool import CodecPool
from prepcodec.data.datasets import get_dataset
from prepcodec.eval.bdrate import CurveError, bd_rate, monotone_envelope
from prepcodec.npp import baselines as B
from prepcodec.proxy.zoo import load_proxy
from prepcodec.tasks.registry import create_task

QPS = (22, 28, 34, 40, 44)
LADDER = ("g8", "g4", "g2", "g1", "plain")  # strongest first: the order the selections try them in
BATCH = 20


def graded(x: torch.Tensor, attention: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """roi:graded with every sigma scaled so the background's is `sigma_max`."""
    return B.graded_blur(x, attention, B.graded_steps(sigma_max))


def sensitivity(task, x: torch.Tensor, sigma: float = 2.0, smooth: float = 8.0) -> torch.Tensor:
    """First-order change of log p(top-1) when each pixel is replaced by its blur, |∇ log p_c · (blur(x) − x)|."""
    x = x.clone().requires_grad_(True)
    log_p = task.logits(x).log_softmax(dim=1)
    log_p.gather(1, log_p.argmax(dim=1, keepdim=True)).sum().backward()
    with torch.no_grad():
        change = (x.grad * (B.gaussian_blur(x, sigma) - x)).sum(dim=1, keepdim=True).abs()
        return B.gaussian_blur(change, smooth)


def rank_matched(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image, `reference`'s values placed in `source`'s rank order: the same area above every level."""
    out = torch.empty_like(source)
    for i in range(source.shape[0]):
        out[i].view(-1)[source[i].flatten().argsort()] = reference[i].flatten().sort().values
    return out


def candidates(task, x: torch.Tensor) -> dict[str, torch.Tensor]:
    cam = B.grad_cam(task, x)
    out = {"plain": x, **{f"g{s:g}": graded(x, cam, s) for s in (1.0, 2.0, 4.0, 8.0)}}
    out["g2-border"] = B.fill_unseen(task, out["g2"])  # = --pre roi:graded:2+unseen
    out["g2-sens"] = graded(x, rank_matched(sensitivity(task, x), cam), 2.0)
    kept = B.feathered((cam >= B.ROI_CAM_THRESHOLD).to(x.dtype))
    out["g2-sharp0.5"] = out["g2"] + kept * 0.5 * (x - B.gaussian_blur(x, 1.0))  # unsharp mask on the kept region
    return {k: v.detach().clamp(0, 1) for k, v in out.items()}


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(a)).permute(2, 0, 1).float() / 255 for a in images])


def _scores(task, x: torch.Tensor, classes: torch.Tensor) -> tuple[list[int], list[float]]:
    with torch.no_grad():
        p = task.logits(x).softmax(dim=1)
    return p.argmax(dim=1).tolist(), p.gather(1, classes[:, None])[:, 0].tolist()


def record_batch(task, proxy, pool: CodecPool, x: torch.Tensor) -> dict:
    """Everything the rules need for one batch: per candidate the top-1 and p(original's class) of its uncompressed
    output, of its proxy decode and of its real decode at every QP, and the real bits."""
    with torch.no_grad():
        p = task.logits(x).softmax(dim=1)
    p0, classes = p.max(dim=1)
    top1 = classes.tolist()
    out: dict = {"orig_top1": top1, "orig_p": p0.tolist(), "cand": {}}
    for name, y in candidates(task, x).items():
        y = torch.round(y * 255) / 255  # what the encoder is handed
        raw = _scores(task, y, classes)
        entry = {"raw_top1": raw[0], "raw_p": raw[1]}
        for q in QPS:
            decoded, bits = pool.roundtrip_tensor("hevc", y, q, preset="eval")
            with torch.no_grad():
                decoded_proxy = proxy(y, torch.full((len(y),), float(q)))[0].clamp(0, 1)
            real, prox = _scores(task, decoded, classes), _scores(task, decoded_proxy, classes)
            entry[str(q)] = {"bpp": (bits / (y.shape[-2] * y.shape[-1])).tolist(), "top1": real[0], "p": real[1],
                             "proxy_top1": prox[0], "proxy_p": prox[1]}
        out["cand"][name] = entry
    return out


def merge(records: dict, batch: dict) -> None:
    for key in ("orig_top1", "orig_p"):
        records.setdefault(key, []).extend(batch[key])
    for name, entry in batch["cand"].items():
        dst = records.setdefault("cand", {}).setdefault(name, {})
        for key, value in entry.items():
            if isinstance(value, list):
                dst.setdefault(key, []).extend(value)
            else:
                for k, v in value.items():
                    dst.setdefault(key, {}).setdefault(k, []).extend(v)


def bd(anchor: tuple[list, list], test: tuple[list, list]) -> float | None:
    a, t = monotone_envelope(*anchor), monotone_envelope(*test)
    try:
        return round(bd_rate(a[0], a[1], t[0], t[1]), 2)
    except CurveError:
        return None


def analyse(records: dict) -> list[dict]:
    """Rate–accuracy curve of every fixed candidate and selection rule, BD-rate vs plain and vs the fixed ones."""
    labels = np.array(records["labels"])
    n = len(labels)
    orig = np.array(records["orig_top1"][:n])
    cand = {name: {key: value[:n] if isinstance(value, list) else {k: v[:n] for k, v in value.items()}
                   for key, value in entry.items()} for name, entry in records["cand"].items()}

    def curve(choice) -> tuple[list[float], list[float]]:  # choice(q) -> per image, the candidate's name
        bpp, acc = [], []
        for q in map(str, QPS):
            names = choice(q)
            bpp.append(float(np.mean([cand[c][q]["bpp"][i] for i, c in enumerate(names)])))
            acc.append(float(np.mean([cand[c][q]["top1"][i] == labels[i] for i, c in enumerate(names)])))
        return bpp, acc

    def first_kept(passes) -> callable:  # passes(name, q) -> bool per image; the first on the ladder, else plain
        def choice(q: str) -> list[str]:
            ok = {c: passes(c, q) for c in LADDER}
            return [next((c for c in LADDER if ok[c][i]), "plain") for i in range(n)]
        return choice

    rows = {name: curve(lambda q, name=name: [name] * n) for name in cand}
    for a in (0.0, 0.9):
        rows[f"open-loop a={a:g}"] = curve(first_kept(
            lambda c, q, a=a: (np.array(cand[c]["raw_top1"]) == orig)
            & (np.array(cand[c]["raw_p"]) >= a * np.array(records["orig_p"][:n]))))
        rows[f"proxy-loop a={a:g}"] = curve(first_kept(
            lambda c, q, a=a: (np.array(cand[c][q]["proxy_top1"]) == orig)
            & (np.array(cand[c][q]["proxy_p"]) >= a * np.array(cand["plain"][q]["proxy_p"]))))
    rows["closed-loop (real decode)"] = curve(first_kept(lambda c, q: np.array(cand[c][q]["top1"]) == orig))
    out = []
    for name, (bpp, acc) in rows.items():
        out.append({"run": name, "bpp": [round(b, 3) for b in bpp], "top1": [round(v, 3) for v in acc],
                    "bd_vs_plain": bd(rows["plain"], (bpp, acc)),
                    **{f"bd_vs_{k}": bd(rows[k], (bpp, acc)) for k in ("g2", "g4", "g8")}})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0, help="first imagenet-train image")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/probe-selection.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = get_dataset("imagenet-train")
    items = data.items[args.start : args.start + args.images]
    records = json.loads(args.out.read_text()) if args.out.exists() else {}
    if records and records.get("start") != args.start:
        raise SystemExit(f"{args.out} holds records from image {records.get('start')}; pass another --out")
    records.update(start=args.start, labels=[it.label for it in items])
    task, proxy = create_task("effnet-lite0"), load_proxy("hevc-dct")
    done = len(records.get("orig_top1", []))
    with CodecPool(args.workers) as pool:
        for b in range(done, len(items), BATCH):
            batch = record_batch(task, proxy, pool, _tensor([data.load(it) for it in items[b : b + BATCH]]))
            merge(records, batch)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(records))
            tmp.replace(args.out)
            print(f"images {b + len(batch['orig_top1'])}/{len(items)}", flush=True)
    records["labels"] = records["labels"][: len(records.get("orig_top1", []))]
    for row in analyse(records):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
