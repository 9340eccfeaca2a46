"""#10's ablation rows on the trainer's validation split, read from the runs' checkpoints (no image is coded again).

Each ablation is a short training run from the same start (`runs/queue19.sh`: run J's exported weights, 300 steps,
one flag changed); the trainer validated it at its start and its end on the same held-out training images. This
prints, per run, the validation BD-rates against plain hevc (equal top-1 agreement / equal task loss) at the start
and the end, and for the one-network-per-QP runs (`--qp-min Q --qp-max Q`) the point each reaches at its own QP
beside the shared network's point there (a BD-rate needs four points; the paper's "Ours(Multiple)" row).

    .venv/bin/python scripts/ablation_table.py --runs real=runs/abl-real,proxy=runs/abl-proxy,ste=runs/abl-ste \\
        --per-qp runs/abl-qp26,runs/abl-qp34,runs/abl-qp42 --shared runs/abl-real

`--eval-per-qp` reads the same one-QP networks swept on the evaluation set (`prepcodec eval --levels Q`) beside the
shared network's sweeps (session 20, docs/results.md "Ablations").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from prepcodec.train.checkpoint import load_checkpoint


def _log(run: str) -> tuple[dict, list[dict]]:
    state = load_checkpoint(Path(run), restore_rng=False)
    if state is None:
        raise SystemExit(f"no checkpoint in {run}")
    if not state["val_log"]:
        raise SystemExit(f"{run} has no validation yet")
    return state, state["val_log"]


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f} %"


def _row(name: str, run: str) -> str:
    state, log = _log(run)
    first, last = log[0], log[-1]
    cfg = state["config"]
    return (f"| {name} | {cfg['route']} | {cfg['preset']} | {state['step']} | {state['elapsed_s'] / 60:.0f} | "
            f"{_pct(first['bd_rate_agreement_pct'])} → {_pct(last['bd_rate_agreement_pct'])} | "
            f"{_pct(first['bd_rate_task_loss_pct'])} → {_pct(last['bd_rate_task_loss_pct'])} | "
            f"{sum(last['agreement']) / len(last['agreement']):.3f} | {sum(last['bpp']) / len(last['bpp']):.3f} |")


def _point(entry: dict, qp: int) -> tuple[float, float, float]:
    i = [int(q) for q in entry["qps"]].index(qp)
    return entry["bpp"][i], entry["agreement"][i], entry["task_loss"][i]


def _shared_at(entry: dict, bpp: float, metric: str = "agreement") -> float:
    """The shared network's `metric` at `bpp` on its curve (linear in log bpp between its QPs): a one-QP network's
    point above it is a better trade of bits for accuracy, below it a worse one."""
    order = np.argsort(entry["bpp"])
    return float(np.interp(np.log(bpp), np.log(np.asarray(entry["bpp"])[order]),
                           np.asarray(entry[metric])[order]))


def _per_qp_rows(runs: list[str], shared: str) -> list[str]:
    _, shared_log = _log(shared)
    rows = []
    for run in runs:
        state, log = _log(run)
        qp = int(state["config"]["qp_min"])
        if qp != int(state["config"]["qp_max"]):
            raise SystemExit(f"{run} trained over QP {state['config']['qp_min']}–{state['config']['qp_max']}, "
                             "not one QP")
        own, ref, start = _point(log[-1], qp), _point(shared_log[-1], qp), _point(log[0], qp)
        rows.append(f"| {qp} | {start[0]:.3f} / {start[1]:.3f} | {ref[0]:.3f} / {ref[1]:.3f} / {ref[2]:.3f} | "
                    f"{own[0]:.3f} / {own[1]:.3f} / {own[2]:.3f} | {100 * (own[0] / ref[0] - 1):+.1f} % | "
                    f"{own[1] - ref[1]:+.3f} | {own[1] - _shared_at(shared_log[-1], own[0]):+.3f} |")
    return rows


def _sweep_points(dirs: str) -> dict[float, dict]:
    """Level -> summary, merged over the `+`-joined sweep directories of one network (`prepcodec eval`)."""
    from dataclasses import asdict

    from prepcodec.eval.records import load_run

    return {s.level: asdict(s) for d in dirs.split("+") for s in load_run(d).summaries}


def _eval_per_qp_rows(runs: list[str], shared: str, metric: str) -> list[str]:
    """One-QP networks swept at their own QP on the evaluation set, beside the shared network's sweep there."""
    ref = _sweep_points(shared)
    curve = {"bpp": [r["bpp"] for r in ref.values()], metric: [r[metric] for r in ref.values()]}
    rows = []
    for run in runs:
        own_points = _sweep_points(run)
        if len(own_points) != 1:
            raise SystemExit(f"{run}: a one-QP network is swept at its own QP only, found levels {sorted(own_points)}")
        (qp, own), = own_points.items()
        if qp not in ref:
            raise SystemExit(f"the shared network's sweeps have no level {qp:g} (have {sorted(ref)})")
        at = ref[qp]
        rows.append(f"| {qp:g} | {at['bpp']:.3f} / {100 * at[metric]:.1f} | {own['bpp']:.3f} / "
                    f"{100 * own[metric]:.1f} | {100 * (own['bpp'] / at['bpp'] - 1):+.1f} % | "
                    f"{100 * (own[metric] - at[metric]):+.1f} | "
                    f"{100 * (own[metric] - _shared_at(curve, own['bpp'], metric)):+.1f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="", help="name=run_dir,... : one row each")
    ap.add_argument("--per-qp", default="", help="run dirs of one-QP networks")
    ap.add_argument("--shared", default="", help="the run of the shared (every-QP) network they are read beside")
    ap.add_argument("--eval-per-qp", default="", help="sweep dirs (`prepcodec eval`, one level each) of one-QP "
                    "networks on the evaluation set")
    ap.add_argument("--eval-shared", default="", help="the shared network's sweep dirs there, `+`-joined (their "
                    "levels must include each one-QP network's)")
    ap.add_argument("--metric", default="top1", help="the sweep metric of the --eval-per-qp table")
    args = ap.parse_args()
    if args.eval_per_qp:
        if not args.eval_shared:
            raise SystemExit("--eval-per-qp needs --eval-shared")
        print(f"| QP | shared network: bpp / {args.metric} | one network for this QP: bpp / {args.metric} | "
              f"bits vs shared | {args.metric} vs shared (points) | {args.metric} vs the shared curve at the same "
              "bits (points) |")
        print("|---:|---:|---:|---:|---:|---:|")
        print("\n".join(_eval_per_qp_rows(args.eval_per_qp.split(","), args.eval_shared, args.metric)))
    if args.runs:
        print("| run | route | preset | steps | run clock (min) | BD at equal agreement, start → end | "
              "BD at equal task loss, start → end | mean agreement | mean bpp |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for item in args.runs.split(","):
            name, _, run = item.partition("=")
            print(_row(name, run))
    if args.per_qp:
        if not args.shared:
            raise SystemExit("--per-qp needs --shared")
        print()
        print("| QP | start: bpp / agreement | shared network: bpp / agreement / CE | one network for this QP: "
              "bpp / agreement / CE | bits vs shared | agreement vs shared | "
              "agreement vs the shared curve at the same bits |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(_per_qp_rows(args.per_qp.split(","), args.shared)))


if __name__ == "__main__":
    main()
