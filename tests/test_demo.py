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


@pytest.mark.weights
def test_main_job_report_renders_in_a_real_browser(tmp_path, demo):
    """`prepcodec demo` (the README's first command) on one bundled photo with a network that visibly edits:
    the terminal table, the HTML report with its PNGs, and headless Chromium rendering every picture."""
    import shutil
    import subprocess

    import torch

    from prepcodec.npp.model import create_npp
    from prepcodec.npp.zoo import export_npp

    net = create_npp("small-full")
    with torch.no_grad():
        net.pixel.conv2.weight.mul_(0.8)
    weights = export_npp(net, tmp_path / "dark.pt")
    out = tmp_path / "report"
    r = demo("--npp", f"{weights},cls", "--images", "1", "--fast", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "astronaut" in r.stdout and "plain bpp" in r.stdout and "index.html" in r.stdout
    assert "npp:cls" in r.stdout and "dark" in r.stdout  # a row per network
    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in (out / "img").iterdir())
    assert pngs == sorted(f"astronaut-{s}.png" for s in ("0", "1", "2", "3", "4", "original", "removed", "removed-1"))
    assert all(f"img/{name}" in page for name in pngs) and "% bytes" in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-images-loaded="8/8"' in dom.stdout, dom.stderr[-1000:]
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1600,900", f"--screenshot={shot}", (out / "index.html").as_uri()],
                   capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1600, 900) and len(set(im.convert("L").resize((64, 36)).getdata())) > 20  # not blank
