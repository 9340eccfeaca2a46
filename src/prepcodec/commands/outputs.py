"""Where a command's outputs go, decided and checked before any work starts.

Rules (`encode`, `decode`): OUT is a folder when the input is a folder, when OUT ends with a slash, or when it is
an existing folder; then each input `stem` becomes `OUT/stem.ext`, and two inputs that would land on the same file
(`a.jpg` and `a.png`) are refused. Otherwise OUT is one file: the extension is added when it has none and checked
when it has one. An output that would replace one of the inputs, or that exists and is not a regular file
(`/dev/null`), is refused, and the target folder is probed for writing up front, so a long encode never fails at
its last step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prepcodec.errors import InputError


def is_folder_target(out: str, from_folder: bool) -> bool:
    return from_folder or out.endswith(("/", os.sep)) or Path(out).is_dir()


def probe_folder(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written in it (InputError otherwise)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".prepcodec-probe-")
        os.close(fd)
        os.unlink(name)
    except FileExistsError:
        raise InputError(f"{folder}: exists and is not a folder") from None
    except NotADirectoryError:
        raise InputError(f"{folder}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise InputError(f"{folder}: cannot write there ({exc.strerror or exc})") from None


def plan_outputs(inputs: list[Path], out: str, from_folder: bool, extension: str,
                 accepts=lambda path: False) -> list[Path]:
    """One output path per input (see the module docstring); `accepts(path)` allows another known extension."""
    folder = is_folder_target(out, from_folder)
    root = Path(out)
    if folder:
        if root.exists() and not root.is_dir():
            raise InputError(f"{out}: exists and is not a folder")
        targets = [root / (p.stem + extension) for p in inputs]
        seen: dict[Path, Path] = {}
        for src, dst in zip(inputs, targets, strict=True):
            if dst in seen:
                raise InputError(f"{seen[dst].name} and {src.name} would both be written to {dst}; rename one")
            seen[dst] = src
    else:
        if len(inputs) != 1:
            raise InputError(f"{out}: {len(inputs)} inputs need an output folder")
        if root.exists() and not root.is_file():
            raise InputError(f"{root}: exists and is not a regular file")
        if not root.suffix:
            root = root.with_suffix(extension)
        elif root.suffix.lower() != extension and not accepts(root):
            raise InputError(f"{out}: extension {root.suffix} does not match the output format ({extension})")
        if root.exists() and not root.is_file():
            raise InputError(f"{root}: exists and is not a regular file")
        targets = [root]
    sources = {p.resolve() for p in inputs}
    for dst in targets:
        if dst.resolve() in sources:
            raise InputError(f"{dst}: would overwrite its input; choose another output")
    probe_folder(root if folder else root.parent)
    return targets


def check_output_file(path: Path) -> Path:
    """A file a command will write at its end: not a folder or device, its folder writable (checked now)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file")
    probe_folder(path.parent if str(path.parent) else Path("."))
    return path


def check_output_dir(path: Path) -> Path:
    """A folder a command will fill: not a file, creatable where it is (checked now, created by the writer)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder")
    parent = path if path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{path}: a part of this path is a file, not a folder")
    probe_folder(parent)
    return path
