"""One sweep per run folder: an exclusive lock while it runs, and no folder reused for a different sweep.

Two `prepcodec eval` processes writing the same `--out` would each finish and the last would silently win; a
folder reused for other settings would mix a new sweep's files with an old manifest. The lock (`flock` on
`<out>/.lock`, released by the kernel when the process dies, so a killed run never leaves the folder stuck) makes
the second process stop at once, and the identity check refuses a folder whose manifest describes another sweep.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prepcodec.errors import InputError

IDENTITY_KEYS = ("data", "limit", "task", "codec", "levels", "preset", "pre", "fidelity")


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two sweeps the same sweep (a rerun of the same one may reuse the folder)."""
    return {k: manifest.get(k) for k in IDENTITY_KEYS}


def check_same_run(out: Path, wanted: dict[str, Any]) -> None:
    """InputError when `out` already holds the manifest of a different sweep."""
    path = out / "manifest.json"
    if not path.is_file():
        return
    try:
        old = identity(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path} is not valid JSON; delete the folder or use another --out") from None
    diff = [k for k in IDENTITY_KEYS if old.get(k) != wanted.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {wanted.get(k)!r} now" for k in diff[:3])
        raise InputError(f"{out} holds a different sweep ({shown}); use another --out or delete that folder")


@contextmanager
def locked_run_dir(out: Path) -> Iterator[None]:
    """Hold `<out>/.lock` exclusively for the duration (InputError at once if another process holds it).

    A folder this call created is removed again when the sweep wrote nothing into it (it failed before any work).
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{out} is in use by another running sweep; wait for it or use another --out") from None
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [lock.name]:
            lock.unlink(missing_ok=True)
            out.rmdir()
        os.close(fd)
