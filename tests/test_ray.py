"""Ray as the executor: a real local Ray instance (started here), the same bytes and records as the local pool, and
one-line errors when Ray is missing or a cluster is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prepcodec.errors import BackendUnavailable, InputError

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("prepcodec")
SAMPLES = ROOT / "src/prepcodec/data/samples"


@pytest.fixture(scope="module")
def ray_address():
    """A real local Ray instance of 2 CPUs for this module; its GCS address is what a cluster user passes."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ctx.address_info["address"]
    ray.shutdown()


def _encode(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "encode", str(SAMPLES), f"{out}/", "--qp", "37", "--preset", "fast", *extra],
                          capture_output=True, text=True, timeout=600)


def test_folder_encode_on_ray_writes_the_local_pools_bytes_and_manifest(ray_address, tmp_path):
    local = _encode(tmp_path / "local", "--workers", "2")
    assert local.returncode == 0, local.stderr
    on_ray = _encode(tmp_path / "ray", "--executor", "ray", "--address", ray_address)
    assert on_ray.returncode == 0, on_ray.stderr
    names = sorted(p.name for p in (tmp_path / "local").glob("*.hevc"))
    assert len(names) == len(list(SAMPLES.glob("*.png")))
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()

    def rows(folder: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "output"}
                for r in json.loads((tmp_path / folder / "manifest.json").read_text())]

    assert rows("ray") == rows("local")


def test_sweep_on_ray_gives_the_same_records_as_the_process_pool(ray_address, tmp_path):
    from prepcodec.codecs import CodecPool
    from prepcodec.eval.sweep import SweepConfig, run_sweep

    def sweep(name: str, pool) -> list:
        cfg = SweepConfig(data="samples", task="none", codec="hevc", levels=[30, 40], preset="fast", workers=2,
                          cache=tmp_path / f"{name}.sqlite")
        return run_sweep(cfg, tmp_path / name, pool=pool, progress=False).records

    with CodecPool(2) as local_pool:
        local = sweep("local", local_pool)
    with CodecPool(2, executor="ray") as ray_pool:  # joins the instance the fixture started
        assert ray_pool.roundtrip("hevc", [], 30) == []
        remote = sweep("ray", ray_pool)
    assert ray.is_initialized()  # a pool that joined an instance leaves it running
    assert [r.nbytes for r in remote] == [r.nbytes for r in local] and len(local) == 2 * 5
    assert [(r.image, r.level, r.psnr) for r in remote] == [(r.image, r.level, r.psnr) for r in local]


def test_unreachable_cluster_and_missing_ray_are_one_line_errors(tmp_path, monkeypatch):
    proc = _encode(tmp_path / "x", "--executor", "ray", "--address", "127.0.0.1:1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in proc.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    from prepcodec.codecs import CodecPool

    with pytest.raises(InputError, match="--address needs --executor ray"):
        CodecPool(2, address="127.0.0.1:1")
    with pytest.raises(InputError, match="unknown executor"):
        CodecPool(2, executor="dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(BackendUnavailable, match="pip install"):
        CodecPool(2, executor="ray")
