"""ONNX export of the NPP (the shipped ROI-guided npp:cls and a feature-guided mask network, the frozen Lite0 trunk
inside both graphs): onnxruntime matches torch on real photos at several sizes, `encode --npp X.onnx` writes the
same bytes as the torch network, foreign or damaged ONNX files are refused in one line, and the light edge install
(no torch) encodes with it (slow: builds its own venv)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prepcodec.errors import InputError

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("prepcodec")


@pytest.fixture(scope="module", params=["shipped-cls-roi", "mask"])
def net_pt(request, tmp_path_factory):
    """The shipped npp:cls-roi (run J, ROI-guided: the classifier's resize, crop and Grad-CAM inside the graph; the
    torch-free edge's network, since npp:cls adds a backward pass that does not export), and a
    feature-guided mask network (frozen Lite0 trunk + U-Net + blend head) moved off its start, as .pt files."""
    from prepcodec.npp.model import create_npp
    from prepcodec.npp.zoo import export_npp, resolve

    if request.param == "shipped-cls-roi":
        return resolve("cls-roi")
    torch.manual_seed(0)
    net = create_npp("small-mask")
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return export_npp(net, tmp_path_factory.mktemp("npp") / "mask.pt")


@pytest.fixture(scope="module")
def cls_onnx(net_pt, tmp_path_factory):
    """That network exported once through the CLI (which checks parity on real photos before writing)."""
    out = tmp_path_factory.mktemp("onnx") / f"{net_pt.stem}.onnx"
    proc = subprocess.run([str(EXE), "export", "onnx", str(out), "--npp", str(net_pt)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "onnxruntime matches torch" in proc.stdout
    return out


@pytest.mark.weights
def test_onnx_matches_torch_at_sizes_the_trace_never_saw(cls_onnx, net_pt, sample_image):
    from prepcodec.export.onnx_npp import OnnxNPP
    from prepcodec.npp.preprocessors import npp_preprocessor

    runner, torch_pre = OnnxNPP(cls_onnx), npp_preprocessor(str(net_pt))
    assert runner.meta["weights_sha256"].startswith(torch_pre.spec.rsplit("@", 1)[1])
    photo = np.array(sample_image("coffee"))
    for rgb in (photo, photo[:97, :131], photo[:256, :64]):  # odd sizes; the trace was at 224x224
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        for qp in (22.0, 37.0):
            with torch.no_grad():
                ref = torch_pre.tensor(x, qp).numpy()
            assert np.abs(runner.run(x.numpy(), np.array([qp], np.float32)) - ref).max() < 1e-4
    with pytest.raises(InputError, match="at least 64"):
        runner(photo[:40, :40], 30.0)


@pytest.mark.weights
def test_encode_with_the_onnx_npp_writes_the_torch_networks_bytes(cls_onnx, net_pt, tmp_path):
    src = ROOT / "src/prepcodec/data/samples/chelsea.png"
    outs, said = {}, {}
    for name, npp in (("onnx", str(cls_onnx)), ("torch", str(net_pt))):
        outs[name] = tmp_path / f"{name}.hevc"
        proc = subprocess.run([str(EXE), "encode", str(src), str(outs[name]), "--qp", "34", "--npp", npp],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        said[name] = proc.stdout
    assert outs["onnx"].read_bytes() == outs["torch"].read_bytes()
    assert "@onnx-" in said["onnx"] and "@onnx-" not in said["torch"]  # each names what ran


@pytest.mark.weights
def test_box_guided_networks_are_refused_by_the_exporter_in_one_line(tmp_path):
    from prepcodec.npp.model import create_npp
    from prepcodec.npp.zoo import export_npp

    weights = export_npp(create_npp("roi-det"), tmp_path / "det.pt")
    proc = subprocess.run([str(EXE), "export", "onnx", str(tmp_path / "det.onnx"), "--npp", str(weights)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "boxes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "det.onnx").exists()


def test_foreign_or_damaged_onnx_files_are_refused_in_one_line(tmp_path):
    from prepcodec.export.onnx_npp import OnnxNPP

    foreign = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.rand(1, 3, 8, 8),), str(foreign), dynamo=False)
    with pytest.raises(InputError, match="not a prepcodec NPP export"):
        OnnxNPP(foreign)
    damaged = tmp_path / "cut.onnx"
    damaged.write_bytes(foreign.read_bytes()[:50])
    with pytest.raises(InputError, match="not a readable ONNX model"):
        OnnxNPP(damaged)
    with pytest.raises(InputError, match="no such ONNX file"):
        OnnxNPP(tmp_path / "missing.onnx")
    proc = subprocess.run([str(EXE), "encode", str(ROOT / "src/prepcodec/data/samples/chelsea.png"),
                           str(tmp_path / "x.hevc"), "--qp", "30", "--npp", str(foreign)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.hevc").exists()


@pytest.mark.slow
@pytest.mark.weights
def test_the_light_edge_install_encodes_with_onnx_and_has_no_torch(cls_onnx, net_pt, tmp_path):
    """`pip install --no-deps prepcodec && pip install -r requirements/edge.txt` in a fresh venv (docs/deploy.md)."""
    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    subprocess.run([*pip, "-r", str(ROOT / "requirements/edge.txt")], check=True, timeout=900)
    no_torch = subprocess.run([str(venv / "bin/python"), "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0
    src = ROOT / "src/prepcodec/data/samples/chelsea.png"
    edge = subprocess.run([str(venv / "bin/prepcodec"), "encode", str(src), str(tmp_path / "edge.hevc"), "--qp", "34",
                           "--npp", str(cls_onnx), "--compare"], capture_output=True, text=True, timeout=300)
    assert edge.returncode == 0, edge.stderr
    full = subprocess.run([str(EXE), "encode", str(src), str(tmp_path / "full.hevc"), "--qp", "34",
                           "--npp", str(net_pt)], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    assert (tmp_path / "edge.hevc").read_bytes() == (tmp_path / "full.hevc").read_bytes()
