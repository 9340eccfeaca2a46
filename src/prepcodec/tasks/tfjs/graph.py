"""Parse a TF.js graph-model `model.json`: nodes, their inputs and attributes, and the weights manifest.

The JSON holds a TensorFlow GraphDef in proto-JSON form. Attribute values are tagged unions (`i`, `f`, `b`,
`s` (base64), `type`, `shape`, `list`, `tensor`); `Node.attrs` unwraps them into plain Python values so the
op implementations never see the encoding.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prepcodec.errors import InputError


@dataclass(frozen=True)
class Node:
    """One GraphDef node; `inputs` are data inputs as `name` or `name:k`, `control` the `^name` dependencies."""

    name: str
    op: str
    inputs: tuple[str, ...]
    control: tuple[str, ...]
    attrs: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class Graph:
    """A parsed graph model: nodes by name (file order), signature, and the weights manifest."""

    nodes: dict[str, Node]
    manifest: list[dict]
    signature: dict
    path: Path

    @property
    def op_set(self) -> set[str]:
        return {n.op for n in self.nodes.values()}

    def placeholders(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.op == "Placeholder"]


def split_ref(ref: str) -> tuple[str, int]:
    """'node:1' -> ('node', 1); 'node' -> ('node', 0)."""
    name, sep, idx = ref.rpartition(":")
    if sep and idx.isdigit():
        return name, int(idx)
    return ref, 0


def _decode_attr(value: dict) -> Any:
    if "list" in value:
        lst = value["list"]
        if not lst:
            return []
        for key in ("i", "f", "b", "s", "type", "shape"):
            if key in lst:
                return [_decode_scalar(key, v) for v in lst[key]]
        return []
    for key, v in value.items():
        return _decode_scalar(key, v)
    return None


def _decode_scalar(key: str, v: Any) -> Any:
    if key == "i":
        return int(v)
    if key == "f":
        return float(v)
    if key == "b":
        return bool(v)
    if key == "s":
        return base64.b64decode(v).decode("utf-8", "replace")
    if key == "shape":
        return [int(d.get("size", -1)) for d in v.get("dim", [])]
    return v  # type (e.g. "DT_FLOAT") and tensor stay as they are


def load_graph(path: str | Path) -> Graph:
    """Read a graph-model JSON; InputError when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        raw_nodes = doc["modelTopology"]["node"]
        manifest = doc["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a TF.js graph model ({exc})") from exc
    nodes: dict[str, Node] = {}
    for raw in raw_nodes:
        ins = raw.get("input", [])
        nodes[raw["name"]] = Node(
            name=raw["name"],
            op=raw["op"],
            inputs=tuple(i for i in ins if not i.startswith("^")),
            control=tuple(i[1:] for i in ins if i.startswith("^")),
            attrs={k: _decode_attr(v) for k, v in raw.get("attr", {}).items()},
        )
    return Graph(nodes=nodes, manifest=manifest, signature=doc.get("signature", {}), path=path)
