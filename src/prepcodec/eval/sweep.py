"""Rate–accuracy sweep: data set x task x codec x levels x preprocessor -> per-image records + per-level summaries.

Per chunk of images: the teacher (task on the uncompressed image), then every level's preprocess -> real
encode/decode is queued in the codec process pool, and level by level, as results arrive, fidelity + task
prediction on the decoded images (batched by size) — the workers encode later levels meanwhile.
Every (image, level) result is committed to the SQLite cache as soon as its chunk finishes, so a killed sweep
resumes where it stopped and a repeated one only reads the cache.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from prepcodec.errors import BackendUnavailable, InputError
from prepcodec.eval.cache import CacheKey, ResultCache, StreamKey, image_hash
from prepcodec.eval.records import ImageRecord, LevelSummary, environment_info, write_run
from prepcodec.eval.scoring import GroundTruth, LevelScorer, prediction_summary

DEFAULT_CACHE = Path("runs/cache.sqlite")


@dataclass
class SweepConfig:
    """What a sweep measures (everything that changes a number is here and in the manifest)."""

    data: str
    task: str
    codec: str
    levels: Sequence[float]
    pre: str = "none"
    preset: str = "eval"
    limit: int | None = None
    workers: int | None = None
    batch: int = 16
    device: str = "cpu"
    cache: Path = DEFAULT_CACHE
    fidelity: Sequence[str] = ()  # extra full-reference metrics per image, e.g. ("fsim",)


@dataclass
class SweepStats:
    """Work done vs read from the cache (tests count encoder calls with this)."""

    encoded: int = 0
    cached: int = 0
    decoded_stored: int = 0  # results computed from a stored bitstream (another task's sweep encoded it)
    teacher_computed: int = 0
    wall_s: float = 0.0


@dataclass
class SweepResult:
    records: list[ImageRecord]
    summaries: list[LevelSummary]
    manifest: dict[str, Any]
    stats: SweepStats = field(default_factory=SweepStats)


NO_TASK = "none"


class _NoTask:
    """`--task none`: a human-vision sweep (e.g. Kodak rate-distortion); records carry fidelity metrics only."""

    name = NO_TASK
    kind = "none"

    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        return [{} for _ in range(images.shape[0])]


def parse_fidelity(text: str) -> list[str]:
    """'fsim' -> ['fsim']; InputError naming the known extra metrics."""
    from prepcodec.eval.metrics import EXTRA_FIDELITY

    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in EXTRA_FIDELITY]
    if unknown:
        raise InputError(f"unknown --fidelity {', '.join(unknown)}; known: {', '.join(EXTRA_FIDELITY)} "
                         "(psnr and ms_ssim are always measured)")
    return names


def parse_levels(text: str) -> list[float]:
    """'22,25,28' -> [22.0, 25.0, 28.0]; InputError on junk or duplicates."""
    try:
        levels = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--levels must be comma-separated numbers, got {text!r}") from None
    if not levels:
        raise InputError("--levels is empty")
    if not all(math.isfinite(v) for v in levels):
        raise InputError(f"--levels must be finite numbers, got {text!r}")
    if len(set(levels)) != len(levels):
        raise InputError(f"--levels has duplicates: {text!r}")
    return levels


def _level_text(level: float) -> str:
    return f"{float(level):g}"


def _to_batch(images: list[np.ndarray], device: str) -> torch.Tensor:
    arr = np.stack(images).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(device)


def _raw_predict(task, images: list[np.ndarray], batch: int, device: str) -> list[dict[str, Any]]:
    """Task outputs for images of any sizes: grouped by shape, batched, returned in input order."""
    out: list[dict[str, Any] | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[im.shape].append(i)
    with torch.no_grad():
        for idx in groups.values():
            for s in range(0, len(idx), batch):
                part = idx[s : s + batch]
                preds = task.predict(_to_batch([images[i] for i in part], device))
                for i, p in zip(part, preds, strict=True):
                    out[i] = p
    return out  # type: ignore[return-value]


def _predict(task, images: list[np.ndarray], batch: int, device: str,
             references: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Record summaries of the task's outputs (scored against `references`, the teacher's raw outputs, where the
    summary cannot carry what the metric needs: segmentation masks)."""
    raw = _raw_predict(task, images, batch, device)
    refs = references if references is not None else [None] * len(raw)
    return [prediction_summary(task.kind, p, r) for p, r in zip(raw, refs, strict=True)]


def _ground_truth(ds, kind: str) -> GroundTruth:
    if kind == "detection" and getattr(ds, "instances_json", None):
        return GroundTruth(instances_json=Path(ds.instances_json))
    if kind == "pose" and getattr(ds, "keypoints_json", None):
        return GroundTruth(keypoints_json=Path(ds.keypoints_json))
    return GroundTruth()


def summarize(records: list[ImageRecord], gt: GroundTruth | None = None) -> list[LevelSummary]:
    """Per-level means and task metrics (records of all levels; images sorted by id inside each level)."""
    by_level: dict[float, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_level[r.level].append(r)
    out = []
    for level in sorted(by_level):
        recs = sorted(by_level[level], key=lambda r: r.image)
        scorer = LevelScorer(recs, gt)
        s = LevelSummary(
            level=level, n=len(recs), bpp=scorer.mean_bpp(), psnr=scorer.score("psnr"), ms_ssim=scorer.score("ms_ssim")
        )
        for metric in scorer.metrics:
            setattr(s, metric, scorer.score(metric))
        out.append(s)
    return out


def _made_with(cfg: SweepConfig, pre) -> str:
    """What a preprocessor's output depends on beyond its own spec: the sweep's task for one that reads it (ROI
    baselines, the +amp stage), and the batch a network runs in (float summation order moves a few pixels)."""
    from prepcodec.npp.preprocessors import needs_task

    if pre.is_identity:
        return ""
    return (f"{cfg.task}|" if needs_task(cfg.pre) else "") + f"batch={cfg.batch}"


def _bitstreams(fresh: list[int], wait, stored: dict[int, bytes], decoding) -> dict[int, tuple[bytes, np.ndarray]]:
    """Image index -> (bytes, decoded picture): the fresh round trips and the stored bitstreams' decodes, both as
    the codec workers finish them (`decoding` yields the stored ones' pictures in `stored`'s order)."""
    out = {i: (t.data, t.decoded) for i, t in zip(fresh, wait(), strict=True)} if wait is not None else {}
    out.update({i: (data, picture) for (i, data), picture in zip(stored.items(), decoding, strict=True)})
    return out


def run_sweep(
    cfg: SweepConfig,
    out: Path | None = None,
    *,
    task=None,
    pool=None,
    progress: bool = True,
    on_chunk: Callable[[int, float], None] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; write the run directory when `out` is given.

    `task`/`pool` may be passed in to reuse loaded models / a live process pool; `on_chunk(chunk_index, level)`
    is called after each committed chunk (progress hooks, and tests that interrupt a sweep). The run directory is
    locked for the duration and must not hold a different sweep (`eval.run_lock`).
    """
    if out is None:
        return _sweep(cfg, None, task=task, pool=pool, progress=progress, on_chunk=on_chunk)
    from prepcodec.eval.run_lock import locked_run_dir

    with locked_run_dir(Path(out)):
        return _sweep(cfg, Path(out), task=task, pool=pool, progress=progress, on_chunk=on_chunk)


def _sweep(cfg: SweepConfig, out: Path | None, *, task, pool, progress: bool,
           on_chunk: Callable[[int, float], None] | None) -> SweepResult:
    from prepcodec.codecs import CodecPool, get_codec
    from prepcodec.codecs.pool import decode_one
    from prepcodec.data.datasets import get_dataset
    from prepcodec.eval import metrics
    from prepcodec.npp.preprocessors import needs_task, parse_pre
    from prepcodec.tasks.registry import create_task

    t0 = time.perf_counter()
    if cfg.batch < 1:
        raise InputError("--batch must be >= 1")
    pre = None if needs_task(cfg.pre) else parse_pre(cfg.pre)  # bad specs fail before any model loads
    ds = get_dataset(cfg.data)
    items = list(ds.items[: cfg.limit] if cfg.limit else ds.items)
    if not items:
        raise InputError(f"data set {cfg.data!r} selects no images")
    codec = get_codec(cfg.codec)
    ok, backend = codec.availability()
    if not ok:
        raise BackendUnavailable(f"codec {cfg.codec}: {backend}")
    levels = [codec.level_spec.check(lv) for lv in cfg.levels]
    extra = {name: metrics.EXTRA_FIDELITY[name] for name in parse_fidelity(",".join(cfg.fidelity))}
    probe = np.full((64, 64, 3), 128, np.uint8)
    for fn in extra.values():
        fn(probe, probe)  # missing weights (LPIPS) fail here, before any encoding
    if task is None:
        task = _NoTask() if cfg.task == NO_TASK else create_task(cfg.task, device=cfg.device)
    pre = pre or parse_pre(cfg.pre, None if isinstance(task, _NoTask) else task)
    if out is not None:
        from prepcodec.eval.run_lock import check_same_run

        check_same_run(out, {"data": cfg.data, "limit": cfg.limit, "task": cfg.task, "codec": cfg.codec,
                             "levels": [float(lv) for lv in levels], "preset": cfg.preset, "pre": pre.spec,
                             "fidelity": list(extra)})
    stats = SweepStats()
    cache = ResultCache(cfg.cache)
    own_pool = pool is None
    records: list[ImageRecord] = []

    # the task's scores differ in the last digits between batch sizes (CPU kernels block differently), so the
    # batch size is part of what a cached prediction means: a run's records never depend on who filled the cache
    task_key = f"{cfg.task}|batch={cfg.batch}"

    def teacher_key(h: str) -> CacheKey:
        return CacheKey(h, "teacher", "", "", "", "none", task_key)

    def key(h: str, level: float) -> CacheKey:
        return CacheKey(h, cfg.codec, backend, _level_text(level), cfg.preset, pre.cache_spec, task_key)

    made_with = _made_with(cfg, pre)

    def stream_key(h: str, level: float) -> StreamKey:
        return StreamKey(h, cfg.codec, backend, _level_text(level), cfg.preset, pre.cache_spec, made_with)

    bar = tqdm(total=len(items) * len(levels), desc=f"{cfg.codec} {pre.spec} {cfg.task}", unit="img",
               disable=not progress)
    try:
        for c, start in enumerate(range(0, len(items), cfg.batch)):
            chunk = items[start : start + cfg.batch]
            images = [ds.load(it) for it in chunk]
            hashes = [image_hash(im) for im in images]
            cached_teacher = cache.get_many(teacher_key(h) for h in hashes)
            missing_t = [i for i, h in enumerate(hashes) if teacher_key(h) not in cached_teacher]
            teacher_raw: list[dict[str, Any]] | None = None  # segmentation: the teacher's masks, for the counts
            if missing_t:
                if task.kind == "segmentation":  # its masks are needed again below: predict once, for all images
                    teacher_raw = _raw_predict(task, images, cfg.batch, cfg.device)
                    preds = [prediction_summary(task.kind, teacher_raw[i]) for i in missing_t]
                else:
                    preds = _predict(task, [images[i] for i in missing_t], cfg.batch, cfg.device)
                new = {teacher_key(hashes[i]): p for i, p in zip(missing_t, preds, strict=True)}
                cache.put_many(new.items())
                cached_teacher.update(new)
                stats.teacher_computed += len(missing_t)
            teachers = [cached_teacher[teacher_key(h)] for h in hashes]
            preprocessed: list[np.ndarray] | None = None
            # queue every level's missing round-trips first, so the codec workers encode the next levels while
            # this process runs the task and the metrics on the finished ones
            plan = []
            for level in levels:
                keys = [key(h, level) for h in hashes]
                values = cache.get_many(keys)
                # a cached result lacking a requested extra metric is recomputed (and replaced)
                missing = [i for i, k in enumerate(keys) if k not in values or any(m not in values[k] for m in extra)]
                stats.cached += len(keys) - len(missing)
                skeys = {i: stream_key(hashes[i], level) for i in missing}
                found = cache.get_streams(skeys.values())
                stored = {i: found[k] for i, k in skeys.items() if k in found}
                fresh = [i for i in missing if i not in stored]
                wait, decoding = None, iter(())
                if (fresh or stored) and pool is None:
                    pool = CodecPool(workers=cfg.workers)
                if stored:  # queued now: the workers decode them while this process scores the levels before
                    decoding = pool.map(decode_one, [(cfg.codec, data) for data in stored.values()])
                if fresh:
                    if pre.qp_aware:
                        inputs = pre.many([images[i] for i in fresh], codec.to_hevc_qp(level), cfg.batch)
                    else:
                        if preprocessed is None:
                            preprocessed = pre.many(images, batch=cfg.batch)
                        inputs = [preprocessed[i] for i in fresh]
                    wait = pool.submit(cfg.codec, inputs, level, preset=cfg.preset)
                plan.append((level, keys, values, missing, skeys, fresh, stored, wait, decoding))
            for level, keys, values, missing, skeys, fresh, stored, wait, decoding in plan:
                if missing:
                    streams = _bitstreams(fresh, wait, stored, decoding)
                    cache.put_streams((skeys[i], streams[i][0]) for i in fresh)
                    data = [streams[i][0] for i in missing]
                    decoded = [streams[i][1] for i in missing]
                    refs = None
                    if task.kind == "segmentation":
                        if teacher_raw is None:
                            teacher_raw = _raw_predict(task, images, cfg.batch, cfg.device)
                        refs = [teacher_raw[i] for i in missing]
                    preds = _predict(task, decoded, cfg.batch, cfg.device, refs)
                    new = {}
                    for j, i in enumerate(missing):
                        h, w = images[i].shape[:2]
                        new[keys[i]] = {
                            "nbytes": len(data[j]), "height": h, "width": w,
                            "psnr": float(metrics.psnr(images[i], decoded[j])),
                            "ms_ssim": float(metrics.ms_ssim(images[i], decoded[j])),
                            **{m: float(fn(images[i], decoded[j])) for m, fn in extra.items()},
                            "pred": preds[j],
                        }
                    cache.put_many(new.items())
                    values.update(new)
                    stats.encoded += len(fresh)
                    stats.decoded_stored += len(missing) - len(fresh)
                for i, it in enumerate(chunk):
                    v = values[keys[i]]
                    records.append(ImageRecord(
                        image=it.id, file=it.path.name, label=it.label, level=float(level), nbytes=v["nbytes"],
                        height=v["height"], width=v["width"],
                        bpp=float(metrics.bpp(v["nbytes"], v["height"], v["width"])),
                        psnr=v["psnr"], ms_ssim=v["ms_ssim"], pred=v["pred"], teacher=teachers[i],
                        **{m: v.get(m) for m in extra},  # requested extra metrics only (ImageRecord fields)
                    ))
                bar.update(len(chunk))
                if on_chunk is not None:
                    on_chunk(c, level)
    finally:
        bar.close()
        cache.close()
        if own_pool and pool is not None:
            pool.close()

    gt = _ground_truth(ds, task.kind)
    records.sort(key=lambda r: (r.level, r.image))
    summaries = summarize(records, gt)
    stats.wall_s = time.perf_counter() - t0
    manifest = {
        **environment_info(),
        "data": cfg.data, "n_images": len(items), "limit": cfg.limit, "task": cfg.task, "task_kind": task.kind,
        "codec": cfg.codec, "codec_backend": backend, "levels": [float(lv) for lv in levels], "preset": cfg.preset,
        "pre": pre.spec, "fidelity": list(extra), "workers": cfg.workers, "batch": cfg.batch, "device": cfg.device,
        "cache": str(cfg.cache),
        "ground_truth": {k: (str(v) if v else None) for k, v in gt.__dict__.items()},
        "stats": stats.__dict__,
    }
    if out is not None:
        write_run(out, manifest, records, summaries)
    return SweepResult(records, summaries, manifest, stats)
