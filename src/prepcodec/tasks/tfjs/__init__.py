"""A general TF.js graph-model -> torch converter (graph parsing, weight decoding, op set, executor)."""

from prepcodec.tasks.tfjs.graph import Graph, Node, load_graph
from prepcodec.tasks.tfjs.module import GraphModule, load_tfjs_model
from prepcodec.tasks.tfjs.weights import load_weights

__all__ = ["Graph", "GraphModule", "Node", "load_graph", "load_tfjs_model", "load_weights"]
