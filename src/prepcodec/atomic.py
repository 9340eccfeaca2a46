"""Atomic file writes: every output prepcodec writes appears whole or not at all.

A reader (or a killed run) never sees a half-written file: data goes to a temporary name in the same folder, which
is renamed over the target only once complete. Files get the usual permissions (0666 minus the umask), not the
0600 that `mkstemp` would leave.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prepcodec.errors import OutputError

# the write itself failed for lack of room or rights: the user's to fix, said in one line
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    `suffix` (default: the target's) matters for writers that pick a format from the extension (savefig, np.savez).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write there ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        raise OutputError(f"{target}: cannot write ({exc.strerror}); nothing half-written was left, "
                          f"{'the previous file is unchanged' if target.exists() else 'no file was created'}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (newlines as given)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)
