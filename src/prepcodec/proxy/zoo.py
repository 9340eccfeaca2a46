"""Shipped proxy weights: half-precision state dicts in `proxy/weights/` with a JSON of config + training summary.

`<codec>-<size>.pt` loads with `torch.load(weights_only=True)`; `<codec>-<size>.json` holds {"config": ...,
"training": ...}. `load_proxy("jpeg-analytic")` returns the analytic JPEG proxy (fitted rate model, no network).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from prepcodec.atomic import write_text
from prepcodec.errors import InputError, WeightsMissing
from prepcodec.proxy.models import ProxyCodec, ProxyConfig, build_proxy
from prepcodec.safe_load import safe_torch_load
from prepcodec.train.checkpoint import atomic_torch_save

WEIGHTS_DIR = Path(__file__).parent / "weights"
ANALYTIC = "jpeg-analytic"
# the proxy to train through for each codec: the one with the best measured fidelity (docs/proxy.md)
DEFAULT_PROXY = {"hevc": "hevc-dct", "jpeg": ANALYTIC}


def default_proxy_name(codec: str) -> str:
    """The shipped proxy used for `codec` when none is named; InputError if there is none for it."""
    if codec in DEFAULT_PROXY:
        return DEFAULT_PROXY[codec]
    shipped = [n for n in list_proxies() if n.startswith(f"{codec}-")]
    if not shipped:
        raise InputError(f"no shipped proxy imitates {codec!r}; train one with `prepcodec proxy train --codec {codec}`")
    return shipped[0]


def list_proxies(weights_dir: Path = WEIGHTS_DIR) -> list[str]:
    """Names of the shipped learned proxies (e.g. 'hevc-small') plus the analytic JPEG proxy."""
    return sorted(p.stem for p in weights_dir.glob("*.pt")) + [ANALYTIC]


def export_weights(model: ProxyCodec, path: str | os.PathLike, training: dict | None = None) -> Path:
    """Write the fp16 state dict to `path` (.pt) and config + training summary next to it (.json), atomically."""
    path = Path(path)
    params = {name for name, _ in model.named_parameters()}
    # parameters in fp16 (size); buffers (e.g. the 1e-9 likelihood bound, which fp16 flushes to 0) stay as they are
    state = {k: v.detach().to("cpu", torch.float16) if k in params else v.detach().cpu()
             for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)
    meta = path.with_suffix(".json")
    write_text(meta, json.dumps({"config": model.config.to_dict(), "training": training or {}}, indent=2) + "\n")
    return path


def weights_path(spec: str | os.PathLike) -> Path:
    """The .pt a learned-proxy spec names: an exported path as it is, a shipped name under `WEIGHTS_DIR`."""
    return Path(spec) if str(spec).endswith(".pt") else WEIGHTS_DIR / f"{spec}.pt"


def load_weights(path: str | os.PathLike, device: str = "cpu") -> ProxyCodec:
    """A learned proxy from an exported .pt + .json pair, in eval mode and float32."""
    path = Path(path)
    if not path.exists() or not path.with_suffix(".json").exists():
        raise WeightsMissing(f"proxy weights {path} (and its .json) not found; train them with `prepcodec proxy train`")
    meta = json.loads(path.with_suffix(".json").read_text())
    model = build_proxy(ProxyConfig(**meta["config"]))
    state = safe_torch_load(path, "proxy weights")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()


def load_proxy(name: str = DEFAULT_PROXY["hevc"], device: str = "cpu") -> nn.Module:
    """A shipped proxy by name (see `list_proxies`); InputError for an unknown name."""
    if name == ANALYTIC:
        from prepcodec.proxy.jpeg import JpegProxy

        return JpegProxy().to(device).eval()
    path = weights_path(name)
    if not path.exists():
        raise InputError(f"unknown proxy {name!r}; shipped: {', '.join(list_proxies())}")
    return load_weights(path, device)


def load_learned(spec: str | os.PathLike, device: str = "cpu") -> ProxyCodec:
    """A learned proxy from a shipped name (e.g. 'hevc-small') or an exported .pt path (its .json next to it)."""
    spec = str(spec)
    if spec == ANALYTIC:
        raise InputError(f"{ANALYTIC} has no network weights; name a learned proxy or an exported .pt")
    if spec.endswith(".pt"):
        return load_weights(spec, device)
    return load_proxy(spec, device)  # type: ignore[return-value]  # a learned name gives a ProxyCodec
