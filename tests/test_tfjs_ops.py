"""TF op semantics of the TF.js converter against NumPy references written from TensorFlow's definitions.

Random tensors are fine here: the ops are content-independent. Odd sizes and stride 2 exercise TF's asymmetric
SAME padding (the extra pixel goes bottom/right), which a symmetric torch padding would get wrong.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prepcodec.errors import InputError
from prepcodec.tasks.tfjs import load_tfjs_model
from prepcodec.tasks.tfjs.graph import Node
from prepcodec.tasks.tfjs.ops import get_op
from prepcodec.tasks.tfjs.weights import decode_weight

RNG = np.random.default_rng(0)


def run(op: str, args, **attrs):
    node = Node("n", op, tuple(f"i{k}" for k in range(len(args))), (), attrs)
    tens = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a)) for a in args]
    out = get_op(op)(node, tens)
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.detach().numpy()


# ---- NumPy references ---------------------------------------------------------------------------------------


def tf_same(size, k, s, d=1):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def np_conv(x, w, stride, padding, dil=1, depthwise=False):
    """NHWC conv; w is HWIO (or HWCM for depthwise)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    if padding == "SAME":
        (t, b), (left, r) = tf_same(h, kh, stride, dil), tf_same(wd, kw, stride, dil)
    else:
        t = b = left = r = 0
    xp = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
    oh = (xp.shape[1] - ((kh - 1) * dil + 1)) // stride + 1
    ow = (xp.shape[2] - ((kw - 1) * dil + 1)) // stride + 1
    cout = c * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((n, oh, ow, cout), np.float64)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * stride, i * stride + (kh - 1) * dil + 1, dil)
            cols = slice(j * stride, j * stride + (kw - 1) * dil + 1, dil)
            patch = xp[:, rows, cols]
            if depthwise:
                out[:, i, j] = np.einsum("nhwc,hwcm->ncm", patch, w).reshape(n, -1)
            else:
                out[:, i, j] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def np_resize_bilinear(x, oh, ow, align, half):
    def coords(out, size):
        i = np.arange(out, dtype=np.float64)
        if align and out > 1:
            src = i * (size - 1) / (out - 1)
        elif half:
            src = (i + 0.5) * size / out - 0.5
        else:
            src = i * size / out
        lo = np.floor(src)
        return (np.clip(lo, 0, size - 1).astype(int), np.clip(np.ceil(src), 0, size - 1).astype(int), src - lo)

    y0, y1, fy = coords(oh, x.shape[1])
    x0, x1, fx = coords(ow, x.shape[2])
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def np_pool(x, k, s, padding, kind):
    n, h, w, c = x.shape
    t, left = (tf_same(h, k, s)[0], tf_same(w, k, s)[0]) if padding == "SAME" else (0, 0)
    oh, ow = (-(-h // s), -(-w // s)) if padding == "SAME" else ((h - k) // s + 1, (w - k) // s + 1)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - t, j * s - left
            win = x[:, max(r0, 0) : min(r0 + k, h), max(c0, 0) : min(c0 + k, w)]  # real pixels only
            out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


# ---- convolutions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,k,stride,padding,dil", [
    ((7, 9), 3, 2, "SAME", 1), ((8, 8), 3, 2, "SAME", 1), ((6, 5), 1, 1, "VALID", 1), ((9, 7), 3, 1, "SAME", 2),
    ((5, 6), 2, 2, "SAME", 1), ((7, 7), 3, 2, "VALID", 1),
])
def test_conv2d_matches_tf(size, k, stride, padding, dil):
    x = RNG.standard_normal((2, *size, 3)).astype(np.float32)
    w = RNG.standard_normal((k, k, 3, 4)).astype(np.float32)
    got = run("Conv2D", [x, w], strides=[1, stride, stride, 1], padding=padding, dilations=[1, dil, dil, 1])
    np.testing.assert_allclose(got, np_conv(x, w, stride, padding, dil), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mult,stride", [(1, 2), (2, 1)])
def test_depthwise_matches_tf(mult, stride):
    x = RNG.standard_normal((2, 7, 8, 3)).astype(np.float32)
    w = RNG.standard_normal((3, 3, 3, mult)).astype(np.float32)
    got = run("DepthwiseConv2dNative", [x, w], strides=[1, stride, stride, 1], padding="SAME")
    np.testing.assert_allclose(got, np_conv(x, w, stride, "SAME", depthwise=True), rtol=1e-4, atol=1e-4)


def test_explicit_padding():
    x = RNG.standard_normal((1, 5, 6, 2)).astype(np.float32)
    w = RNG.standard_normal((3, 3, 2, 2)).astype(np.float32)
    got = run("Conv2D", [x, w], strides=[1, 1, 1, 1], padding="EXPLICIT", explicit_paddings=[0, 0, 2, 0, 0, 1, 0, 0])
    ref = np_conv(np.pad(x, ((0, 0), (2, 0), (0, 1), (0, 0))), w, 1, "VALID")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fused,extra", [
    (["BiasAdd"], {}), (["BiasAdd", "Relu"], {}), (["BiasAdd", "Relu6"], {}),
    (["BiasAdd", "LeakyRelu"], {"leakyrelu_alpha": 0.1}), (["BiasAdd", "Elu"], {}),
])
def test_fused_conv(fused, extra):
    x = (3 * RNG.standard_normal((1, 6, 5, 3))).astype(np.float32)
    w = RNG.standard_normal((3, 3, 3, 4)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    ref = np_conv(x, w, 2, "SAME") + b
    act = fused[-1]
    if act == "Relu":
        ref = np.maximum(ref, 0)
    elif act == "Relu6":
        ref = np.clip(ref, 0, 6)
    elif act == "LeakyRelu":
        ref = np.where(ref > 0, ref, 0.1 * ref)
    elif act == "Elu":
        ref = np.where(ref > 0, ref, np.expm1(np.minimum(ref, 0)))
    got = run("_FusedConv2D", [x, w, b], strides=[1, 2, 2, 1], padding="SAME", fused_ops=fused, **extra)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    got_dw = run("FusedDepthwiseConv2dNative", [x, w[..., :1], b[:3]], strides=[1, 1, 1, 1], padding="SAME",
                 fused_ops=["BiasAdd"])
    np.testing.assert_allclose(got_dw, np_conv(x, w[..., :1], 1, "SAME", depthwise=True) + b[:3], rtol=1e-4,
                               atol=1e-4)


def test_fused_batchnorm():
    x = RNG.standard_normal((1, 5, 5, 2)).astype(np.float32)
    w = RNG.standard_normal((1, 1, 2, 3)).astype(np.float32)
    scale, offset, mean = (RNG.standard_normal(3).astype(np.float32) for _ in range(3))
    var = RNG.uniform(0.5, 2, 3).astype(np.float32)
    got = run("_FusedConv2D", [x, w, scale, offset, mean, var], strides=[1, 1, 1, 1], padding="VALID",
              fused_ops=["FusedBatchNorm", "Relu"], epsilon=1e-3)
    ref = np.maximum((np_conv(x, w, 1, "VALID") - mean) / np.sqrt(var + 1e-3) * scale + offset, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_hw,out_hw", [((4, 5), (8, 10)), ((5, 5), (9, 10))])
def test_conv2d_backprop_input_is_conv_adjoint(in_hw, out_hw):
    """Conv2DBackpropInput(sizes, w, y) is the gradient of SAME conv w.r.t. its input: <T(y), x> = <y, C(x)>."""
    w = torch.randn(3, 3, 2, 4)  # HW, out channels of the transpose (=conv input), in channels (=conv output)
    y = torch.randn(1, *in_hw, 4)
    x = torch.randn(1, *out_hw, 2, requires_grad=True)
    conv = get_op("Conv2D")(Node("c", "Conv2D", (), (), {"strides": [1, 2, 2, 1], "padding": "SAME"}), [x, w])
    assert conv.shape[1:3] == in_hw
    (grad,) = torch.autograd.grad((conv * y).sum(), x)
    node = Node("t", "Conv2DBackpropInput", (), (), {"strides": [1, 2, 2, 1], "padding": "SAME"})
    got = get_op("Conv2DBackpropInput")(node, [torch.tensor([1, *out_hw, 2]), w, y])
    torch.testing.assert_close(got, grad, rtol=1e-4, atol=1e-4)


# ---- pooling and resizing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,k,s,padding", [("max", 3, 2, "SAME"), ("avg", 3, 2, "SAME"), ("max", 3, 2, "VALID"),
                                              ("avg", 2, 2, "VALID"), ("max", 3, 1, "SAME")])
def test_pools(kind, k, s, padding):
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    got = run("MaxPool" if kind == "max" else "AvgPool", [x], ksize=[1, k, k, 1], strides=[1, s, s, 1],
              padding=padding)
    np.testing.assert_allclose(got, np_pool(x, k, s, padding, kind), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align,half", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("out", [(7, 9), (3, 2)])
def test_resize_bilinear_modes(align, half, out):
    x = RNG.standard_normal((2, 5, 4, 3)).astype(np.float32)
    got = run("ResizeBilinear", [x, np.array(out, np.int32)], align_corners=align, half_pixel_centers=half)
    np.testing.assert_allclose(got, np_resize_bilinear(x, *out, align, half), rtol=1e-5, atol=1e-5)


def test_resize_bilinear_agrees_with_torch_where_defined():
    x = torch.randn(1, 5, 4, 2)
    for align, half in ((True, False), (False, True)):
        got = torch.from_numpy(run("ResizeBilinear", [x, np.array([9, 7], np.int32)], align_corners=align,
                                   half_pixel_centers=half))
        ref = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), (9, 7), mode="bilinear", align_corners=align)
        torch.testing.assert_close(got, ref.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align,half", [(False, False), (True, False), (False, True)])
def test_resize_nearest_modes(align, half):
    x = np.arange(2 * 5 * 3).reshape(1, 5, 3, 2).astype(np.float32)
    got = run("ResizeNearestNeighbor", [x, np.array([8, 7], np.int32)], align_corners=align,
              half_pixel_centers=half)

    def idx(out, size):
        i = np.arange(out)
        if align:
            return np.clip(np.round(i * (size - 1) / (out - 1)), 0, size - 1).astype(int)
        return np.clip(np.floor((i + 0.5 * half) * size / out), 0, size - 1).astype(int)

    np.testing.assert_array_equal(got, x[:, idx(8, 5)][:, :, idx(7, 3)])


# ---- element-wise, shapes, reductions --------------------------------------------------------------------------


def test_elementwise_and_activations():
    a = RNG.standard_normal((2, 3, 4)).astype(np.float32) * 4
    b = RNG.standard_normal((4,)).astype(np.float32) + 5
    for op, ref in (("AddV2", a + b), ("Sub", a - b), ("Mul", a * b), ("RealDiv", a / b), ("Maximum", np.maximum(a, b)),
                    ("Minimum", np.minimum(a, b)), ("SquaredDifference", (a - b) ** 2)):
        np.testing.assert_allclose(run(op, [a, b]), ref, rtol=1e-5, atol=1e-5, err_msg=op)
    np.testing.assert_allclose(run("AddN", [a, a, a]), 3 * a, rtol=1e-6)
    for op, ref in (("Relu", np.maximum(a, 0)), ("Relu6", np.clip(a, 0, 6)), ("Sigmoid", 1 / (1 + np.exp(-a))),
                    ("Tanh", np.tanh(a))):
        np.testing.assert_allclose(run(op, [a]), ref, rtol=1e-5, atol=1e-6, err_msg=op)
    np.testing.assert_allclose(run("LeakyRelu", [a], alpha=0.1), np.where(a > 0, a, 0.1 * a), rtol=1e-6)
    ints_ = np.array([-7, 7, 9], np.int32)
    np.testing.assert_array_equal(run("FloorDiv", [ints_, np.int32(4)]), ints_ // 4)
    np.testing.assert_array_equal(run("FloorMod", [ints_, np.int32(4)]), ints_ % 4)


def test_shape_ops():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(run("Reshape", [x, np.array([2, -1, 5], np.int32)]), x.reshape(2, -1, 5))
    np.testing.assert_array_equal(run("Transpose", [x, np.array([0, 3, 1, 2], np.int32)]), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(run("ConcatV2", [x, x[..., :2], np.int32(-1)]),
                                  np.concatenate([x, x[..., :2]], -1))
    np.testing.assert_array_equal(run("ExpandDims", [x, np.int32(-1)]), x[..., None])
    np.testing.assert_array_equal(run("Squeeze", [x[:, :1]], squeeze_dims=[1]), x[:, 0])
    np.testing.assert_allclose(run("Mean", [x, np.array([1, 2], np.int32)], keep_dims=True),
                               x.mean((1, 2), keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(run("Sum", [x, np.array([-1], np.int32)]), x.sum(-1), rtol=1e-5)
    a, b = run("SplitV", [x, np.array([1, -1], np.int32), np.int32(3)])
    np.testing.assert_array_equal(a, x[..., :1])
    np.testing.assert_array_equal(b, x[..., 1:])
    np.testing.assert_array_equal(run("Pack", [x[0], x[1]], axis=1), np.stack([x[0], x[1]], 1))
    np.testing.assert_array_equal(run("Unpack", [x], axis=1)[2], x[:, 2])
    np.testing.assert_array_equal(run("ArgMax", [x, np.int32(3)]), x.argmax(3))
    np.testing.assert_array_equal(run("StridedSlice", [x, np.array([0, 1, 0], np.int32), np.array([0, 3, 4], np.int32),
                                                       np.array([1, 1, 2], np.int32)], begin_mask=1, end_mask=1,
                                      shrink_axis_mask=0), x[:, 1:3, 0:4:2])
    np.testing.assert_array_equal(run("StridedSlice", [x, np.array([1, 0], np.int32), np.array([2, 0], np.int32),
                                                       np.array([1, 1], np.int32)], end_mask=2, shrink_axis_mask=1),
                                  x[1, :])
    idx = np.array([[0, 2], [1, 0]], np.int32)
    np.testing.assert_array_equal(run("GatherNd", [x, idx]), x[[0, 1], [2, 0]])
    np.testing.assert_array_equal(run("GatherV2", [x, np.array([3, 0], np.int32), np.int32(2)]), x[:, :, [3, 0]])
    vals, ind = run("TopKV2", [x[0, 0, 0], np.int32(2)])
    np.testing.assert_array_equal(ind, np.argsort(-x[0, 0, 0])[:2])
    dense = run("SparseToDense", [np.array([[0], [2]], np.int64), np.array([4], np.int32), np.float32(5),
                                  np.float32(1)])
    np.testing.assert_array_equal(dense, [5, 1, 5, 1])


def test_pad_ops():
    x = RNG.standard_normal((1, 3, 4, 2)).astype(np.float32)
    p = np.array([[0, 0], [1, 2], [2, 1], [0, 0]], np.int32)
    np.testing.assert_array_equal(run("Pad", [x, p]), np.pad(x, p))
    np.testing.assert_array_equal(run("PadV2", [x, p, np.float32(-1)]), np.pad(x, p, constant_values=-1))
    np.testing.assert_array_equal(run("MirrorPad", [x, p], mode="REFLECT"), np.pad(x, p, mode="reflect"))


def test_cast_keeps_float_gradient_and_truncates_to_int():
    x = torch.tensor([1.7, -1.7], requires_grad=True)
    node = Node("c", "Cast", ("x",), (), {"DstT": "DT_FLOAT"})
    assert get_op("Cast")(node, [x]).requires_grad
    node = Node("c", "Cast", ("x",), (), {"DstT": "DT_INT32"})
    assert get_op("Cast")(node, [x.detach()]).tolist() == [1, -1]


def test_unsupported_op_is_named():
    with pytest.raises(InputError, match="NonMaxSuppressionV5"):
        get_op("NonMaxSuppressionV5")


# ---- weights and a whole tiny graph ------------------------------------------------------------------------------


def test_decode_quantised_weights():
    vals = np.array([0.5, -2.25, 3.0], np.float32)
    f16 = {"dtype": "float16", "original_dtype": "float32"}
    arr, used = decode_weight(vals.astype(np.float16).tobytes(), 0,
                              {"name": "w", "shape": [3], "dtype": "float32", "quantization": f16})
    np.testing.assert_array_equal(arr, vals)
    assert used == 6
    q = np.array([0, 128, 255], np.uint8)
    u8 = {"dtype": "uint8", "scale": 0.5, "min": -1.0}
    arr, used = decode_weight(b"xx" + q.tobytes(), 2,
                              {"name": "w", "shape": [1, 3], "dtype": "float32", "quantization": u8})
    np.testing.assert_allclose(arr, [[-1.0, 63.0, 126.5]])
    assert used == 3
    arr, _ = decode_weight(np.array([7, -3], np.int32).tobytes(), 0, {"name": "s", "shape": [2], "dtype": "int32"})
    assert arr.dtype == np.int32 and arr.tolist() == [7, -3]


def _write_tiny_model(folder, op="Relu"):
    w = RNG.standard_normal((3, 3, 3, 2)).astype(np.float32)
    b = RNG.standard_normal(2).astype(np.float32)
    shape = np.array([1, 2, 4, 2], np.int32)  # a folded-constant chain: Identity of a Const
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "w", "op": "Const", "attr": {}}, {"name": "b", "op": "Const", "attr": {}},
        {"name": "shape", "op": "Const", "attr": {}}, {"name": "shape_id", "op": "Identity", "input": ["shape"]},
        {"name": "conv", "op": "_FusedConv2D", "input": ["x", "w", "b", "^shape"], "attr": {
            "strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": {"s": "U0FNRQ=="},
            "fused_ops": {"list": {"s": ["Qmlhc0FkZA=="]}}, "num_args": {"i": "1"}}},
        {"name": "act", "op": op, "input": ["conv"]},
        {"name": "out", "op": "Reshape", "input": ["act", "shape_id"]},
    ]
    manifest = [{"paths": ["tiny.bin"], "weights": [
        {"name": "w", "shape": list(w.shape), "dtype": "float32",
         "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "b", "shape": [2], "dtype": "float32"},
        {"name": "shape", "shape": [4], "dtype": "int32"}]}]
    (folder / "tiny.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                                  "weightsManifest": manifest}))
    (folder / "tiny.bin").write_bytes(w.astype(np.float16).tobytes() + b.tobytes() + shape.tobytes())
    return w.astype(np.float16).astype(np.float32), b


def test_tiny_graph_end_to_end(tmp_path):
    w, b = _write_tiny_model(tmp_path)
    model = load_tfjs_model(tmp_path / "tiny.json", ["out"])
    x = RNG.standard_normal((1, 3, 7, 3)).astype(np.float32)
    (got,) = model(torch.from_numpy(x))
    ref = np.maximum(np_conv(x, w, 2, "SAME") + b, 0).reshape(1, 2, 4, 2)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-4)
    assert len(list(model.buffers())) == 2  # float constants are buffers; the int shape is folded metadata


def test_tiny_graph_unsupported_op_fails_at_build(tmp_path):
    _write_tiny_model(tmp_path, op="Erf")
    with pytest.raises(InputError, match="'Erf'"):
        load_tfjs_model(tmp_path / "tiny.json", ["out"])


def test_truncated_shard_is_an_input_error(tmp_path):
    _write_tiny_model(tmp_path)
    (tmp_path / "tiny.bin").write_bytes((tmp_path / "tiny.bin").read_bytes()[:20])
    with pytest.raises(InputError, match="truncated"):
        load_tfjs_model(tmp_path / "tiny.json", ["out"])

