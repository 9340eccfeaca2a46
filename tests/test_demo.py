"""`prepcodec demo`: a tiny real run writes the plot and the tables; bad arguments exit 2 with one line."""

from __future__ import annotations

import csv
import json
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from prepcodec.cli import main
from prepcodec.codecs import get_codec, list_codecs
from prepcodec.commands.demo_cmd import demo_levels


@pytest.fixture
def demo(monkeypatch, capsys):
    """Run `prepcodec demo ARGS` through the real entry point in this process; (returncode, stdout, stderr)."""

    def run(*args: str) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", ["prepcodec", "demo", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run


def test_demo_levels_cover_each_codec_range():
    for name in list_codecs():
        spec = get_codec(name).level_spec
        levels = demo_levels(name, 5)
        assert len(levels) == 5 and all(spec.min <= v <= spec.max for v in levels)
        assert all(float(v).is_integer() for v in levels) if spec.integer else True
    assert demo_levels("hevc", 5) == [42, 37, 32, 27, 22]  # low quality first
    assert demo_levels("jpeg", 3) == [10, 50, 90]


def test_tiny_fast_demo_writes_plot_csv_json(tmp_path, demo):
    out = tmp_path / "demo"
    r = demo("--fast", "--images", "1", "--codecs", "jpeg,webp", "--levels-per-codec", "3", "--workers", "1",
              "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "mean bpp" in r.stdout and "jpeg" in r.stdout and "webp" in r.stdout
    with Image.open(out / "rd.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["codec"], float(r["level"])) for r in rows] == [
        ("jpeg", 10), ("jpeg", 50), ("jpeg", 90), ("webp", 10), ("webp", 50), ("webp", 90)]
    for codec in ("jpeg", "webp"):
        mine = [r for r in rows if r["codec"] == codec]
        bpps, psnrs = [float(r["bpp"]) for r in mine], [float(r["psnr"]) for r in mine]
        assert bpps == sorted(bpps) and psnrs == sorted(psnrs)  # more quality -> more bits, higher PSNR
        assert all(0.05 < b < 8 for b in bpps) and all(20 < p < 60 for p in psnrs)
    doc = json.loads((out / "results.json").read_text())
    assert doc["images"] == ["astronaut.png"] and doc["preset"] == "fast" and len(doc["per_image"]) == 6
    assert all(r["bytes"] > 0 for r in doc["per_image"])


def test_demo_bad_arguments_exit_2_with_one_line(tmp_path, demo):
    r = demo("--codecs", "mpeg2", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown codec 'mpeg2'" in r.stderr
    r = demo("--images", "9", "--codecs", "jpeg", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--images must be between 1 and 5" in r.stderr
    assert not (tmp_path / "x").exists()
