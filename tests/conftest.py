"""Shared test helpers: the bundled sample photos and the ../shared/data skip rule.

Tests marked `@pytest.mark.shared_data` are skipped (not failed) when the shared data folder is absent; it is
`$PREPCODEC_SHARED_DATA`, else `../shared/data` next to the repository.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread: on a 2-core machine two threads spin against the codec pool's worker processes and other
# jobs (measured 5-18x slower model calls under load); results do not depend on the thread count.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = ROOT / "src" / "prepcodec" / "data" / "samples"


def shared_data_root() -> Path:
    """Where the shared evaluation data is expected (it may not exist)."""
    env = os.environ.get("PREPCODEC_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@functools.cache
def _load_sample(name: str) -> np.ndarray:
    from prepcodec.data.images import load_image

    path = SAMPLES_DIR / (name if "." in name else f"{name}.png")
    return load_image(path)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") and not shared_data_root().is_dir():
        pytest.skip(f"shared data folder {shared_data_root()} is absent")


@pytest.fixture(scope="session")
def sample_image():
    """Loader for a bundled photo by name ("astronaut", "chelsea", "coffee", "kodim04", "kodim23"): RGB uint8.

    Arrays are cached for the session and shared between tests, so they are read-only: copy before modifying.
    """
    def load(name: str) -> np.ndarray:
        a = _load_sample(name)
        a.setflags(write=False)
        return a

    return load


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is absent")
    return root


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 300 KB tmpfs (needs root and mount rights; skipped where the sandbox forbids mounting)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()[:100]}")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(*ARGS)` runs `prepcodec ARGS` through the real entry point in this process: (exit code, stdout, stderr)."""
    from prepcodec.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["prepcodec", *args])
        try:
            main()
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run
