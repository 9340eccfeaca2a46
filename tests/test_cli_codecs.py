"""`prepcodec codecs | encode | decode` through the installed console script, good and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from prepcodec.codecs import get_codec
from prepcodec.codecs.yuv import yuv420_to_rgb
from prepcodec.data.samples import sample_paths

EXE = str(Path(sys.executable).with_name("prepcodec"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr


def no_files_except(folder: Path, allowed: set[str]) -> bool:
    return {p.name for p in folder.iterdir()} <= allowed


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A folder with two small real photos (one odd-sized)."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = {p.stem: p for p in sample_paths()}
    Image.open(paths["chelsea"]).convert("RGB").crop((100, 50, 261, 171)).save(folder / "cat.png")
    Image.open(paths["coffee"]).convert("RGB").crop((200, 100, 328, 196)).save(folder / "cup.png")
    return folder


def test_codecs_table_lists_all_available() -> None:
    proc = run("codecs")
    assert proc.returncode == 0, proc.stderr
    for name in ("hevc", "vvc", "jpeg", "webp", "avif", "jxl"):
        assert name in proc.stdout
    assert "no:" not in proc.stdout


@pytest.mark.parametrize("codec,flag,level", [("hevc", "--qp", 37), ("jxl", "--level", 70)])
def test_encode_decode_folder(photos: Path, tmp_path: Path, codec: str, flag: str, level: int) -> None:
    enc = tmp_path / "enc"
    proc = run("encode", photos, enc, "--codec", codec, flag, level)
    assert proc.returncode == 0, proc.stderr
    ext = get_codec(codec).extension
    files = sorted(p for p in enc.iterdir() if p.suffix == ext)
    assert sorted(p.name for p in enc.iterdir()) == [f"cat{ext}", f"cup{ext}", "manifest.csv", "manifest.json"]
    total = sum(p.stat().st_size for p in files)
    assert f"2 images, {total} bytes" in proc.stdout and "mean" in proc.stdout
    dec = tmp_path / "dec"
    proc = run("decode", enc, dec)
    assert proc.returncode == 0, proc.stderr
    for name, src in [("cat", photos / "cat.png"), ("cup", photos / "cup.png")]:
        a = np.asarray(Image.open(src))
        b = np.asarray(Image.open(dec / f"{name}.png"))
        assert a.shape == b.shape
        assert np.mean(np.abs(a.astype(int) - b.astype(int))) < 8


def test_hevc_file_decodes_with_stock_ffmpeg_to_our_pixels(photos: Path, tmp_path: Path) -> None:
    """A `.hevc` from `encode` is a plain Annex-B stream: FFmpeg's own decoder gives our YUV planes exactly."""
    out = tmp_path / "cup.hevc"
    assert run("encode", photos / "cup.png", out, "--qp", "32").returncode == 0
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    h, w = 96, 128
    raw = np.frombuffer(proc.stdout, np.uint8)
    assert raw.size == h * w * 3 // 2
    y = raw[: h * w].reshape(h, w)
    u = raw[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)
    v = raw[h * w * 5 // 4 :].reshape(h // 2, w // 2)
    ours = get_codec("hevc").decode(out.read_bytes())
    assert np.array_equal(yuv420_to_rgb(y, u, v), ours)


def test_encode_single_file_names_and_checks_extension(photos: Path, tmp_path: Path) -> None:
    proc = run("encode", photos / "cat.png", tmp_path / "cat", "--codec", "webp", "-q", "50", "--preset", "fast")
    assert proc.returncode == 0 and (tmp_path / "cat.webp").is_file(), proc.stderr
    assert_one_line_error(run("encode", photos / "cat.png", tmp_path / "x.jpg", "--qp", "30"), "extension")


def test_bad_inputs_exit_nonzero_with_one_line(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run("encode", tmp_path / "missing.png", out, "--qp", "30"), "no such file")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes((photos / "cat.png").read_bytes()[:300])
    assert_one_line_error(run("encode", corrupt, out / "c.hevc", "--qp", "30"), "corrupt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("encode", empty, out, "--qp", "30"), "no image files")
    assert_one_line_error(run("encode", photos, out, "--qp", "52"), "out of range")
    assert_one_line_error(run("encode", photos, out, "--codec", "h264", "--qp", "30"), "unknown codec")
    assert_one_line_error(run("encode", photos, out), "exactly one of")
    assert no_files_except(out, set())
    # a truncated bitstream: one line, and no PNG left behind
    good = out / "cup.jxl"
    assert run("encode", photos / "cup.png", good, "--codec", "jxl", "-q", "60").returncode == 0
    cut = out / "cut.jxl"
    cut.write_bytes(good.read_bytes()[:-20])
    assert_one_line_error(run("decode", cut, out / "cut.png"), "truncated")
    garbage = out / "garbage.hevc"
    garbage.write_bytes(os.urandom(500))
    assert_one_line_error(run("decode", garbage, out / "garbage.png"), "hevc")
    assert no_files_except(out, {"cup.jxl", "cut.jxl", "garbage.hevc"})


def test_calibrate_writes_a_monotone_table(tmp_path: Path) -> None:
    """A tiny calibration (1 bundled photo, 48x32 crop, 4 JPEG levels) through the real command."""
    import json

    samples = sample_paths()[0].parent
    out = tmp_path / "qp.json"
    args = ["--data", samples, "--codecs", "jpeg", "--images", "1", "--crop", "48x32", "--step", "40"]
    proc = run("calibrate", *args, "--hevc-step", "5", "--workers", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(out.read_text())
    assert table["command"].startswith("prepcodec calibrate") and table["machine"] and "crop" in table
    hevc, jpeg = table["codecs"]["hevc"], table["codecs"]["jpeg"]
    assert hevc["levels"] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 51]
    assert all(np.diff(hevc["mean_bpp"]) <= 0) and hevc["mean_bpp"][1] > 4 * hevc["mean_bpp"][-3]
    assert jpeg["levels"] == [1, 41, 81, 95]
    assert all(np.diff(jpeg["mean_bpp"]) > 0) and all(np.diff(jpeg["hevc_qp"]) <= 0)
    assert_one_line_error(run("calibrate", "--crop", "big", "--out", out), "--crop")


def test_missing_vvc_backend_is_reported_not_crashed(photos: Path, tmp_path: Path) -> None:
    """With imageio-ffmpeg pointed at an ffmpeg that does not exist, vvc is listed as unavailable (with the reason)
    and encoding with it fails with one line and writes nothing."""
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(tmp_path / "no-such-ffmpeg"), "COLUMNS": "250"}
    table = subprocess.run([EXE, "codecs"], capture_output=True, text=True, timeout=300, env=env)
    assert table.returncode == 0, table.stderr
    vvc_row = " ".join(ln for ln in table.stdout.splitlines() if "vvc" in ln)
    assert "does not run" in table.stdout and "vvc" in vvc_row, table.stdout
    out = tmp_path / "out"
    proc = subprocess.run([EXE, "encode", photos, out, "--codec", "vvc", "--qp", "32"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert_one_line_error(proc, "vvc")
    assert not out.exists() or not any(out.iterdir())


def test_output_paths_are_decided_and_checked_before_any_work(tmp_path: Path):
    """Trailing slash = folder; collisions, overwriting the source, non-files and unwritable places are refused."""
    rgb = np.asarray(Image.open(next(p for p in sample_paths() if p.stem == "chelsea")).convert("RGB"))[:48, :64]
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(rgb).save(src / "a.jpg", quality=95)
    single = src / "a.png"

    ok = run("encode", single, f"{tmp_path / 'out'}/", "-c", "jpeg", "-q", "50")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "a.jpg").is_file() and not (tmp_path / "out.jpg").exists()
    assert str(tmp_path / "out") in ok.stdout
    dec = run("decode", tmp_path / "out" / "a.jpg", f"{tmp_path / 'png'}/")
    assert dec.returncode == 0 and (tmp_path / "png" / "a.png").is_file() and not (tmp_path / "png.png").exists()

    assert_one_line_error(run("encode", src, tmp_path / "both", "-c", "hevc", "--qp", "37"), "would both be written")
    assert not (tmp_path / "both").exists() or not any((tmp_path / "both").iterdir())
    assert_one_line_error(run("encode", src / "a.jpg", src / "a.jpg", "-c", "jpeg", "-q", "50"), "overwrite its input")
    assert_one_line_error(run("encode", single, "/dev/null", "-c", "jpeg", "-q", "50"), "not a regular file")
    assert_one_line_error(run("encode", single, single / "x.jpg", "-c", "jpeg", "-q", "50"), "not a folder")
    assert_one_line_error(run("encode", single, "/proc/x.jpg", "-c", "jpeg", "-q", "50"), "cannot write there")
    assert_one_line_error(run("decode", tmp_path / "out" / "a.jpg", tmp_path / "out" / "a.jpg"), "extension")
    assert not Path("/dev/null.jpg").exists()


def test_level_aliases_must_name_the_codecs_own_knob_and_devices_are_checked(tmp_path: Path):
    src = next(p for p in sample_paths() if p.stem == "chelsea")
    assert_one_line_error(run("encode", src, tmp_path / "a.jpg", "-c", "jpeg", "--qp", "30"), "jpeg has no QP")
    assert_one_line_error(run("encode", src, tmp_path / "a.hevc", "-c", "hevc", "--quality", "30"), "set by its QP")
    assert not any(tmp_path.iterdir())
    for device, needle in (("tpu", "must be cpu, cuda or cuda:N"), ("cuda:x", "must be cpu")):
        assert_one_line_error(run("predict", src, "--device", device), needle)


def test_table_writers_refuse_degenerate_fits_and_never_overwrite_shipped_tables_by_default(tmp_path: Path):
    from prepcodec.codecs.qp_axis import TABLE_PATH
    from prepcodec.proxy.jpeg import RATE_MODEL_PATH

    shipped = (TABLE_PATH.read_bytes(), RATE_MODEL_PATH.read_bytes())
    assert_one_line_error(run("calibrate", "--codecs", "jpeg", "--images", "2"), "--out FILE, or --replace-shipped")
    assert_one_line_error(run("calibrate", "--images", "0", "--out", tmp_path / "t.json"), "--images must be >= 1")
    assert_one_line_error(run("proxy", "fit-jpeg", "--images", "0", "--out", tmp_path / "r.json"), "--images must")
    assert_one_line_error(run("proxy", "fit-jpeg", "--images", "1", "--out", tmp_path / "r.json"), "--images must")
    assert_one_line_error(run("proxy", "fit-jpeg"), "--replace-shipped")
    assert_one_line_error(run("proxy", "fit-jpeg", "--qualities", "5,x", "--out", tmp_path / "r.json"), "--qualities")
    assert (TABLE_PATH.read_bytes(), RATE_MODEL_PATH.read_bytes()) == shipped
    assert not any(tmp_path.iterdir())


def test_small_argument_checks_answer_in_one_line(tmp_path: Path):
    assert_one_line_error(run("plot", tmp_path, "--out", tmp_path / "p.jpg"), "PNG")
    assert_one_line_error(run("proxy", "targets", "--crops", "0"), "--crops")
    assert not list(tmp_path.iterdir())


def test_unwritable_outputs_are_refused_before_the_work_starts(tmp_path: Path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    sweep = ["eval", "--data", "samples", "--task", "none", "--codec", "jpeg", "--levels", "10,50", "--quiet"]
    assert_one_line_error(run(*sweep, "--out", afile / "run"), "not a folder")
    assert_one_line_error(run(*sweep, "--out", "/proc/run"), "cannot write there")
    assert_one_line_error(run(*sweep, "--out", tmp_path / "r", "--cache", tmp_path), "not a regular file")
    assert_one_line_error(run("plot", tmp_path, "--out", afile / "p.png"), "not a folder")
    assert_one_line_error(run("compare", tmp_path, tmp_path, "--out", "/proc/cmp"), "cannot write there")
    assert_one_line_error(run("calibrate", "--out", "/proc/t.json"), "cannot write there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("codec", ["hevc", "vvc"])
def test_stock_ffmpeg_converts_our_streams_to_rgb_as_we_do(photos: Path, tmp_path: Path, codec: str) -> None:
    """The streams signal full range in their VUI, so a stock decoder's own RGB conversion matches ours (a wrong
    range flag costs ~7 dB here: the VVC streams lacked it)."""
    from prepcodec.eval.metrics import psnr

    out = tmp_path / f"cup{get_codec(codec).extension}"
    assert run("encode", photos / "cup.png", out, "-c", codec, "--qp", "32", "--preset", "fast").returncode == 0
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    src = np.asarray(Image.open(photos / "cup.png").convert("RGB"))
    stock = np.frombuffer(proc.stdout, np.uint8).reshape(src.shape)
    ours = get_codec(codec).decode(out.read_bytes())
    assert abs(psnr(src, stock) - psnr(src, ours)) < 1.0


def _sps_profile(stream: bytes) -> dict:
    """profile_idc and the RExt constraint flags of the first SPS (H.265 7.3.3), emulation bytes removed."""
    start = stream.find(b"\x00\x00\x01\x42\x01") + 5  # NAL type 33 (SPS), nuh_layer 0, tid 1
    rbsp = bytearray()
    zeros = 0
    for b in stream[start : start + 24]:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        rbsp.append(b)
        zeros = zeros + 1 if b == 0 else 0
    bits = "".join(f"{b:08b}" for b in rbsp)
    ptl = bits[8:]  # after vps_id(4), max_sub_layers_minus1(3), temporal_id_nesting(1)
    names = ("max_12bit", "max_10bit", "max_8bit", "max_422chroma", "max_420chroma", "max_monochrome", "intra",
             "one_picture_only")
    flags = {n: int(ptl[8 + 32 + 4 + i]) for i, n in enumerate(names)}
    return {"profile_idc": int(ptl[3:8], 2), **flags}


def test_hevc_streams_signal_the_main_intra_profile(photos: Path, tmp_path: Path) -> None:
    """FFmpeg calls our streams "Rext": x265 marks all-intra 8-bit 4:2:0 as the Main Intra profile, which H.265
    defines in the range-extensions family (general_profile_idc 4 with these constraint flags, Table A.2)."""
    out = tmp_path / "cup.hevc"
    assert run("encode", photos / "cup.png", out, "--qp", "32", "--preset", "fast").returncode == 0
    assert _sps_profile(out.read_bytes()) == {"profile_idc": 4, "max_12bit": 1, "max_10bit": 1, "max_8bit": 1,
                                              "max_422chroma": 1, "max_420chroma": 1, "max_monochrome": 0,
                                              "intra": 1, "one_picture_only": 0}


def test_a_full_disk_gives_one_line_and_leaves_nothing_half_written(tiny_disk: Path, tmp_path: Path):
    src = tmp_path / "pngs"
    src.mkdir()
    for p in sample_paths():
        Image.open(p).convert("RGB").save(src / f"{p.stem}.png")  # ~1.5 MB of PNGs: more than the disk holds
    proc = run("encode", src, f"{tiny_disk}/out/", "-c", "jpeg", "-q", "95")
    assert proc.returncode == 2 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    written = sorted((tiny_disk / "out").iterdir())
    assert written and all(not p.name.startswith(".") for p in written)  # no temporary leftovers
    for p in written:  # every file that is there is whole
        assert Image.open(p).convert("RGB").size[0] > 0
