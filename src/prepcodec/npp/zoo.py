"""Shipped NPP weights by name (`cls`, `det`) and exported ones by path, loaded without running code.

`npp/weights/<name>.pt` is a float32 state dict read with `torch.load(weights_only=True)`; `<name>.json` next to it
holds {"format": "prepcodec-npp", "version": 1, "config": NPPConfig, "training": summary}. Like CompressAI's zoo,
one name resolves to weights plus metadata; the content hash of the weights keys every cached result, so a
retrained network is never served an older network's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from prepcodec.atomic import write_text
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.filehash import file_sha256
from prepcodec.npp.model import NPP, NPPConfig
from prepcodec.safe_load import safe_torch_load
from prepcodec.train.checkpoint import atomic_torch_save

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "prepcodec-npp"
VERSION = 1


@dataclass
class LoadedNPP:
    """A network ready to run, with what it is: its name or path, the hash of its weights and its metadata."""

    model: NPP
    name: str
    sha256: str
    meta: dict

    @property
    def config_digest(self) -> str:
        """sha256 of the canonical JSON of the network's config: what its output depends on besides the weights
        (`npp steps` writes the same weights with another ascent length), so the result cache keys both."""
        text = json.dumps(asdict(self.model.config), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def list_npps(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names of the shipped networks."""
    return sorted(p.stem for p in weights_dir.glob("*.pt") if p.with_suffix(".json").exists())


def export_npp(model: NPP, path: str | os.PathLike, training: dict | None = None) -> Path:
    """Write the state dict (`path`, .pt) and its JSON (config + training summary) atomically."""
    path = Path(path)
    if path.suffix != ".pt":
        raise InputError(f"NPP weights are written as .pt, got {path}")
    atomic_torch_save({k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}, path)
    meta = {"format": FORMAT, "version": VERSION, "config": asdict(model.config), "training": training or {}}
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str) + "\n")
    return path


def resolve(spec: str) -> Path:
    """The .pt a spec names: a shipped name (`cls`, also written as in `--pre`: `npp:cls`) or a path to an exported
    .pt (its .json beside it)."""
    spec = str(spec).strip()
    spec = spec[4:] if spec.lower().startswith("npp:") else spec
    if spec.endswith(".pt") or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputError(f"NPP weights {path} not found")
        if not path.is_file():
            raise InputError(f"NPP weights {path} is not a file (give an exported .pt)")
        return path
    path = WEIGHTS_DIR / f"{spec}.pt"
    if not path.exists():
        shipped = ", ".join(list_npps()) or "none yet"
        raise WeightsMissing(f"no shipped NPP called {spec!r} (shipped: {shipped}); or give a path to an exported .pt")
    return path


def _read_meta(path: Path) -> dict:
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        raise InputError(f"{path}: its metadata {meta_path.name} is missing (export NPPs with `prepcodec train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{meta_path} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a prepcodec NPP (its JSON lacks format={FORMAT!r})")
    if meta.get("version") != VERSION:
        raise InputError(f"{path} is NPP format version {meta.get('version')}; this prepcodec reads {VERSION}")
    return meta


def load_npp(spec: str, device: str = "cpu") -> LoadedNPP:
    """An NPP in eval mode from a shipped name or an exported .pt; one-line errors for anything else."""
    path = resolve(spec)
    meta = _read_meta(path)
    model = NPP(NPPConfig.from_dict(meta["config"]))
    state = safe_torch_load(path, "NPP weights")
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match its config ({str(exc).splitlines()[0][:160]})") from None
    name = str(spec) if path.parent == WEIGHTS_DIR else str(path)
    return LoadedNPP(model.to(device).eval(), name, file_sha256(path), meta)
