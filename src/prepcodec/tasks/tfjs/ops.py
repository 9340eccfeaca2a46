"""TensorFlow ops as torch functions, with TensorFlow semantics (layout NHWC unless `data_format` says NCHW).

Every op is `fn(node, args) -> Tensor | tuple[Tensor, ...]`, where `args` are the node's data inputs as
tensors. Tensors keep TensorFlow's layout, so Reshape/Transpose/Concat axes mean what the graph says; convs and
pools permute to NCHW views around the torch kernel (a permuted NHWC tensor is a channels-last NCHW tensor, so
this costs no copy). TF "SAME" padding is asymmetric (the extra pixel goes bottom/right) and is applied
explicitly. All float paths are differentiable; integer paths (shapes, indices) are plain tensor maths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from prepcodec.errors import InputError
from prepcodec.tasks.tfjs.graph import Node

OpFn = Callable[[Node, list[torch.Tensor]], "torch.Tensor | tuple[torch.Tensor, ...]"]
OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        for n in names:
            OPS[n] = fn
        return fn

    return deco


def get_op(name: str) -> OpFn:
    """The torch implementation of a TF op; InputError naming the op when it has none."""
    if name not in OPS:
        raise InputError(f"TF op {name!r} is not supported by the TF.js converter")
    return OPS[name]


def ints(t: torch.Tensor) -> list[int]:
    """A small integer tensor (shape, axes, paddings) as a Python list."""
    return [int(v) for v in t.reshape(-1).tolist()]


def _nchw(node: Node) -> bool:
    return node.attrs.get("data_format", "NHWC") == "NCHW"


def _to_nchw(x: torch.Tensor, nchw: bool) -> torch.Tensor:
    return x if nchw else x.permute(0, 3, 1, 2)


def _from_nchw(x: torch.Tensor, nchw: bool) -> torch.Tensor:
    return x if nchw else x.permute(0, 2, 3, 1)


def _spatial(vals: list[int], nchw: bool) -> tuple[int, int]:
    return (vals[2], vals[3]) if nchw else (vals[1], vals[2])


def same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TF SAME padding (before, after) for one dimension: output = ceil(size / s), extra pixel after."""
    eff = (k - 1) * d + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _padding(node: Node, x: torch.Tensor, ksize: tuple[int, int], strides, dil) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) for an NCHW tensor per the node's padding attr."""
    pad = node.attrs.get("padding", "VALID")
    if pad == "VALID":
        return 0, 0, 0, 0
    if pad == "SAME":
        t, b = same_pad(x.shape[2], ksize[0], strides[0], dil[0])
        left, r = same_pad(x.shape[3], ksize[1], strides[1], dil[1])
        return left, r, t, b
    if pad == "EXPLICIT":
        e = node.attrs.get("explicit_paddings", [])
        hh, ww = ((4, 6) if _nchw(node) else (2, 4))
        return e[ww], e[ww + 1], e[hh], e[hh + 1]
    raise InputError(f"{node.name}: unsupported padding {pad!r}")


def _conv(node: Node, x: torch.Tensor, w: torch.Tensor, depthwise: bool) -> torch.Tensor:
    nchw = _nchw(node)
    xs = _to_nchw(x, nchw)
    strides = _spatial(node.attrs.get("strides", [1, 1, 1, 1]), nchw)
    dil = _spatial(node.attrs.get("dilations", [1, 1, 1, 1]), nchw)
    kh, kw, cin, cm = w.shape
    if depthwise:  # HWCM -> (C*M, 1, H, W): TF output channel c*M+m == torch group c, member m
        weight, groups = w.permute(2, 3, 0, 1).reshape(cin * cm, 1, kh, kw), cin
    else:  # HWIO -> OIHW; grouped conv when the input has a multiple of the filter's in-channels
        weight, groups = w.permute(3, 2, 0, 1), xs.shape[1] // cin
    pads = _padding(node, xs, (kh, kw), strides, dil)
    if any(pads):
        xs = F.pad(xs, pads)
    y = F.conv2d(xs, weight.to(xs.dtype), None, strides, 0, dil, groups)
    return _from_nchw(y, nchw)


def _bias(node: Node, y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return y + (b.reshape(1, -1, 1, 1) if _nchw(node) else b)


def _activation(name: str, y: torch.Tensor, node: Node, extra: torch.Tensor | None = None) -> torch.Tensor:
    if name == "Relu":
        return F.relu(y)
    if name == "Relu6":
        return F.relu6(y)
    if name == "Elu":
        return F.elu(y)
    if name == "LeakyRelu":
        return F.leaky_relu(y, node.attrs.get("leakyrelu_alpha", node.attrs.get("alpha", 0.2)))
    if name == "Sigmoid":
        return torch.sigmoid(y)
    if name == "Tanh":
        return torch.tanh(y)
    if name == "Prelu" and extra is not None:
        return torch.where(y >= 0, y, y * extra)
    raise InputError(f"{node.name}: unsupported fused activation {name!r}")


def _fused(node: Node, args: list[torch.Tensor], depthwise: bool) -> torch.Tensor:
    """_FusedConv2D / FusedDepthwiseConv2dNative: conv, then BiasAdd or FusedBatchNorm, then an activation."""
    y = _conv(node, args[0], args[1], depthwise)
    fused = list(node.attrs.get("fused_ops", []))
    rest = args[2:]
    if fused and fused[0] == "BiasAdd":
        y, rest, fused = _bias(node, y, rest[0]), rest[1:], fused[1:]
    elif fused and fused[0] == "FusedBatchNorm":
        scale, offset, mean, var = rest[:4]
        eps = node.attrs.get("epsilon", 1e-3)
        mul = scale * torch.rsqrt(var + eps)
        y = _bias(node, y * (mul.reshape(1, -1, 1, 1) if _nchw(node) else mul), offset - mean * mul)
        rest, fused = rest[4:], fused[1:]
    for name in fused:
        y = _activation(name, y, node, rest[0] if rest else None)
    return y


@op("Conv2D")
def conv2d(node, args):
    return _conv(node, args[0], args[1], depthwise=False)


@op("DepthwiseConv2dNative")
def depthwise(node, args):
    return _conv(node, args[0], args[1], depthwise=True)


@op("_FusedConv2D")
def fused_conv(node, args):
    return _fused(node, args, depthwise=False)


@op("FusedDepthwiseConv2dNative")
def fused_depthwise(node, args):
    return _fused(node, args, depthwise=True)


@op("Conv2DBackpropInput")
def conv_transpose(node, args):
    """Transposed conv: crop the full output to `input_sizes` at TF's SAME offset (pad before = total // 2)."""
    sizes, w, x = ints(args[0]), args[1], args[2]
    nchw = _nchw(node)
    xs = _to_nchw(x, nchw)
    strides = _spatial(node.attrs.get("strides", [1, 1, 1, 1]), nchw)
    kh, kw = w.shape[0], w.shape[1]
    y = F.conv_transpose2d(xs, w.permute(3, 2, 0, 1).to(xs.dtype), None, strides)
    oh, ow = _spatial(sizes, nchw)
    if node.attrs.get("padding") == "SAME":
        top = max((xs.shape[2] - 1) * strides[0] + kh - oh, 0) // 2
        left = max((xs.shape[3] - 1) * strides[1] + kw - ow, 0) // 2
    else:
        top = left = 0
    y = F.pad(y, (0, max(left + ow - y.shape[3], 0), 0, max(top + oh - y.shape[2], 0)))
    return _from_nchw(y[:, :, top : top + oh, left : left + ow], nchw)


def _pool_args(node: Node) -> tuple[bool, tuple[int, int], tuple[int, int]]:
    nchw = _nchw(node)
    return nchw, _spatial(node.attrs["ksize"], nchw), _spatial(node.attrs["strides"], nchw)


@op("MaxPool")
def max_pool(node, args):
    nchw, k, s = _pool_args(node)
    xs = _to_nchw(args[0], nchw)
    pads = _padding(node, xs, k, s, (1, 1))
    if any(pads):
        xs = F.pad(xs, pads, value=float("-inf"))
    return _from_nchw(F.max_pool2d(xs, k, s), nchw)


@op("AvgPool")
def avg_pool(node, args):
    """TF AvgPool divides by the count of real (unpadded) pixels in each window."""
    nchw, k, s = _pool_args(node)
    xs = _to_nchw(args[0], nchw)
    pads = _padding(node, xs, k, s, (1, 1))
    if not any(pads):
        return _from_nchw(F.avg_pool2d(xs, k, s), nchw)
    total = F.avg_pool2d(F.pad(xs, pads), k, s, divisor_override=1)
    ones = F.pad(torch.ones_like(xs[:1, :1]), pads)
    count = F.avg_pool2d(ones, k, s, divisor_override=1)
    return _from_nchw(total / count, nchw)


# --- resize -------------------------------------------------------------------------------------------------


def _src_coords(out: int, size: int, align: bool, half: bool, device) -> torch.Tensor:
    i = torch.arange(out, device=device, dtype=torch.float32)
    if align and out > 1:
        return i * ((size - 1) / (out - 1))
    scale = size / out
    return (i + 0.5) * scale - 0.5 if half else i * scale


def _lerp_axis(x: torch.Tensor, axis: int, out: int, align: bool, half: bool) -> torch.Tensor:
    size = x.shape[axis]
    src = _src_coords(out, size, align, half, x.device)
    lo_f = torch.floor(src)
    frac = (src - lo_f).to(x.dtype)
    lo = lo_f.long().clamp(0, size - 1)
    hi = torch.ceil(src).long().clamp(0, size - 1)
    a, b = x.index_select(axis, lo), x.index_select(axis, hi)
    shape = [1] * x.dim()
    shape[axis] = out
    return a + (b - a) * frac.reshape(shape)


def resize_bilinear_tf(x: torch.Tensor, size: tuple[int, int], align: bool = False, half: bool = False):
    """TF ResizeBilinear on NHWC (all three coordinate modes: legacy, align_corners, half_pixel_centers)."""
    return _lerp_axis(_lerp_axis(x, 1, size[0], align, half), 2, size[1], align, half)


def _nearest_index(out: int, size: int, align: bool, half: bool, device) -> torch.Tensor:
    i = torch.arange(out, device=device, dtype=torch.float32)
    if align and out > 1:
        src = torch.round(i * ((size - 1) / (out - 1)))
    elif half:
        src = torch.floor((i + 0.5) * (size / out))
    else:
        src = torch.floor(i * (size / out))
    return src.long().clamp(0, size - 1)


@op("ResizeBilinear")
def resize_bilinear(node, args):
    h, w = ints(args[1])
    return resize_bilinear_tf(
        args[0], (h, w), node.attrs.get("align_corners", False), node.attrs.get("half_pixel_centers", False)
    )


@op("ResizeNearestNeighbor")
def resize_nearest(node, args):
    x, (h, w) = args[0], ints(args[1])
    align, half = node.attrs.get("align_corners", False), node.attrs.get("half_pixel_centers", False)
    x = x.index_select(1, _nearest_index(h, x.shape[1], align, half, x.device))
    return x.index_select(2, _nearest_index(w, x.shape[2], align, half, x.device))


# --- element-wise ---------------------------------------------------------------------------------------------


def _binary(fn):
    return lambda node, args: fn(args[0], args[1])


for _names, _fn in (
    (("Add", "AddV2", "BiasAdd"), torch.add),
    (("Sub",), torch.sub),
    (("Mul",), torch.mul),
    (("RealDiv", "Div"), torch.div),
    (("Maximum",), torch.maximum),
    (("Minimum",), torch.minimum),
    (("FloorDiv",), lambda a, b: torch.div(a, b, rounding_mode="floor")),
    (("FloorMod",), torch.remainder),
    (("SquaredDifference",), lambda a, b: (a - b) ** 2),
    (("Pow",), torch.pow),
    (("Equal",), torch.eq),
    (("Greater",), torch.gt),
    (("Less",), torch.lt),
):
    op(*_names)(_binary(_fn))

for _names, _fn in (
    (("Relu",), F.relu),
    (("Relu6",), F.relu6),
    (("Sigmoid",), torch.sigmoid),
    (("Tanh",), torch.tanh),
    (("Elu",), F.elu),
    (("Sqrt",), torch.sqrt),
    (("Rsqrt",), torch.rsqrt),
    (("Exp",), torch.exp),
    (("Neg",), torch.neg),
    (("Square",), torch.square),
    (("Abs",), torch.abs),
    (("Identity", "StopGradient", "Snapshot"), lambda x: x),
):
    op(*_names)(lambda node, args, _f=_fn: _f(args[0]))


@op("LeakyRelu")
def leaky_relu(node, args):
    return F.leaky_relu(args[0], node.attrs.get("alpha", 0.2))


@op("Prelu")
def prelu(node, args):
    return torch.where(args[0] >= 0, args[0], args[0] * args[1])


@op("AddN")
def add_n(node, args):
    out = args[0]
    for a in args[1:]:
        out = out + a
    return out


@op("Softmax")
def softmax(node, args):
    return torch.softmax(args[0], dim=-1)


_DTYPES = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32, "DT_INT64": torch.int64, "DT_BOOL": torch.bool}


@op("Cast")
def cast(node, args):
    dst = _DTYPES.get(node.attrs.get("DstT", "DT_FLOAT"))
    if dst is None:
        raise InputError(f"{node.name}: unsupported Cast target {node.attrs.get('DstT')}")
    x = args[0]
    if dst is torch.float32 and x.is_floating_point():
        return x  # keep the caller's float dtype (and the gradient)
    if not dst.is_floating_point and x.is_floating_point():
        x = torch.trunc(x)
    return x.to(dst)


# --- reductions and shapes -----------------------------------------------------------------------------------


def _axes(t: torch.Tensor, rank: int) -> list[int]:
    return [a % rank for a in ints(t)]


@op("Mean")
def mean(node, args):
    return args[0].mean(dim=_axes(args[1], args[0].dim()), keepdim=node.attrs.get("keep_dims", False))


@op("Sum")
def sum_(node, args):
    return args[0].sum(dim=_axes(args[1], args[0].dim()), keepdim=node.attrs.get("keep_dims", False))


@op("Max")
def max_(node, args):
    return args[0].amax(dim=_axes(args[1], args[0].dim()), keepdim=node.attrs.get("keep_dims", False))


@op("ArgMax")
def argmax(node, args):
    return args[0].argmax(dim=ints(args[1])[0] % args[0].dim()).to(torch.int32)


@op("ConcatV2")
def concat(node, args):
    *xs, axis = args
    ax = ints(axis)[0] % xs[0].dim()
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return torch.cat([x.to(dtype) for x in xs], dim=ax)


@op("Pack")
def pack(node, args):
    return torch.stack(args, dim=node.attrs.get("axis", 0) % (args[0].dim() + 1))


@op("Unpack")
def unpack(node, args):
    return tuple(torch.unbind(args[0], dim=node.attrs.get("axis", 0) % args[0].dim()))


@op("SplitV")
def split_v(node, args):
    x, sizes, axis = args[0], ints(args[1]), ints(args[2])[0] % args[0].dim()
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return tuple(torch.split(x, sizes, dim=axis))


@op("Split")
def split(node, args):
    axis, x = ints(args[0])[0] % args[1].dim(), args[1]
    return tuple(torch.chunk(x, node.attrs["num_split"], dim=axis))


@op("Reshape")
def reshape(node, args):
    return args[0].reshape(ints(args[1]))


@op("Transpose")
def transpose(node, args):
    return args[0].permute(ints(args[1]))


@op("Squeeze")
def squeeze(node, args):
    x = args[0]
    dims = node.attrs.get("squeeze_dims", [])
    if not dims:
        return x.squeeze()
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = x.squeeze(d)
    return x


@op("ExpandDims")
def expand_dims(node, args):
    return args[0].unsqueeze(ints(args[1])[0] % (args[0].dim() + 1))


@op("Shape")
def shape(node, args):
    return torch.tensor(list(args[0].shape), dtype=torch.int32)


@op("Fill")
def fill(node, args):
    return torch.full(ints(args[0]), args[1].item(), dtype=args[1].dtype, device=args[1].device)


@op("Pad", "PadV2", "MirrorPad")
def pad(node, args):
    x, p = args[0], ints(args[1])
    pairs = [(p[2 * i], p[2 * i + 1]) for i in range(x.dim())]
    flat = [v for pair in reversed(pairs) for v in pair]  # torch pads the last dim first
    if node.op == "MirrorPad":  # torch reflects only trailing dims: spatial pads of a 4-D NHWC tensor
        if x.dim() != 4 or any(pairs[0]) or any(pairs[3]):
            raise InputError(f"{node.name}: MirrorPad only on the H/W axes of a 4-D NHWC tensor")
        mode = "reflect" if node.attrs.get("mode", "REFLECT") == "REFLECT" else "replicate"
        if mode == "replicate" and max(p) > 1:
            raise InputError(f"{node.name}: MirrorPad SYMMETRIC wider than 1 is not supported")
        return F.pad(x.permute(0, 3, 1, 2), flat[2:6], mode=mode).permute(0, 2, 3, 1)
    value = args[2].item() if node.op == "PadV2" else 0.0
    return F.pad(x, flat, value=value)


@op("StridedSlice")
def strided_slice(node, args):
    x, begin, end, strides = args[0], ints(args[1]), ints(args[2]), ints(args[3])
    a = node.attrs
    if a.get("ellipsis_mask", 0) or a.get("new_axis_mask", 0):
        raise InputError(f"{node.name}: StridedSlice with ellipsis/new-axis masks is not supported")
    index: list = []
    for i in range(len(begin)):
        if a.get("shrink_axis_mask", 0) >> i & 1:
            index.append(begin[i])
            continue
        b = None if a.get("begin_mask", 0) >> i & 1 else begin[i]
        e = None if a.get("end_mask", 0) >> i & 1 else end[i]
        if strides[i] < 0:
            raise InputError(f"{node.name}: negative StridedSlice strides are not supported")
        index.append(slice(b, e, strides[i]))
    return x[tuple(index)]


@op("GatherV2")
def gather_v2(node, args):
    x, idx, axis = args[0], args[1], ints(args[2])[0] % args[0].dim()
    if node.attrs.get("batch_dims", 0):
        raise InputError(f"{node.name}: GatherV2 batch_dims is not supported")
    flat = x.index_select(axis, idx.reshape(-1).long().to(x.device))
    return flat.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


@op("GatherNd")
def gather_nd(node, args):
    x, idx = args[0], args[1].long().to(args[0].device)
    k = idx.shape[-1]
    return x[tuple(idx[..., i] for i in range(k))]


@op("TopKV2")
def top_k(node, args):
    values, indices = torch.topk(args[0], ints(args[1])[0], dim=-1, sorted=True)
    return values, indices.to(torch.int32)


@op("SparseToDense")
def sparse_to_dense(node, args):
    idx, shape_, values, default = args
    out = torch.full(ints(shape_), default.item(), dtype=values.dtype, device=values.device)
    if idx.numel() == 0:
        return out
    idx = idx.long().reshape(idx.shape[0], -1) if idx.dim() > 0 else idx.long().reshape(1, 1)
    vals = values.expand(idx.shape[0]) if values.dim() == 0 else values
    out[tuple(idx[:, i] for i in range(idx.shape[1]))] = vals
    return out


@op("FusedBatchNorm", "FusedBatchNormV3")
def fused_batch_norm(node, args):
    x, scale, offset, m, v = args[:5]
    mul = scale * torch.rsqrt(v + node.attrs.get("epsilon", 1e-3))
    if _nchw(node):
        return x * mul.reshape(1, -1, 1, 1) + (offset - m * mul).reshape(1, -1, 1, 1)
    return x * mul + (offset - m * mul)
