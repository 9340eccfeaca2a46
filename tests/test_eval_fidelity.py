"""Human-vision sweeps: `--task none` with `--fidelity fsim` on real photos (no task model, real JPEG bytes)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prepcodec.codecs import get_codec
from prepcodec.data.images import load_image
from prepcodec.data.samples import sample_paths
from prepcodec.errors import InputError
from prepcodec.eval import metrics
from prepcodec.eval.compare import compare_runs
from prepcodec.eval.records import load_run
from prepcodec.eval.sweep import SweepConfig, parse_fidelity, run_sweep


def _cli(*args: str) -> subprocess.CompletedProcess:
    bin_ = Path(sys.executable).parent / "prepcodec"
    return subprocess.run([str(bin_), *args], capture_output=True, text=True, timeout=300, check=False)


def _photo() -> np.ndarray:
    return load_image(sample_paths()[0])[:192, :256]


def test_fsim_is_one_on_identical_images_and_falls_with_coarser_quantisation():
    img = _photo()
    jpeg = get_codec("jpeg")
    assert metrics.fsim(img, img) == pytest.approx(1.0, abs=1e-6)
    scores = [metrics.fsim(img, jpeg.decode(jpeg.encode(img, q))) for q in (90, 50, 10)]
    assert 0.5 < scores[2] < scores[1] < scores[0] < 1.0
    with pytest.raises(InputError):
        metrics.fsim(img, img[:100])


def test_parse_fidelity_names_the_known_metrics():
    assert parse_fidelity("fsim") == ["fsim"] and parse_fidelity("") == []
    with pytest.raises(InputError, match="fsim"):
        parse_fidelity("vif")


def test_fidelity_only_sweep_records_fsim_and_compares_on_it(tmp_path):
    cfg = SweepConfig(data="samples", task="none", codec="jpeg", levels=[10, 30, 60, 90], limit=2, workers=1,
                      cache=tmp_path / "c.sqlite", fidelity=("fsim",))
    result = run_sweep(cfg, tmp_path / "a", progress=False)
    assert result.manifest["task_kind"] == "none" and result.manifest["fidelity"] == ["fsim"]
    assert all(r.pred == {} and 0.5 < r.fsim < 1.0 for r in result.records)
    fsims = [s.fsim for s in result.summaries]
    assert fsims == sorted(fsims) and result.summaries[0].top1 is None
    run = load_run(tmp_path / "a")
    assert [s.fsim for s in run.summaries] == fsims
    # the same sweep again reads every result (fsim included) from the cache
    again = run_sweep(cfg, tmp_path / "b", progress=False)
    assert again.stats.encoded == 0 and [s.fsim for s in again.summaries] == fsims
    cmp = compare_runs([run, load_run(tmp_path / "b")], "fsim", n_boot=20)
    assert cmp.rows[0].bd_rate_pct == pytest.approx(0.0, abs=1e-9)
    # `prepcodec plot` draws a run's RD curve on any metric it has, and refuses one it lacks
    plot = _cli("plot", str(tmp_path / "a"), "--metric", "fsim", "--out", str(tmp_path / "rd.png"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = _cli("plot", str(tmp_path / "a"), "--metric", "top1", "--out", str(tmp_path / "no.png"))
    assert bad.returncode == 2 and "no 'top1'" in bad.stderr and not (tmp_path / "no.png").exists()


def test_cached_results_without_a_requested_metric_are_recomputed(tmp_path):
    base = dict(data="samples", task="none", codec="jpeg", levels=[20, 50, 80], limit=1, workers=1,
                cache=tmp_path / "c.sqlite")
    plain = run_sweep(SweepConfig(**base), progress=False)
    assert plain.stats.encoded == 3 and all(r.fsim is None for r in plain.records)
    with_fsim = run_sweep(SweepConfig(**base, fidelity=("fsim",)), progress=False)
    assert with_fsim.stats.encoded == 0 and with_fsim.stats.decoded_stored == 3  # the kept bitstreams, decoded
    assert all(r.fsim is not None for r in with_fsim.records)
    assert [r.nbytes for r in with_fsim.records] == [r.nbytes for r in plain.records]


def test_roi_preprocessing_needs_a_task(tmp_path):
    cfg = SweepConfig(data="samples", task="none", codec="jpeg", levels=[50], limit=1, workers=1,
                      cache=tmp_path / "c.sqlite", pre="roi:blur:4")
    with pytest.raises(InputError, match="needs a task"):
        run_sweep(cfg, progress=False)
