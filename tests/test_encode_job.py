"""The deployment encode job: rate targeting on real bytes, with and without the NPP, and the manifest."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.codecs import get_codec
from prepcodec.export.encode_job import encode_image, fit_to_target, levels_by_quality
from prepcodec.npp.model import create_npp
from prepcodec.npp.preprocessors import parse_pre
from prepcodec.npp.zoo import export_npp

EXE = str(Path(sys.executable).with_name("prepcodec"))


def _crop(sample_image, name="chelsea", h=96, w=128) -> np.ndarray:
    return np.array(sample_image(name))[:h, :w]


@pytest.mark.parametrize("codec", ["jpeg", "hevc"])
def test_target_bpp_picks_the_best_level_that_fits(sample_image, codec):
    c = get_codec(codec)
    rgb = _crop(sample_image)
    target = 1.0
    data, row = encode_image(c, rgb, "fast", None, target_bpp=target)
    assert row.target_met and row.bpp <= target and 8 * len(data) == round(row.bpp * rgb.shape[0] * rgb.shape[1])
    order = levels_by_quality(c)
    better = order[order.index(int(row.level)) + 1]  # one step higher quality no longer fits
    assert 8 * len(c.encode(rgb, better, "fast")) > target * rgb.shape[0] * rgb.shape[1]


def test_target_bpp_with_the_npp_uses_the_preprocessed_stream(sample_image, tmp_path):
    net = create_npp("small-full")
    with torch.no_grad():
        net.pixel.conv2.weight.mul_(0.7)  # darker: fewer bits at every level
    pre = parse_pre(f"npp:{export_npp(net, tmp_path / 'n.pt')}")
    c = get_codec("jpeg")
    rgb = _crop(sample_image)
    data, row = encode_image(c, rgb, "fast", None, pre=pre, target_bpp=0.8, compare=True)
    expected = c.encode(pre(rgb, c.to_hevc_qp(int(row.level))), int(row.level), "fast")
    assert data == expected and row.bpp <= 0.8 and row.plain_bytes > row.bytes


def test_an_unreachable_target_is_reported_not_hidden(sample_image):
    c = get_codec("jpeg")
    data, row = encode_image(c, _crop(sample_image), "fast", None, target_bpp=0.001)
    assert row.target_met is False and row.level == levels_by_quality(c)[0] and row.bpp > 0.001


def test_bisection_finds_the_boundary_with_few_encodes():
    calls = []

    def encode(level: int) -> bytes:
        calls.append(level)
        return b"x" * (level * 10)

    level, data, met = fit_to_target(encode, list(range(1, 101)), target_bits=8 * 455)
    assert (level, met, len(data)) == (45, True, 450) and len(set(calls)) <= 9


def test_folder_encode_writes_a_manifest_and_states_the_target(tmp_path, sample_image):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(_crop(sample_image, name)).save(src / f"{name}.png")
    proc = subprocess.run([EXE, "encode", str(src), str(tmp_path / "out"), "-c", "webp", "--target-bpp", "0.6",
                           "--preset", "fast"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "out" / "manifest.json").read_text())
    with open(tmp_path / "out" / "manifest.csv") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [r["file"] for r in rows]
    for r in rows:
        assert Path(r["output"]).stat().st_size == r["bytes"] and r["bpp"] <= 0.6 and r["target_met"]
    assert "target 0.6 bpp: 2 met, 0 over" in proc.stdout
    bad = subprocess.run([EXE, "encode", str(src), str(tmp_path / "o2"), "-c", "webp", "--target-bpp", "0.6",
                          "-q", "50"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not both" in bad.stderr and not (tmp_path / "o2").exists()
