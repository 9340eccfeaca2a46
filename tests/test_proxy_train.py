"""Proxy training on real JPEG targets of real photo crops: the loss falls, and resume == uninterrupted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.proxy.models import ProxyCodec, create_proxy
from prepcodec.proxy.targets import TargetRecipe, build_targets, to_tensor, to_uint8
from prepcodec.train.proxy_trainer import TrainConfig, loss_terms, train_proxy

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "src/prepcodec/data/samples"
RECIPE = TargetRecipe(codec="jpeg", crops=12, crop_size=64, qps_per_crop=2, datasets=("samples",))


def _jpeg_roundtrip(x: torch.Tensor, qp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The real JPEG codec in-process (fast preset), at a quality that falls with QP like the shared axis does."""
    from prepcodec.codecs import get_codec

    codec = get_codec("jpeg")
    outs, bits = [], []
    for img, q in zip(to_uint8(x), qp.tolist(), strict=True):
        data = codec.encode(img, int(round(95 - 3.5 * (q - 22))), "fast")
        outs.append(codec.decode(data))
        bits.append(8.0 * len(data))
    return to_tensor(np.stack(outs)), torch.tensor(bits)


@pytest.fixture(scope="module")
def targets() -> dict[str, np.ndarray]:
    crops = []
    for name in ("kodim23", "coffee", "astronaut"):
        rgb = np.asarray(Image.open(SAMPLES / f"{name}.png").convert("RGB"))
        crops += [rgb[y : y + 64, x : x + 64] for y, x in ((40, 60), (150, 200), (230, 90), (100, 300))]
    return build_targets(RECIPE, _jpeg_roundtrip, crops=np.stack(crops))


def _cfg(tmp_path, name: str, steps: int = 20, size: str = "small") -> TrainConfig:
    return TrainConfig(codec="jpeg", size=size, steps=steps, batch=2, ckpt_every=4, out=str(tmp_path / name),
                       recipe=RECIPE)


def _eval_loss(model: ProxyCodec, data: dict[str, np.ndarray], cfg: TrainConfig) -> float:
    x = to_tensor(data["crops"][data["idx"]])
    torch.manual_seed(123)  # same training noise for both evaluations
    with torch.no_grad():
        return float(loss_terms(model.train(), x, torch.from_numpy(data["qp"]), torch.from_numpy(data["bits"]),
                                to_tensor(data["x_hat"]), cfg)["loss"])


@pytest.mark.parametrize("size", ["small", "dct"])
def test_twenty_steps_lower_the_loss(tmp_path, targets, size):
    cfg = _cfg(tmp_path, "a", size=size)
    torch.manual_seed(cfg.seed)
    before = _eval_loss(create_proxy("jpeg", size), targets, cfg)
    summary = train_proxy(cfg, targets=targets)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    model = create_proxy("jpeg", size)
    model.load_state_dict(state["model"])
    assert summary["steps"] == 20 and (tmp_path / "a" / f"jpeg-{size}.pt").exists()
    assert list((tmp_path / "a" / "tb").glob("events.*"))
    assert _eval_loss(model, targets, cfg) < 0.8 * before


def test_resume_equals_uninterrupted(tmp_path, targets):
    train_proxy(_cfg(tmp_path, "full", steps=8), targets=targets)
    train_proxy(_cfg(tmp_path, "split", steps=8), targets=targets, stop_at=4)  # "killed" after step 4
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["step"] == 4
    train_proxy(_cfg(tmp_path, "split", steps=8), targets=targets, resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, targets):
    """DDP on CPU: `torchrun --nproc_per_node 2 -m prepcodec.cli proxy train ...` trains and exports."""
    import subprocess
    import sys
    from pathlib import Path

    npz = tmp_path / "t.npz"
    np.savez(npz, **targets)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "prepcodec.cli", "proxy", "train",
           "--codec", "jpeg", "--steps", "4", "--batch", "2", "--targets", str(npz), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"world_size": 2' in proc.stdout
    assert (tmp_path / "ddp" / "jpeg-small.pt").exists()


# --- fine-tuning, streaming targets, validation, time budget -----------------------------------------------------

NON_KODAK = ("astronaut", "chelsea", "coffee")  # kodim* in the samples are Kodak, the proxy's test set


@pytest.fixture
def image_dir(tmp_path):
    import shutil

    d = tmp_path / "imgs"
    d.mkdir()
    for name in NON_KODAK:
        shutil.copy(SAMPLES / f"{name}.png", d / f"{name}.png")
    return d


def test_train_indices_never_pick_held_out():
    from prepcodec.proxy.targets import held_out, train_indices

    gen = torch.Generator().manual_seed(0)
    pick = train_indices(50, 4000, gen, holdout_every=4)
    assert pick.min() >= 0 and pick.max() < 50 and not np.any(pick % 4 == 0)
    assert set(pick.tolist()) == set(range(50)) - set(held_out(50, 4).tolist())
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert np.array_equal(train_indices(10, 8, gen_a), torch.randint(10, (8,), generator=gen_b).numpy())


def test_streaming_run_exports_best_validated_weights(tmp_path, image_dir):
    """`proxy train --stream`: real HEVC targets generated by 2 codec workers while training; best weights exported."""
    import math

    from typer.testing import CliRunner

    from prepcodec.commands.proxy_cmd import proxy_app
    from prepcodec.proxy.zoo import load_weights

    out = tmp_path / "stream"
    args = ["train", "--codec", "hevc", "--stream", "16", "--images", str(image_dir), "--workers", "2",
            "--crop-size", "64", "--batch", "4", "--steps", "6", "--holdout-every", "4", "--val-targets", "4",
            "--val-every", "3", "--alternate-rounding", "--out", str(out)]
    res = CliRunner().invoke(proxy_app, args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    state = torch.load(out / "hevc-small.pt", weights_only=True)
    assert state["g_a.0.weight"].dtype == torch.float16
    load_weights(out / "hevc-small.pt")
    t = json.loads((out / "hevc-small.json").read_text())["training"]
    assert t["steps"] == 6 and t["init"] is None and t["val_targets"] == 4
    assert t["targets"]["mode"] == "stream" and t["targets"]["crops"] == 16 and t["targets"]["preset"] == "eval"
    assert [e["step"] for e in t["val_log"]] == [3, 6]
    assert math.isfinite(t["val_loss"]) and t["val_loss"] == min(e["loss"] for e in t["val_log"])
    assert t["best_step"] in (3, 6) and t["val_all"]["n"] == 4
    meta = np.load(out / "targets_meta.npz")
    assert len(meta["qp"]) == t["targets"]["generated"] == 16
    assert np.all((meta["qp"] >= 22) & (meta["qp"] <= 47) & (meta["qp"] == np.round(meta["qp"])))
    assert np.all(meta["bits"] > 0)


def test_init_starts_from_given_weights(tmp_path, targets):
    from prepcodec.errors import InputError
    from prepcodec.proxy.zoo import WEIGHTS_DIR, load_proxy
    from prepcodec.train.proxy_trainer import init_model

    cfg = TrainConfig(codec="hevc", steps=1, batch=2, lr=0.0, init="hevc-small", out=str(tmp_path / "ft"),
                      recipe=RECIPE)
    model = init_model(cfg)
    for k, v in load_proxy("hevc-small").state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    summary = train_proxy(cfg, targets=targets)  # lr 0: the exported weights are the initial ones
    assert summary["init"] == "hevc-small"
    shipped_meta = json.loads((WEIGHTS_DIR / "hevc-small.json").read_text())["training"]
    assert summary["init_lineage"][0]["steps"] == shipped_meta["steps"]  # the history travels with the weights
    shipped = torch.load(WEIGHTS_DIR / "hevc-small.pt", weights_only=True)
    exported = torch.load(tmp_path / "ft" / "hevc-small.pt", weights_only=True)
    for k, v in shipped.items():
        assert torch.equal(exported[k], v), k
    warm = init_model(TrainConfig(codec="jpeg", init="hevc-small"))  # another codec, same architecture: allowed
    assert warm.config.codec == "jpeg" and torch.equal(warm.state_dict()[k], v)
    with pytest.raises(InputError, match="hevc-small"):
        init_model(TrainConfig(codec="hevc", size="large", init="hevc-small"))
    with pytest.raises(InputError, match="--init"):
        init_model(TrainConfig(init=str(tmp_path / "missing.pt")))


def test_budget_runs_until_time_is_up(tmp_path, targets):
    cfg = TrainConfig(codec="jpeg", steps=None, budget_s=2.0, batch=2, holdout_every=4, val_targets=2, val_every=0,
                      val_every_s=0.5, alternate_rounding=True, out=str(tmp_path / "b"), recipe=RECIPE)
    summary = train_proxy(cfg, targets=targets)
    assert summary["steps"] >= 1 and summary["wall_s"] < 15
    assert np.isfinite(summary["val_loss"]) and summary["val_targets"] == 2
    assert (tmp_path / "b" / "jpeg-small.pt").exists()


def test_stream_errors_are_input_errors(tmp_path):
    from typer.testing import CliRunner

    from prepcodec.commands.proxy_cmd import proxy_app
    from prepcodec.errors import InputError
    from prepcodec.proxy.stream import StreamRecipe, load_sources

    with pytest.raises(InputError, match="kodak"):
        load_sources(StreamRecipe(datasets=("photos-train", "kodak")))
    with pytest.raises(InputError, match="not found"):
        load_sources(StreamRecipe(images=str(tmp_path / "missing")))
    res = CliRunner().invoke(proxy_app, ["train", "--images", str(tmp_path), "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, InputError)


def test_distortion_matching_term(targets):
    """|log2 MSE(proxy, x) - log2 MSE(codec, x)|: zero for the codec's own decode, large for a lossless guess."""
    x = to_tensor(targets["crops"][targets["idx"]])
    qp, bits, x_codec = torch.from_numpy(targets["qp"]), torch.from_numpy(targets["bits"]), to_tensor(targets["x_hat"])
    cfg = TrainConfig(w_dist=2.0)
    same = loss_terms(lambda *_: (x_codec, bits), x, qp, bits, x_codec, cfg)
    assert float(same["dist_l1_log2"]) == 0.0 and float(same["rate_l1_log2"]) == 0.0
    near_lossless = loss_terms(lambda *_: ((x + 0.5 / 255).clamp(0, 1), bits), x, qp, bits, x_codec, cfg)
    assert float(near_lossless["dist_l1_log2"]) > 3  # the JPEG decodes are far more than 8x noisier than 0.5 levels
    assert float(near_lossless["loss"]) > float(same["loss"])


def test_per_qp_breakdown_covers_every_target(targets):
    from prepcodec.proxy.targets import TargetSampler
    from prepcodec.train.proxy_trainer import per_qp_breakdown

    idx = np.arange(len(targets["idx"]))
    rows = per_qp_breakdown(create_proxy("jpeg", "dct"), TargetSampler(targets), idx, torch.device("cpu"))
    assert sum(r["n"] for r in rows) == len(idx)
    assert all(r["psnr_codec"] > 20 and r["bits_ratio"] > 0 for r in rows)
