"""CodecPool / roundtrip_tensor and the shared HEVC-QP axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prepcodec.codecs import CodecPool, default_pool, get_codec, list_codecs
from prepcodec.codecs.pool import roundtrip_one
from prepcodec.codecs.qp_axis import build_mapping, load_table
from prepcodec.data.samples import sample_paths
from prepcodec.errors import InputError


def crops() -> list[np.ndarray]:
    """Three different real photos, cropped small (one odd-sized)."""
    paths = {p.stem: p for p in sample_paths()}
    out = []
    for name, (h, w) in [("chelsea", (96, 128)), ("coffee", (81, 117)), ("kodim04", (128, 96))]:
        rgb = np.asarray(Image.open(paths[name]).convert("RGB"))
        out.append(np.ascontiguousarray(rgb[100 : 100 + h, 100 : 100 + w]))
    return out


def test_pool_equals_in_process() -> None:
    images = crops()
    with CodecPool(2) as pool:
        for codec, levels in [("hevc", [30, 35, 40]), ("jpeg", 60), ("webp", [20, 50, 80])]:
            got = pool.roundtrip(codec, images, levels, preset="fast")
            want = [
                roundtrip_one(codec, im, lv, "fast")
                for im, lv in zip(images, levels if isinstance(levels, list) else [levels] * 3, strict=True)
            ]
            for g, w, im in zip(got, want, images, strict=True):
                assert g.data == w.data
                assert np.array_equal(g.decoded, w.decoded) and g.decoded.shape == im.shape
                assert g.bits == 8 * len(g.data) and g.bpp == pytest.approx(g.bits / (im.shape[0] * im.shape[1]))


def test_in_process_pool_and_level_validation() -> None:
    images = crops()
    pool = CodecPool(0)
    with pytest.raises(InputError, match="levels"):
        pool.roundtrip("jpeg", images, [50, 60])
    with pytest.raises(InputError, match="out of range"):
        pool.roundtrip("hevc", images, 52)
    with pytest.raises(InputError, match="unknown codec"):
        pool.roundtrip("h264", images, 30)
    assert default_pool(0) is default_pool()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_tensor_shapes_bits_and_single_quantisation(dtype: torch.dtype) -> None:
    images = crops()[:1] * 2
    u8 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    x = (u8.to(dtype) / 255.0).requires_grad_(True)
    pool = CodecPool(1)
    dec, bits = pool.roundtrip_tensor("jpeg", x, torch.tensor([30.0, 80.0]))
    assert dec.shape == x.shape and dec.dtype == dtype and dec.device == x.device and not dec.requires_grad
    assert bits.shape == (2,) and bits.dtype == dtype and bits[1] > bits[0]
    # exactly one rounding to uint8: the tensor path gives the same bytes as the uint8 path
    ref = roundtrip_one("jpeg", images[0], 30, "fast")
    assert bits[0].item() == ref.bits
    assert torch.equal((dec[0] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(ref.decoded))
    with pytest.raises(InputError, match="N, 3, H, W"):
        pool.roundtrip_tensor("jpeg", x[:, :2], 50)


def test_qp_axis_table_is_shipped_and_consistent() -> None:
    table = load_table()
    for key in ("command", "date", "machine", "images"):
        assert table[key]
    for name in list_codecs():
        codec = get_codec(name)
        spec = codec.level_spec
        entry = table["codecs"][name]
        # the whole range is covered (libvvenc cannot code some images at QP <= 3: those levels may be skipped)
        assert entry["levels"][0] <= spec.min + 6 and entry["levels"][-1] == spec.max
        qps = np.array([codec.to_hevc_qp(lv) for lv in entry["levels"]])
        # more quality on the native knob -> a lower (better) HEVC QP, never the other way round
        assert np.all(np.diff(qps) <= 0) if spec.higher_is_better else np.all(np.diff(qps) >= 0), qps
        for qp in (28, 34, 41):
            level = codec.from_hevc_qp(qp)
            assert spec.min <= level <= spec.max and float(level).is_integer()
    assert get_codec("hevc").to_hevc_qp(37) == 37 and get_codec("hevc").from_hevc_qp(37) == 37


def test_build_mapping_interpolates_in_log_bpp() -> None:
    """Hand-checked: HEVC bpp halves every 6 QP from 1 bpp at QP 30, so bpp b sits at QP 30 - 6*log2(b)."""
    hevc_qps = list(range(18, 43, 6))
    hevc_bpp = [2.0 ** (-(q - 30) / 6) for q in hevc_qps]
    entry = build_mapping([10, 50, 90], [0.25, 1.0, 2**0.5], hevc_qps, hevc_bpp)
    assert entry["hevc_qp"] == pytest.approx([42.0, 30.0, 27.0], abs=1e-3)
    assert build_mapping([10], [100.0], hevc_qps, hevc_bpp)["hevc_qp"] == [18.0]  # clamped to the measured range


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """kill -9 of the process that owns a pool: its codec workers go too, they do not live on as orphans."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        "import numpy as np\n"
        "from prepcodec.codecs.pool import CodecPool\n"
        "if __name__ == '__main__':\n"
        "    pool = CodecPool(2)\n"
        "    pool.roundtrip('jpeg', [np.full((16, 16, 3), 9, np.uint8)] * 2, 50)\n"
        "    print(' '.join(str(p) for p in pool._executor._processes), flush=True)\n"
        "    time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in owner.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    deadline = time.time() + 15
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [p for p in workers if _running(p)]
    assert not alive, f"orphaned codec workers {alive}"
