"""The NPP trainer: data rules, λ paired with the QP, gradient routes, resume, divergence, shipped-weight loading."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from prepcodec.errors import InputError
from prepcodec.npp.model import create_npp
from prepcodec.npp.preprocessors import parse_pre
from prepcodec.npp.zoo import export_npp, load_npp
from prepcodec.safe_load import safe_torch_load
from prepcodec.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from prepcodec.train.crops import CropRecipe, check_recipe
from prepcodec.train.lambda_qp import LambdaSchedule, break_even

# a plain-hevc curve measured on 32 imagenet-train crops (QP, bpp, KL to the teacher): docs/training.md
PLAIN = ([22, 26, 30, 34, 38, 42, 44], [2.83, 2.105, 1.516, 1.056, 0.683, 0.417, 0.316],
         [0.0235, 0.0684, 0.1199, 0.1568, 0.3275, 0.6224, 0.9778])


def _photo(sample_image, h=64, w=96) -> torch.Tensor:
    rgb = np.array(sample_image("chelsea"))[:h, :w]
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("bad", [("imagenet-eval",), ("kodak",), ("imagenet-eval[:10]",), ("coco-val",),
                                 ("samples",), ("photos-eval",), ()])
def test_evaluation_splits_are_refused(bad):
    with pytest.raises(InputError):
        check_recipe(CropRecipe(datasets=bad))


def test_training_splits_are_accepted():
    check_recipe(CropRecipe(datasets=("imagenet-train[:400]", "photos-train")))


def test_validation_crop_side_is_checked_and_old_recipes_keep_their_cache_key():
    check_recipe(CropRecipe(val_crop=256))
    with pytest.raises(InputError):
        check_recipe(CropRecipe(val_crop=100))
    assert CropRecipe().val_side == 192 and CropRecipe(val_crop=256).val_side == 256
    assert CropRecipe().key("effnet-lite0") == "de9288c845639a40"  # the key the default bank had before val_crop
    assert CropRecipe(val_crop=256).key("effnet-lite0") != CropRecipe().key("effnet-lite0")


def test_break_even_lambda_falls_with_the_qp():
    lam = break_even(*PLAIN)
    assert (np.diff(lam) < 0).all()  # each bit matters more at high QP
    assert lam[0] / lam[-1] > 20  # a constant λ cannot serve the whole range
    with pytest.raises(InputError):
        break_even([22, 30], [1.0, 0.5], [0.1, 0.2])


def test_lambda_schedule_interpolates_the_table():
    table = {"qps": PLAIN[0], "break_even": break_even(*PLAIN).tolist()}
    sched = LambdaSchedule(2.0, table)
    q = torch.tensor([22.0, 34.0, 36.0, 60.0])
    lam = sched(q)
    assert lam[0] == pytest.approx(2 * table["break_even"][0], rel=1e-6)
    assert lam[1] == pytest.approx(2 * table["break_even"][3], rel=1e-6)
    assert table["break_even"][4] * 2 < lam[2] < table["break_even"][3] * 2
    assert lam[3] == pytest.approx(2 * table["break_even"][-1], rel=1e-6)  # clamped at the table's end
    assert torch.equal(LambdaSchedule(0.5)(q), torch.full_like(q, 0.5))
    with pytest.raises(InputError):
        LambdaSchedule(0.0)


@pytest.mark.weights
def test_routes_real_values_and_their_gradients(sample_image):
    from prepcodec.codecs.pool import CodecPool
    from prepcodec.proxy.zoo import load_proxy
    from prepcodec.train.routes import CodecPath, real_codec

    x = _photo(sample_image)
    qp = torch.tensor([34.0])
    proxy = load_proxy("hevc-dct")
    with CodecPool(workers=0) as pool:
        real = real_codec(pool, "hevc", "fast")
        x_real, bits_real = real(x, qp)
        for route in ("real", "ste", "proxy"):
            xb = x.clone().requires_grad_(True)
            x_hat, bits = CodecPath(route, proxy, real)(xb, qp)
            if route == "proxy":
                x_p, b_p = proxy(x, qp)
                assert torch.allclose(x_hat, x_p) and torch.allclose(bits, b_p)
            else:  # real forward values, bit for bit
                assert torch.equal(x_hat.detach(), x_real) and torch.equal(bits.detach(), bits_real)
            x_hat.sum().backward()
            if route == "ste":  # identity image gradient
                assert torch.equal(xb.grad, torch.ones_like(xb))
            else:
                assert torch.isfinite(xb.grad).all() and not torch.equal(xb.grad, torch.ones_like(xb))
    assert all(not p.requires_grad for p in proxy.parameters())  # frozen by CodecPath
    with pytest.raises(InputError):
        CodecPath("nope", proxy, None)
    with pytest.raises(InputError):
        CodecPath("real", proxy, None)


def test_exported_npp_loads_safely_and_is_keyed_by_its_weights(tmp_path, sample_image):
    net = create_npp("small")
    path = export_npp(net, tmp_path / "a.pt", training={"steps": 0})
    loaded = load_npp(str(path))
    x = _photo(sample_image)
    assert torch.equal(loaded.model(x, 30.0), net.eval()(x, 30.0))
    pre = parse_pre(f"npp:{path}")
    assert pre.qp_aware and pre.spec == f"npp:{path}@{loaded.sha256[:12]}"
    rgb = np.array(sample_image("chelsea"))[:64, :96]
    assert np.array_equal(pre(rgb, 34.0), rgb)  # the identity start changes nothing
    with pytest.raises(InputError, match="QP-aware"):
        pre(rgb)
    with torch.no_grad():
        net.unet.out.bias.fill_(0.01)
    export_npp(net, tmp_path / "b.pt")
    other = parse_pre(f"npp:{tmp_path / 'b.pt'}")
    assert other.cache_spec != pre.cache_spec  # retrained weights never share cached results
    assert not np.array_equal(other(rgb, 34.0), rgb)
    moved = tmp_path / "moved" / "c.pt"  # the same weights under another path share them
    moved.parent.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(path.with_suffix(suffix), moved.with_suffix(suffix))
    assert parse_pre(f"npp:{moved}").cache_spec == pre.cache_spec


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_crafted_or_foreign_files_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = export_npp(create_npp("small"), tmp_path / "good.pt")
    meta = json.loads(good.with_suffix(".json").read_text())
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps(_Boom()))
    crafted.with_suffix(".json").write_text(json.dumps(meta))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    empty.with_suffix(".json").write_text(json.dumps(meta))
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(good.read_bytes())
    foreign.with_suffix(".json").write_text(json.dumps({"config": meta["config"]}))
    newer = tmp_path / "newer.pt"
    newer.write_bytes(good.read_bytes())
    newer.with_suffix(".json").write_text(json.dumps({**meta, "version": 99}))
    other_arch = tmp_path / "arch.pt"
    other_arch.write_bytes(good.read_bytes())
    other_arch.with_suffix(".json").write_text(json.dumps({**meta, "config": {**meta["config"], "depth": 2}}))
    for path, message in [(crafted, "weights-only"), (empty, "damaged"), (foreign, "not a prepcodec NPP"),
                          (newer, "version 99"), (other_arch, "do not match")]:
        with pytest.raises(InputError, match=message) as err:
            load_npp(str(path))
        assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError, match="weights-only"):
        load_checkpoint(tmp_path / "run")
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(InputError, match="not found"):
        safe_torch_load(tmp_path / "none.pt", "checkpoint")


def _tiny_cfg(out, **kw):
    from prepcodec.train.npp_trainer import NPPTrainConfig

    crops = CropRecipe(datasets=("imagenet-train[:12]",), crop=64, crops_per_image=2, val_images=4)
    base = dict(crops=crops, steps=4, batch=2, lam_mode="const", lam=4.0, val_every=2, val_qps=(22, 30, 38, 44),
                workers=0, out=str(out), warmup=1, lr=1e-3, image_every=2, ckpt_every_s=1e-3)
    base.update(kw)
    return NPPTrainConfig(**base)


@pytest.mark.shared_data
@pytest.mark.weights
def test_train_exports_validated_weights_and_resumes_bit_exactly(tmp_path):
    from prepcodec.train.npp_trainer import train_npp

    straight = train_npp(_tiny_cfg(tmp_path / "a"), progress=False)
    assert straight["steps"] == 4 and [e["step"] for e in straight["val_log"]] == [0, 2, 4]
    assert (tmp_path / "a" / "npp.pt").exists() and list((tmp_path / "a" / "tb").iterdir())
    meta = json.loads((tmp_path / "a" / "npp.json").read_text())
    assert meta["training"]["data"]["train_images"] == 8 and meta["training"]["route"] == "real"
    train_npp(_tiny_cfg(tmp_path / "b"), stop_at=2, progress=False)
    assert load_checkpoint(tmp_path / "b")["step"] == 2
    resumed = train_npp(_tiny_cfg(tmp_path / "b"), resume=True, progress=False)
    assert resumed["steps"] == 4
    a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in create_npp("small").state_dict().items())  # it did train


@pytest.mark.shared_data
@pytest.mark.weights
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from prepcodec.train import npp_trainer

    real_terms = npp_trainer.loss_terms
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real_terms(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(npp_trainer, "loss_terms", poisoned)
    with pytest.raises(npp_trainer.TrainingDiverged, match="non-finite loss at step 3"):
        npp_trainer.train_npp(_tiny_cfg(tmp_path / "r", val_every=0), progress=False)
    state = load_checkpoint(tmp_path / "r")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "r" / "npp.pt").exists()


def test_config_errors_come_before_any_work(tmp_path):
    from prepcodec.train.npp_trainer import train_npp

    for bad in (dict(route="x"), dict(lam_mode="x"), dict(size="huge"), dict(lam=0), dict(qp_min=40, qp_max=30),
                dict(steps=None), dict(preset="turbo")):
        with pytest.raises(InputError):
            train_npp(dataclasses.replace(_tiny_cfg(tmp_path / "x"), **bad), progress=False)
    assert not (tmp_path / "x").exists()


def _train_cli(out, *extra):
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("prepcodec")
    return [str(exe), "train", "--datasets", "imagenet-train[:12]", "--crop", "64", "--crops-per-image", "2",
            "--val-images", "4", "--val-qps", "22,30,38,44", "--lam-mode", "const", "--batch", "2", "--workers", "0",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.weights
def test_kill_minus_9_loses_at_most_one_checkpoint_interval(tmp_path):
    """A real `kill -9` mid-run: the resumed run continues from the last checkpoint and reaches the end."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cli(out, "--steps", "400", "--val-every", "0", "--ckpt-every-s", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and step < 5:
        time.sleep(1)
        ckpt = out / CHECKPOINT_NAME
        if ckpt.exists():
            step = torch.load(ckpt, weights_only=True)["step"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step >= 5, proc.stderr.read()[-2000:]
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert 5 <= saved["step"] < 400
    rest = subprocess.run(_train_cli(out, "--steps", str(saved["step"] + 3), "--val-every", "0", "--resume"),
                          capture_output=True, text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr[-2000:]
    final = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert final["step"] == saved["step"] + 3 and len(final["history"]) == saved["step"] + 3
    assert (out / "npp.pt").exists()


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.weights
def test_torchrun_two_gloo_processes_train_the_npp(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = _train_cli(tmp_path / "ddp", "--steps", "3", "--val-every", "0")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "prepcodec.cli", *cmd[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "ddp" / "npp.json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["steps"] == 3


def test_encode_with_an_npp_writes_standard_files_of_the_preprocessed_image(tmp_path, sample_image):
    """`prepcodec encode --npp PATH --compare`: the file is the real encoder's stream of NPP(x), a stock decoder
    reads it, and the summary reports the bytes against plain encoding at the same level."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from prepcodec.codecs import get_codec

    net = create_npp("small")
    with torch.no_grad():  # a visible edit: darken a little (the identity start would change nothing)
        net.pixel.conv2.weight.mul_(0.8)
    weights = export_npp(net, tmp_path / "dark.pt")
    rgb = np.array(sample_image("chelsea"))[:96, :128]
    Image.fromarray(rgb).save(tmp_path / "in.png")
    exe = Path(sys.executable).with_name("prepcodec")
    proc = subprocess.run([str(exe), "encode", str(tmp_path / "in.png"), str(tmp_path / "out.jpg"), "-c", "jpeg",
                           "-q", "60", "--npp", str(weights), "--compare"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pre = parse_pre(f"npp:{weights}")
    expected = get_codec("jpeg").encode(pre(rgb, get_codec("jpeg").to_hevc_qp(60)), 60, "eval")
    assert (tmp_path / "out.jpg").read_bytes() == expected
    assert np.asarray(Image.open(tmp_path / "out.jpg")).shape == rgb.shape  # a stock decoder reads it
    plain = len(get_codec("jpeg").encode(rgb, 60, "eval"))
    assert f"without the NPP: {plain} bytes" in proc.stdout and pre.spec in proc.stdout
    bad = subprocess.run([str(exe), "encode", str(tmp_path / "in.png"), str(tmp_path / "o2.jpg"), "-c", "jpeg",
                          "-q", "60", "--npp", "no-such-net"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no shipped NPP" in bad.stderr and not (tmp_path / "o2.jpg").exists()


@pytest.mark.shared_data
@pytest.mark.weights
def test_qp_paired_lambda_is_measured_on_training_crops_and_cached(tmp_path, monkeypatch):
    from prepcodec.train import lambda_qp
    from prepcodec.train.npp_trainer import train_npp

    cfg = _tiny_cfg(tmp_path / "q", lam_mode="qp", lam_qps=(22, 30, 38, 44), steps=1, val_every=0)
    first = train_npp(cfg, progress=False)["lam_table"]
    assert first["qps"] == [22, 30, 38, 44] and first["crops"] == 16
    assert first["bpp"] == sorted(first["bpp"], reverse=True) and (np.diff(first["break_even"]) < 0).all()

    def must_not_measure(*args, **kwargs):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(lambda_qp, "measure_break_even", must_not_measure)
    again = train_npp(dataclasses.replace(cfg, out=str(tmp_path / "q2")), progress=False)["lam_table"]
    assert again == first


@pytest.mark.shared_data
@pytest.mark.weights
def test_select_last_exports_the_final_weights_also_of_a_finished_run(tmp_path):
    """`--select last`: the final weights, not the best validation score (a 32-image validation cannot rank
    checkpoints); resuming a finished run with it re-exports without training or validating again."""
    from prepcodec.train.npp_trainer import train_npp

    cfg = _tiny_cfg(tmp_path / "r", lr=5e-2)
    train_npp(cfg, progress=False)
    final = load_checkpoint(tmp_path / "r")["model"]
    summary = train_npp(dataclasses.replace(cfg, select="last"), resume=True, progress=False)
    assert summary["steps"] == 4 and summary["best_step"] == 4 and summary["best_val_score_pct"] is None
    assert [e["step"] for e in summary["val_log"]] == [0, 2, 4]
    exported = load_npp(str(tmp_path / "r" / "npp.pt")).model.state_dict()
    assert all(torch.equal(exported[k], final[k]) for k in final)


@pytest.mark.shared_data
@pytest.mark.weights
def test_a_fine_tuning_run_resumes_without_its_init_weights(tmp_path):
    """The checkpoint records the architecture: a run started from --init weights resumes on a machine that lacks
    them (only the repository travels between machines)."""
    from prepcodec.train.npp_trainer import train_npp

    start = export_npp(create_npp("small-full"), tmp_path / "start.pt")
    cfg = _tiny_cfg(tmp_path / "ft", init=str(start), steps=3, val_every=0)
    train_npp(cfg, stop_at=2, progress=False)
    start.unlink()
    start.with_suffix(".json").unlink()
    summary = train_npp(cfg, resume=True, progress=False)
    assert summary["steps"] == 3
    assert load_npp(str(tmp_path / "ft" / "npp.pt")).model.config == create_npp("small-full").config


@pytest.mark.weights
def test_the_detector_roi_network_starts_as_blur_1_and_keeps_what_centernet_finds(sample_image):
    """roi-det at initialisation is close to the blur:1 baseline (both mixes mostly on sigma 1), its keep-mask is
    CenterNet's boxes, and every part that decides the output gets a gradient (det-A's saturated start got e^-8)."""
    from prepcodec.npp.baselines import gaussian_blur

    net = create_npp("roi-det").eval()
    x = _photo(sample_image, 400, 600)
    out = net(x, 34.0)
    blur1 = gaussian_blur(x, 1.0)
    assert float((out - blur1).detach().abs().mean()) < 0.1 * float((x - blur1).abs().mean())
    out.square().mean().backward()  # any loss that prefers less blur
    for name in ("keep_bias", "mix_bias", "threshold.fc2.bias"):
        grad = net.roi.get_parameter(name).grad
        assert float(grad.abs().max()) > 1e-6, name
    with torch.no_grad():
        out = net(x, 34.0)
        boxes = net.roi.attention(x)
    assert set(boxes.unique().tolist()) <= {0.0, 1.0} and 0.0 < float(boxes.mean()) < 1.0  # objects, not all
    with torch.no_grad():  # move the mixes: the kept region stays sharper than the background
        net.roi.keep_bias.copy_(torch.tensor([8.0, 0.0, 0.0]))
        net.roi.mix_bias.copy_(torch.tensor([0.0, 0.0, 8.0]))
        out = net(x, 34.0)
    inside, outside = boxes.bool().expand_as(x), ~boxes.bool().expand_as(x)
    err = (out - x).abs()
    assert float(err[inside].mean()) < 0.5 * float(err[outside].mean())


@pytest.mark.weights
def test_detector_loss_per_image_is_each_images_own_loss(sample_image):
    from prepcodec.tasks.registry import create_task

    task = create_task("centernet")
    x = torch.cat([_photo(sample_image, 256, 256), _photo(sample_image, 256, 256).flip(-1)])
    targets = task.pseudo_targets(x)
    noisy = (x + 0.05 * torch.sin(40 * x)).clamp(0, 1)
    per_image = task.loss(noisy, targets, reduction="none")
    assert per_image.shape == (2,) and bool((per_image > 0).all())
    for i in range(2):
        own = type(targets)([h[i : i + 1] for h in targets.heads], targets.predictions[i : i + 1])
        alone = task.loss(noisy[i : i + 1], own)
        assert float(per_image[i]) == pytest.approx(float(alone), rel=1e-5)
    loss, preds = task.loss_and_predictions(noisy, targets, reduction="none")
    torch.testing.assert_close(loss, per_image)
    assert len(preds) == 2 and all("boxes" in p for p in preds)


@pytest.mark.shared_data
@pytest.mark.weights
def test_train_runs_a_detector_with_recomputed_teacher_and_map_validation(tmp_path):
    """`prepcodec train --task centernet`: the teacher's heads are recomputed per batch (not banked), validation
    scores mAP against the teacher, and top-1 cross-entropy is refused for a detector."""
    from prepcodec.train.npp_trainer import train_npp

    cfg = _tiny_cfg(tmp_path / "det", task="centernet", size="roi-det", steps=2, val_every=0, image_every=100,
                    crops=CropRecipe(datasets=("coco-train[:6]",), crop=128, crops_per_image=1, val_images=2))
    summary = train_npp(cfg, progress=False)
    assert summary["steps"] == 2 and len(summary["val_log"]) == 2  # at the start and at the end
    agreement = summary["val_log"][-1]["agreement"]
    assert all(0.0 <= a <= 1.0 for a in agreement) and max(agreement) > 0  # mAP vs the teacher's boxes
    assert load_npp(str(tmp_path / "det" / "npp.pt")).model.config.roi == "centernet"
    with pytest.raises(InputError, match="needs a classifier"):
        train_npp(dataclasses.replace(cfg, task_loss="top1", out=str(tmp_path / "x")), progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.weights
def test_confident_task_loss_is_a_detectors_only(tmp_path):
    """`--task-loss confident` (a detector's confident detections made certain) is refused for a classifier before
    any work, and the teacher adapters agree."""
    from prepcodec.tasks.registry import create_task
    from prepcodec.train.npp_trainer import NPPTrainConfig, check_config
    from prepcodec.train.teacher import BankedTeacher, RecomputedTeacher

    with pytest.raises(InputError, match="needs a detector"):
        check_config(NPPTrainConfig(task="effnet-lite0", task_loss="confident", steps=1, out=str(tmp_path / "c")))
    check_config(NPPTrainConfig(task="centernet", task_loss="confident", steps=1, out=str(tmp_path / "d")))
    with pytest.raises(InputError, match="classifier's hard target is 'top1'"):
        BankedTeacher(create_task("effnet-lite0"), "confident")
    with pytest.raises(InputError, match="'kl' or 'confident'"):
        RecomputedTeacher(create_task("centernet"), "top1")
    assert not any((tmp_path / n).exists() for n in ("c", "d"))


@pytest.mark.weights
def test_validation_computes_a_detectors_teacher_once_per_batch(sample_image):
    """The detector's teacher (a forward pass on the uncompressed crops) is the same at every QP: the Validator
    computes it once per validation batch and curve, however many QPs, and scoring again gives the same numbers."""
    from types import SimpleNamespace

    from prepcodec.codecs.pool import CodecPool
    from prepcodec.tasks.registry import create_task
    from prepcodec.train.npp_trainer import Validator
    from prepcodec.train.routes import real_codec

    crops = np.stack([np.array(sample_image(n))[:128, :128] for n in ("chelsea", "coffee", "astronaut")])
    bank = SimpleNamespace(val=crops, val_teacher=np.zeros((3, 1), np.float32))
    task, npp = create_task("centernet"), create_npp("roi-det")
    with CodecPool(workers=0) as pool:
        validator = Validator(bank, task, real_codec(pool, "hevc", "fast"), (30, 40), batch=2)
        calls = []
        compute = validator.target.targets
        validator.target.targets = lambda x, t: calls.append(len(x)) or compute(x, t)
        first = validator.score(npp, torch.device("cpu"))  # the plain curve and the network's
        assert calls == [2, 1, 2, 1]  # two batches, once each per curve, for 2 QPs
        assert validator.score(npp, torch.device("cpu")) == first and calls == [2, 1] * 3  # the plain curve is kept
