"""Proxy training on real JPEG targets of real photo crops: the loss falls, and resume == uninterrupted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.proxy.models import ProxyCodec, make_config
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


def _cfg(tmp_path, name: str, steps: int = 20) -> TrainConfig:
    return TrainConfig(codec="jpeg", steps=steps, batch=2, ckpt_every=4, out=str(tmp_path / name), recipe=RECIPE)


def _eval_loss(model: ProxyCodec, data: dict[str, np.ndarray], cfg: TrainConfig) -> float:
    x = to_tensor(data["crops"][data["idx"]])
    torch.manual_seed(123)  # same training noise for both evaluations
    with torch.no_grad():
        return float(loss_terms(model.train(), x, torch.from_numpy(data["qp"]), torch.from_numpy(data["bits"]),
                                to_tensor(data["x_hat"]), cfg)["loss"])


def test_twenty_steps_lower_the_loss(tmp_path, targets):
    cfg = _cfg(tmp_path, "a")
    torch.manual_seed(cfg.seed)
    before = _eval_loss(ProxyCodec(make_config("jpeg")), targets, cfg)
    summary = train_proxy(cfg, targets=targets)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    model = ProxyCodec(make_config("jpeg"))
    model.load_state_dict(state["model"])
    assert summary["steps"] == 20 and (tmp_path / "a" / "jpeg-small.pt").exists()
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
