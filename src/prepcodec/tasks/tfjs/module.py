"""Execute a TF.js graph as a torch.nn.Module: the sub-graph between chosen inputs and outputs, in topological order.

Why a generic executor rather than hand-written architectures: one converter covers all four shipped graphs
(and their post-processing sub-graphs, for cross-checks), and any change in a graph shows up as a clear
"unsupported op" error instead of silently wrong weights. Float constants become buffers (they follow
`.to(device)`); integer constants (shapes, axes, paddings) stay on the CPU as metadata. Sub-graphs that
depend only on constants are folded once at build time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prepcodec.errors import InputError
from prepcodec.tasks.tfjs.graph import Graph, Node, load_graph, split_ref
from prepcodec.tasks.tfjs.ops import get_op
from prepcodec.tasks.tfjs.weights import load_weights


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.float() if t.is_floating_point() else t


class GraphModule(nn.Module):
    """Runs `outputs` of a graph from `inputs` (default: its placeholders); forward returns a tuple of tensors.

    Inputs and outputs keep the graph's own layout (NHWC for TF-converted graphs).
    """

    def __init__(
        self,
        graph: Graph,
        weights: dict[str, np.ndarray],
        outputs: Sequence[str],
        inputs: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.input_names = list(inputs) if inputs else graph.placeholders()
        self.output_names = list(outputs)
        for ref in self.input_names + self.output_names:
            if split_ref(ref)[0] not in graph.nodes:
                raise InputError(f"{graph.path.name}: no node {ref!r}")
        feeds = {split_ref(r)[0] for r in self.input_names}
        order = self._topo_order(graph, [split_ref(r)[0] for r in self.output_names], feeds)
        consts: dict[str, torch.Tensor] = {}
        self._steps: list[tuple[Node, object]] = []
        for node in order:
            if node.name in feeds:
                continue
            if node.op == "Const":
                if node.name not in weights:
                    raise InputError(f"{graph.path.name}: constant {node.name} has no weight data")
                consts[node.name] = _as_tensor(weights[node.name])
                continue
            fn = get_op(node.op)  # unsupported op -> InputError naming it, at build time
            if node.inputs and all(split_ref(i)[0] in consts for i in node.inputs):
                with torch.no_grad():  # constant folding
                    val = fn(node, [self._pick(consts, i) for i in node.inputs])
                consts[node.name] = val if isinstance(val, tuple) else val.contiguous()
                continue
            self._steps.append((node, fn))
        # only constants used by the remaining steps are kept; floats as buffers so they follow .to(device)
        used = {split_ref(i)[0] for node, _ in self._steps for i in node.inputs} | {
            split_ref(r)[0] for r in self.output_names
        }
        self._buffer_of: dict[str, str] = {}
        self._meta: dict[str, torch.Tensor | tuple] = {}
        for name in sorted(used & consts.keys()):
            val = consts[name]
            if isinstance(val, torch.Tensor) and val.is_floating_point():
                attr = f"c{len(self._buffer_of)}"
                self.register_buffer(attr, val, persistent=True)
                self._buffer_of[name] = attr
            else:
                self._meta[name] = val
        self.op_set = sorted({n.op for n in order})

    @staticmethod
    def _topo_order(graph: Graph, targets: list[str], stop: set[str]) -> list[Node]:
        """Post-order DFS from the targets, not descending past the feed nodes (iterative: graphs are deep)."""
        seen: set[str] = set()
        order: list[Node] = []
        stack: list[tuple[str, bool]] = [(t, False) for t in reversed(targets)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(graph.nodes[name])
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            if name in stop:
                continue
            node = graph.nodes.get(name)
            if node is None:
                raise InputError(f"{graph.path.name}: dangling input {name!r}")
            for ref in reversed(node.inputs):
                dep = split_ref(ref)[0]
                if dep not in seen:
                    stack.append((dep, False))
        return order

    @staticmethod
    def _pick(env: dict, ref: str) -> torch.Tensor:
        name, idx = split_ref(ref)
        val = env[name]
        return val[idx] if isinstance(val, tuple) else val

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise InputError(f"graph expects {len(self.input_names)} inputs ({self.input_names}), got {len(inputs)}")
        env: dict[str, torch.Tensor | tuple] = dict(self._meta)
        for name, attr in self._buffer_of.items():
            env[name] = getattr(self, attr)
        for ref, x in zip(self.input_names, inputs, strict=True):
            env[split_ref(ref)[0]] = x
        for node, fn in self._steps:
            env[node.name] = fn(node, [self._pick(env, i) for i in node.inputs])
        return tuple(self._pick(env, r) for r in self.output_names)


def load_tfjs_model(
    json_path: str | Path, outputs: Sequence[str], inputs: Sequence[str] | None = None
) -> GraphModule:
    """Build a frozen (eval, no parameter gradients) GraphModule from a graph-model JSON and its shards."""
    graph = load_graph(json_path)
    module = GraphModule(graph, load_weights(graph.manifest, graph.path.parent), outputs, inputs)
    module.eval()
    for buf in module.buffers():
        buf.requires_grad_(False)
    return module
