"""`prepcodec eval` / `prepcodec compare` end to end through the console script (real JPEG, real Lite0)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "prepcodec"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


@pytest.mark.slow  # ~15 s on an idle 2-core machine, minutes on a busy one; test_eval_sweep covers the same code
@pytest.mark.weights
def test_eval_then_compare_through_the_cli(tmp_path):
    sweep = ["eval", "--data", "samples", "--task", "effnet-lite0", "--codec", "jpeg", "--levels", "10,30,60,90",
             "--limit", "1", "--workers", "1", "--quiet"]
    first = _cli(*sweep, "--out", "runs/a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "4 encoded, 0 from cache" in first.stdout and "| level |" in first.stdout
    assert (tmp_path / "runs/cache.sqlite").is_file()  # the default cache location
    second = _cli(*sweep, "--out", "runs/b", cwd=tmp_path)
    assert second.returncode == 0 and "0 encoded, 4 from cache" in second.stdout
    manifest = json.loads((tmp_path / "runs/b/manifest.json").read_text())
    assert manifest["command"].startswith("prepcodec eval --data samples")

    cmp = _cli("compare", "runs/a", "runs/b", "--metric", "psnr", "--json", "--boot", "50", "--out", "cmp",
               cwd=tmp_path)
    assert cmp.returncode == 0, cmp.stderr
    rows = json.loads(cmp.stdout)
    assert [r["run"] for r in rows] == ["b"]
    assert rows[0]["bd_rate_pct"] == pytest.approx(0, abs=1e-9)
    assert {"run", "bd_rate_pct", "bd_rate_pchip_pct", "ci95_pct"} <= set(rows[0])
    for name in ("compare.md", "compare.json", "rd_psnr.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 100
    assert (tmp_path / "cmp/rd_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_user_errors_are_one_line(tmp_path):
    cases = [
        (["compare", "nowhere", "nowhere2"], "not a complete run directory"),
        (["eval", "--data", "samples", "--task", "effnet-lite0", "--codec", "jpeg", "--levels", "10,x",
          "--out", "r"], "--levels must be"),
        (["eval", "--data", "samples", "--task", "effnet-lite0", "--codec", "jpeg", "--levels", "10",
          "--pre", "npp:no-such-net", "--out", "r"], "no shipped NPP"),
    ]
    for args, message in cases:
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error:") and message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.weights
def test_kill_minus_9_at_random_points_then_resume_gives_identical_records(tmp_path):
    """A sweep killed with SIGKILL at seeded random moments, then rerun to the end, writes exactly the records of an
    uninterrupted sweep (the SQLite cache commits whole chunks; the run folder's lock dies with the process)."""
    import json
    import os
    import random
    import signal
    import time

    sweep = ["eval", "--data", "samples", "--task", "effnet-lite0", "--codec", "webp", "--levels", "10,40,70,95",
             "--batch", "1", "--workers", "1", "--quiet"]
    clean = _cli(*sweep, "--out", "runs/clean", "--cache", "clean.sqlite", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([str(BIN), *sweep, "--out", "runs/killed", "--cache", "killed.sqlite"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 6.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    rest = _cli(*sweep, "--out", "runs/killed", "--cache", "killed.sqlite", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    a = json.loads((tmp_path / "runs/clean/records.json").read_text())
    b = json.loads((tmp_path / "runs/killed/records.json").read_text())
    assert a == b
