"""NPP costs on this CPU: where one training step's time goes, and the NPP's inference beside the hevc encode.

Writes two sections of docs/benchmarks.md ("NPP training step", "NPP encoder cost"), or with `--roi-parts` only a
third ("Where an ROI network's inference goes": `npp:cls` split into its parts), or with `--pre-cost` only a fourth
("Every preprocessor's cost beside the encode": any `eval --pre` spec, shipped networks and classical baselines
alike, so saving and cost can be read side by side); other sections are kept. A
benchmark, not a timed test: numbers depend on the machine and its load, so the sections record both. Every part
is timed in the same process, one after the other, so the ratios compare like with like.

    .venv/bin/python scripts/benchmark_npp.py --repeats 5
    .venv/bin/python scripts/benchmark_npp.py --roi-parts --repeats 5
    .venv/bin/python scripts/benchmark_npp.py --pre-cost none,blur:0.5,roi:graded,npp:cls-roi,npp:cls-fast,npp:cls
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_codecs import write_section  # noqa: E402

from prepcodec.codecs import CodecPool, get_codec  # noqa: E402
from prepcodec.codecs.calibrate import machine_description  # noqa: E402
from prepcodec.data.samples import sample_paths  # noqa: E402
from prepcodec.errors import PrepcodecError  # noqa: E402
from prepcodec.npp.model import NPP_SIZES, count_parameters, create_npp  # noqa: E402

STEP = "## NPP training step"
COST = "## NPP encoder cost"
PARTS = "## Where an ROI network's inference goes"
PRE_COST = "## Every preprocessor's cost beside the encode"


def photo(h: int, w: int) -> np.ndarray:
    """A real photo (the bundled astronaut, reflect-padded / tiled) at h x w."""
    rgb = np.asarray(Image.open(next(p for p in sample_paths() if p.stem == "astronaut")).convert("RGB"))
    reps = (-(-h // rgb.shape[0]), -(-w // rgb.shape[1]), 1)
    return np.ascontiguousarray(np.tile(rgb, reps)[:h, :w])


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def perturbed(size: str) -> torch.nn.Module:
    """An NPP off its identity start (so no branch is skipped by zero weights), in train mode."""
    torch.manual_seed(0)
    net = create_npp(size)
    for p in net.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    return net


def without_memo(net: torch.nn.Module) -> torch.nn.Module:
    """`net` with its ROI part's read memo off: timed on one picture again and again, the memo would serve the
    attention from the warm-up and leave it out of every timing (a device sees each picture once)."""
    if getattr(net, "roi", None) is not None:
        net.roi.memo = False
    return net


def step_parts(repeats: int, batch: int, crop: int) -> list[tuple[str, float]]:
    """Seconds per part of one training step (batch x crop², real hevc fast preset in 2 workers)."""
    from prepcodec.proxy.zoo import load_proxy
    from prepcodec.tasks.registry import create_task
    from prepcodec.train.routes import CodecPath, real_codec

    rgb = photo(crop + batch, crop + batch)
    x = torch.stack([torch.from_numpy(rgb[i : i + crop, i : i + crop].copy()).permute(2, 0, 1) for i in range(batch)])
    x = x.float() / 255
    qp = torch.linspace(22, 44, batch).round()
    task = create_task("effnet-lite0")
    teacher = task.pseudo_targets(x)
    proxy = load_proxy("hevc-dct")
    rows = []
    with CodecPool(2) as pool:
        real = real_codec(pool, "hevc", "fast")
        path = CodecPath("real", proxy, real)
        rows.append(("real hevc round trip (fast preset, 2 workers)", timed(lambda: real(x, qp), repeats)))

        def proxy_part():
            xb = x.clone().requires_grad_(True)
            x_hat, bits = proxy(xb, qp)
            (x_hat.sum() + bits.sum()).backward()

        rows.append(("hevc-dct proxy forward + backward", timed(proxy_part, repeats)))

        def task_part():
            xb = x.clone().requires_grad_(True)
            task.loss(xb, teacher).backward()

        rows.append(("Lite0 distillation loss forward + backward", timed(task_part, repeats)))
        for size in NPP_SIZES:
            net = perturbed(size)

            def npp_part(net=net):
                net(x.clone().requires_grad_(True), qp).sum().backward()

            rows.append((f"NPP `{size}` ({count_parameters(net) / 1e6:.2f} M) forward + backward",
                         timed(npp_part, repeats)))
        net = perturbed("small")

        def whole():
            x_hat, bits = path(net(x, qp), qp)
            (bits.mean() / crop**2 + task.loss(x_hat, teacher)).backward()

        rows.append(("whole step, NPP `small` (route real)", timed(whole, repeats)))
    return rows


def onnx_runner(net: torch.nn.Module, folder: Path):
    """The same network exported to ONNX (parity-checked) and loaded in onnxruntime; None without onnx."""
    try:
        from prepcodec.export.onnx_export import export_onnx
        from prepcodec.export.onnx_npp import OnnxNPP
        from prepcodec.npp.zoo import export_npp

        weights = export_npp(net, folder / f"{net.config.stem}-{len(list(folder.iterdir()))}.pt")
        return OnnxNPP(export_onnx(str(weights), weights.with_suffix(".onnx"))["path"])
    except PrepcodecError as exc:  # onnx / onnxruntime not installed
        print(f"no onnxruntime column: {exc}")
        return None


def encoder_cost(repeats: int, sizes: list[str]) -> list[tuple]:
    """NPP inference (each size; torch and onnxruntime) vs one hevc encode (eval preset, QP 37) of the same image."""
    import tempfile

    codec = get_codec("hevc")
    nets = {size: without_memo(perturbed(size).eval()) for size in sizes}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {size: onnx_runner(net, Path(tmp)) for size, net in nets.items()}
        for name, (h, w) in {"224²": (224, 224), "512²": (512, 512), "1080p": (1080, 1920)}.items():
            rgb = photo(h, w)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
            t_enc = timed(lambda rgb=rgb: codec.encode(rgb, 37, "eval"), max(1, repeats // 2))
            for size, net in nets.items():
                with torch.no_grad():
                    t_npp = timed(lambda x=x, net=net: net(x, 37.0), repeats)
                run = runners[size]
                t_ort = timed(lambda x=x, run=run: run.run(x.numpy(), np.array([37.0], np.float32)), repeats) \
                    if run is not None else float("nan")
                rows.append((name, size, t_npp, t_ort, t_enc))
    return rows


def roi_parts(repeats: int, side: int = 512) -> list[tuple[str, float]]:
    """`npp:cls`'s inference (the shipped network, memo off) on one real side² picture at QP 37, split into its
    parts, each timed on its own: what a cheaper encoder-side network would have to cut."""
    from prepcodec.npp.baselines import gaussian_blurs
    from prepcodec.npp.evidence import TaskEvidence
    from prepcodec.npp.zoo import load_npp

    net = without_memo(load_npp("npp:cls").model.eval())
    roi = net.roi
    x = torch.from_numpy(photo(side, side)).permute(2, 0, 1)[None].float() / 255
    qp = torch.tensor([37.0])
    with torch.no_grad():
        cam, feathered, reading = roi.attention_maps(x)
        u = roi.correction(x, cam, qp)
        blurs = gaussian_blurs(x, roi.sigmas)
        background, _ = roi.mix_weights(qp)
        base = roi.suppressed(x, qp)
        rows = [("whole network (`npp:cls`)", timed(lambda: net(x, qp), repeats)),
                ("ROI part (`suppressed`: everything but the evidence stage)", timed(lambda: roi.suppressed(x, qp),
                                                                                     repeats)),
                ("· attention: Lite0 Grad-CAM on the 224² crop, mapped back and feathered; the top-1 it is of",
                 timed(lambda: roi.attention_maps(x), repeats)),
                ("· correction net u (two 3×3 convs at half resolution)",
                 timed(lambda: roi.correction(x, cam, qp), repeats)),
                ("· blurs of the picture, σ " + " / ".join(f"{s:g}" for s in roi.sigmas) + " (one shared pad)",
                 timed(lambda: gaussian_blurs(x, roi.sigmas), repeats)),
                ("· graded bands and mixing (given the parts above)",
                 timed(lambda: roi._graded(blurs, qp, feathered, roi.keep_cut(qp).view(-1, 1, 1, 1), u, x,
                                           background), repeats)),
                ("evidence ascent (5 × Lite0 forward + backward)", timed(lambda: roi.evidence(base, reading),
                                                                         repeats))]
        for steps in (3, 1):  # `prepcodec npp steps`: the same stage, shorter (docs/training.md, "Session 21")
            ascent = TaskEvidence(roi.evidence.task, roi.evidence.levels, roi.evidence.sigma, steps)
            rows.append((f"evidence ascent, {steps} step{'s' if steps > 1 else ''} ({steps} × Lite0 forward + "
                         "backward)", timed(lambda a=ascent: a(base, reading), repeats)))
    return rows


def device_preprocessor(spec: str, task):
    """The preprocessor `eval --pre spec` runs, as a device that sees each picture once runs it: a learned
    network's read memo off (the memo only helps when the same picture comes back at another QP)."""
    from prepcodec.npp.preprocessors import parse_pre

    pre = parse_pre(spec, task)
    if pre.network is not None:
        without_memo(pre.network)
    return pre


def pre_cost(repeats: int, specs: list[str], task_name: str) -> list[tuple]:
    """Each spec's preprocessing (torch, no gradient but the one an evidence ascent takes, QP 37) vs one hevc
    encode (eval preset, QP 37) of the same picture, at 224², 512² and 1080p."""
    from prepcodec.tasks.registry import create_task

    task = create_task(task_name)
    pres = {spec: device_preprocessor(spec, task) for spec in specs}
    codec = get_codec("hevc")
    rows = []
    for name, (h, w) in {"224²": (224, 224), "512²": (512, 512), "1080p": (1080, 1920)}.items():
        rgb = photo(h, w)
        t_enc = timed(lambda rgb=rgb: codec.encode(rgb, 37, "eval"), max(1, repeats // 2))
        for spec, pre in pres.items():
            t_pre = 0.0 if pre.is_identity else timed(lambda rgb=rgb, pre=pre: pre(rgb, 37.0), repeats)
            rows.append((name, spec, t_pre, t_enc))
    return rows


def write_pre_cost(args, head: str) -> int:
    """The PRE_COST section: `pre_cost` as a table, picture by picture."""
    rows = pre_cost(args.repeats, [s.strip() for s in args.pre_cost.split(",") if s.strip()], args.task)
    lines = [PRE_COST, "", head, f"Each `--pre` as `prepcodec eval --task {args.task}` runs it (uint8 in, uint8 out, "
             "torch; a shipped network's read memo off, as on a device that sees each picture once), QP 37, beside "
             "one x265 encode of the same picture (eval preset = veryslow, QP 37). The issue's goal for the NPP: "
             "<= 10 % of the encode at 512².", "",
             "| picture | `--pre` | ms | hevc encode ms | / encode |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | `{spec}` | {t * 1e3:.1f} | {e * 1e3:.0f} | {100 * t / e:.1f} % |" for n, spec, t, e in rows]
    write_section(args.out, "\n".join(lines) + "\n", PRE_COST)
    print("\n".join(lines))
    return 0


def _ms(t: float) -> str:
    return "—" if math.isnan(t) else f"{t * 1e3:.0f}"


def _pct(t: float, ref: float) -> str:
    return "— (not exportable)" if math.isnan(t) else f"{100 * t / ref:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-step", action="store_true", help="only the encoder-cost section")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--sizes", default="small,small-blend,small-mask", help="NPP sizes for the encoder-cost table")
    parser.add_argument("--roi-parts", action="store_true", help="only the section splitting npp:cls's inference")
    parser.add_argument("--pre-cost", default="", help="only the section timing these comma-separated --pre specs")
    parser.add_argument("--task", default="effnet-lite0", help="the task model of --pre-cost's ROI and npp specs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    command = sys.argv[1:] if argv is None else argv  # the header names the run as it was made
    when = datetime.date.today().isoformat()
    head = (f"Measured {when} on {machine_description()}, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, `{' '.join(['scripts/benchmark_npp.py', *command])}` "
            f"(median of the repeats, one run).")
    if args.roi_parts:
        return write_roi_parts(args, head)
    if args.pre_cost:
        return write_pre_cost(args, head)
    parts = [] if args.skip_step else step_parts(args.repeats, args.batch, args.crop)
    lines = [STEP, "", head, f"One step = batch {args.batch} of {args.crop}² crops, QPs spread over 22-44.", "",
             "| part | seconds |", "|---|---:|"] + [f"| {n} | {t:.3f} |" for n, t in parts]
    if parts:
        write_section(args.out, "\n".join(lines) + "\n", STEP)
    cost = encoder_cost(args.repeats, args.sizes.split(","))
    lines = [COST, "", head, "NPP inference (no gradient, the frozen trunk of the feature-guided sizes included, a ROI "
             "network's read memo off: every picture read afresh) in "
             "torch and in onnxruntime (the `prepcodec export onnx` graph, CPU provider), beside one x265 encode "
             "(eval preset = veryslow, QP 37) of the same picture; goal: NPP <= 10 % of the encode at 512².", "",
             "| picture | NPP | torch ms | onnxruntime ms | hevc encode ms | torch / encode | onnxruntime / encode |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | `{z}` | {a * 1e3:.0f} | {_ms(o)} | {b * 1e3:.0f} | {100 * a / b:.1f} % | {_pct(o, b)} |"
              for n, z, a, o, b in cost]
    write_section(args.out, "\n".join(lines) + "\n", COST)
    print("\n".join(f"{n}: {t:.3f} s" for n, t in parts))
    print("\n".join(f"{n} {z}: torch {a * 1e3:.0f} ms, onnxruntime {o * 1e3:.0f} ms, encode {b * 1e3:.0f} ms"
                    for n, z, a, o, b in cost))
    return 0


def write_roi_parts(args, head: str) -> int:
    """The PARTS section: `roi_parts` at 512², beside one x265 encode (eval preset, QP 37) of the same picture."""
    codec = get_codec("hevc")
    t_enc = timed(lambda: codec.encode(photo(512, 512), 37, "eval"), max(1, args.repeats // 2))
    rows = roi_parts(args.repeats)
    lines = [PARTS, "", head, "`npp:cls` on the 512² picture of the encoder-cost table, QP 37, torch, no gradient, the "
             "read memo off; each part timed on its own (the parts overlap the whole: their sum is not the whole), "
             "beside one x265 encode of the same picture (eval preset, QP 37).", "",
             "| part | torch ms | / hevc encode |", "|---|---:|---:|"]
    lines += [f"| {n} | {t * 1e3:.1f} | {100 * t / t_enc:.1f} % |" for n, t in rows]
    lines += [f"| hevc encode (x265 veryslow, QP 37) | {t_enc * 1e3:.1f} | 100 % |"]
    write_section(args.out, "\n".join(lines) + "\n", PARTS)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
