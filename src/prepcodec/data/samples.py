"""The bundled sample photos (credited in NOTICE): the fallback data for the demo and tests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from prepcodec.data.images import is_image_path


def sample_paths() -> list[Path]:
    """Paths of the bundled photos, sorted by name (they ship inside the package as real files)."""
    root = resources.files("prepcodec.data") / "samples"
    return sorted(Path(str(p)) for p in root.iterdir() if p.is_file() and is_image_path(p.name))
