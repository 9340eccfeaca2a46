"""Property-based fuzzing of every entry that reads bytes a user can hand us.

Each decoder gets real streams of a real photo, mutated by hypothesis (bytes replaced, flipped, inserted, cut):
the answer is a picture within the documented limits or a `PrepcodecError` (one line in the CLI), never another
exception, a hang or a crash. The default suite runs a few examples per entry; `make fuzz` runs many
(`PREPCODEC_FUZZ_EXAMPLES`, documented in docs/reliability.md).
"""

from __future__ import annotations

import functools
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from prepcodec.codecs import get_codec, list_codecs
from prepcodec.codecs.base import MAX_PIXELS, MAX_SIDE
from prepcodec.data.samples import sample_paths
from prepcodec.errors import PrepcodecError

EXAMPLES = int(os.environ.get("PREPCODEC_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 12,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def photo() -> np.ndarray:
    rgb = np.asarray(Image.open(next(p for p in sample_paths() if p.stem == "chelsea")).convert("RGB"))
    return np.ascontiguousarray(rgb[40:88, 60:124])  # 48x64, real content


@functools.cache
def stream(codec: str) -> bytes:
    c = get_codec(codec)
    level = c.from_hevc_qp(34)
    return c.encode(photo(), level, "fast")


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """A real stream with a few edits: replaced, flipped, inserted or removed bytes, or a cut."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "flip", "insert", "delete", "truncate"]))
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        if kind == "replace":
            buf[i] = draw(st.integers(0, 255))
        elif kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buf[i : i + draw(st.integers(1, 16))]
        else:
            del buf[i:]
    return bytes(buf)


def _decoded_or_clean_error(codec: str, data: bytes) -> None:
    try:
        out = get_codec(codec).decode(data)
    except PrepcodecError:
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    h, w = out.shape[:2]
    assert 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS


@pytest.mark.parametrize("codec", list_codecs())
def test_decoders_survive_mutated_real_streams(codec):
    ok, why = get_codec(codec).availability()
    if not ok:
        pytest.skip(why)
    data = stream(codec)

    @FUZZ
    @given(mutated(data))
    def check(blob: bytes) -> None:
        _decoded_or_clean_error(codec, blob)

    check()


@pytest.mark.parametrize("codec", list_codecs())
def test_decoders_survive_arbitrary_bytes(codec):
    @FUZZ
    @given(st.binary(max_size=512))
    def check(blob: bytes) -> None:
        _decoded_or_clean_error(codec, blob)

    check()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_loader_survives_mutated_files(tmp_path_factory, fmt):
    from prepcodec.data.images import load_image

    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, fmt)
    folder = tmp_path_factory.mktemp(f"fuzz-{fmt}")

    @FUZZ
    @given(mutated(buf.getvalue()))
    def check(blob: bytes) -> None:
        path = folder / f"x.{fmt.lower()}"
        path.write_bytes(blob)
        try:
            out = load_image(path)
        except PrepcodecError:
            return
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3

    check()


def test_npp_weight_loader_survives_mutated_files(tmp_path_factory):
    from prepcodec.npp.model import create_npp
    from prepcodec.npp.zoo import export_npp, load_npp

    folder = tmp_path_factory.mktemp("fuzz-npp")
    good = export_npp(create_npp("small-full"), folder / "good.pt")
    meta = good.with_suffix(".json").read_text()
    weights = good.read_bytes()

    def load(pt: bytes, js: str) -> None:
        """Write a weights/metadata pair and load it: a network or a PrepcodecError, nothing else."""
        path = folder / "m.pt"
        path.write_bytes(pt)
        path.with_suffix(".json").write_text(js)
        try:
            load_npp(str(path))
        except PrepcodecError:
            pass

    @FUZZ
    @given(mutated(weights))
    def check(blob: bytes) -> None:
        load(blob, meta)

    check()

    @FUZZ
    @given(st.text(max_size=200))
    def check_meta(text: str) -> None:
        load(weights, text)

    check_meta()
    json.loads(meta)  # the unmutated metadata itself is valid


def test_onnx_npp_loader_survives_mutated_files(tmp_path_factory):
    """A real prepcodec ONNX export with a few bytes changed: an OnnxNPP or a PrepcodecError, nothing else."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from prepcodec.export.onnx_export import export_onnx
    from prepcodec.export.onnx_npp import OnnxNPP
    from prepcodec.npp.model import create_npp
    from prepcodec.npp.zoo import export_npp

    folder = tmp_path_factory.mktemp("fuzz-onnx")
    weights = export_npp(create_npp("small"), folder / "good.pt")
    x = np.ascontiguousarray(np.tile(photo(), (2, 2, 1)))  # 96x128: above the ONNX runner's 64 px minimum
    export_onnx(str(weights), folder / "good.onnx", [x])
    good = (folder / "good.onnx").read_bytes()

    @FUZZ
    @given(mutated(good))
    def check(blob: bytes) -> None:
        path = folder / "m.onnx"
        path.write_bytes(blob)
        try:
            out = OnnxNPP(path)(x, 34.0)
        except PrepcodecError:
            return
        except Exception as exc:  # onnxruntime may accept a damaged graph and fail at run time: say which
            raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from None
        assert out.shape == x.shape and out.dtype == np.uint8

    check()


# pieces of real arguments and junk, so the parsers see near-valid text, not only noise
ARG_PIECES = [*"0123456789.,:-+e[]_ |/", "nan", "inf", "npp:", "roi:", "blur:", "flat:", "bilateral:", "none",
              "imagenet-eval", "coco-val", "fsim", "lpips", "\x00"]
ARG_TEXT = st.lists(st.sampled_from(ARG_PIECES), max_size=12).map("".join)


def test_cli_argument_parsers_accept_or_refuse_in_one_line():
    """--levels, --fidelity, --pre, --val-qps and --data text: a valid value or a PrepcodecError, nothing else."""
    from prepcodec.commands.train_cmd import _ints
    from prepcodec.data.datasets import get_dataset
    from prepcodec.eval.sweep import parse_fidelity, parse_levels
    from prepcodec.npp.preprocessors import parse_pre

    parsers = (parse_levels, parse_fidelity, lambda t: parse_pre(t), lambda t: _ints(t, "--val-qps"),
               get_dataset)

    @FUZZ
    @given(st.sampled_from(range(len(parsers))), ARG_TEXT)
    def check(which: int, text: str) -> None:
        try:
            out = parsers[which](text)
        except PrepcodecError:
            return
        if which == 0:
            assert out and all(v == v and abs(v) != float("inf") for v in out), out  # finite numbers only

    check()
