"""NPP costs on this CPU: where one training step's time goes, and the NPP's inference beside the hevc encode.

Writes two sections of docs/benchmarks.md ("NPP training step", "NPP encoder cost"); other sections are kept. A
benchmark, not a timed test: numbers depend on the machine and its load, so the sections record both. Every part
is timed in the same process, one after the other, so the ratios compare like with like.

    .venv/bin/python scripts/benchmark_npp.py --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
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
from prepcodec.npp.model import NPP_SIZES, count_parameters, create_npp  # noqa: E402

STEP = "## NPP training step"
COST = "## NPP encoder cost"


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


def encoder_cost(repeats: int, sizes: list[str]) -> list[tuple]:
    """NPP inference (each size) vs one hevc encode (eval preset, QP 37) of the same image, in this process."""
    codec = get_codec("hevc")
    nets = {size: create_npp(size).eval() for size in sizes}
    rows = []
    for name, (h, w) in {"224²": (224, 224), "512²": (512, 512), "1080p": (1080, 1920)}.items():
        rgb = photo(h, w)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        t_enc = timed(lambda rgb=rgb: codec.encode(rgb, 37, "eval"), max(1, repeats // 2))
        for size, net in nets.items():
            with torch.no_grad():
                t_npp = timed(lambda x=x, net=net: net(x, 37.0), repeats)
            rows.append((name, size, t_npp, t_enc))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--sizes", default="small,small-blend", help="NPP sizes for the encoder-cost table")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    when = datetime.date.today().isoformat()
    head = (f"Measured {when} on {machine_description()}, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, `scripts/benchmark_npp.py --repeats {args.repeats}` "
            f"(median of the repeats, one run).")
    parts = step_parts(args.repeats, args.batch, args.crop)
    lines = [STEP, "", head, f"One step = batch {args.batch} of {args.crop}² crops, QPs spread over 22-44.", "",
             "| part | seconds |", "|---|---:|"] + [f"| {n} | {t:.3f} |" for n, t in parts]
    write_section(args.out, "\n".join(lines) + "\n", STEP)
    cost = encoder_cost(args.repeats, args.sizes.split(","))
    lines = [COST, "", head, "NPP inference (no gradient, the trunk of `small-blend` included) beside one x265 "
             "encode (eval preset = veryslow, QP 37) of the same picture; goal: NPP <= 10 % of the encode at 512².", "",
             "| picture | NPP | NPP ms | hevc encode ms | NPP / encode |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | `{z}` | {a * 1e3:.0f} | {b * 1e3:.0f} | {100 * a / b:.1f} % |" for n, z, a, b in cost]
    write_section(args.out, "\n".join(lines) + "\n", COST)
    print("\n".join(f"{n}: {t:.3f} s" for n, t in parts))
    print("\n".join(f"{n} {z}: npp {a * 1e3:.0f} ms, encode {b * 1e3:.0f} ms" for n, z, a, b in cost))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
