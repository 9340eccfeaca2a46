"""The product's main job shown on a few photos: plain coding vs the NPP, at the same QP and at equal bits.

For each photo: the plain stream at the QP, the NPP's stream at the same QP (fewer bits, the claim), and the NPP's
stream at the best level whose bits do not exceed the plain stream's (equal bits: what the accuracy becomes). Each
decoded picture gets the classifier's top-5 and the detector's boxes, so a reader sees what the network removed and
whether the machine still sees the same things. Everything is real: real encoders, real bytes, real decoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prepcodec.codecs.base import Codec


@dataclass
class Variant:
    """One way of coding one photo."""

    label: str
    level: int
    nbytes: int
    bpp: float
    encoded_input: np.ndarray  # what the encoder saw (the photo, or the NPP's output)
    decoded: np.ndarray
    top5: list[dict[str, Any]] = field(default_factory=list)
    boxes: dict[str, Any] | None = None  # the detector's prediction (raw, for drawing)
    n_boxes: int = 0
    network: str = ""  # the NPP that made the encoder's input ("" for plain)

    @property
    def boxes_label(self) -> str:
        """"1 box", "3 boxes": the detector's drawn detections, as the pictures and the report caption them."""
        return f"{self.n_boxes} box{'' if self.n_boxes == 1 else 'es'}"


@dataclass
class ShowcasePhoto:
    name: str
    original: np.ndarray
    variants: list[Variant]
    original_top5: list[dict[str, Any]] = field(default_factory=list)


def removed_information(original: np.ndarray, processed: np.ndarray, gain: float) -> np.ndarray:
    """|x − x̄| × gain, clipped, as uint8 RGB: what the network took away, made visible."""
    diff = np.abs(original.astype(np.float32) - processed.astype(np.float32)) * gain
    return np.clip(diff, 0, 255).astype(np.uint8)


def _variant(codec: Codec, label: str, level: int, encoded_input: np.ndarray, data: bytes,
             network: str = "") -> Variant:
    h, w = encoded_input.shape[:2]
    return Variant(label, int(level), len(data), 8 * len(data) / (h * w), encoded_input, codec.decode(data),
                   network=network)


def _npp_variants(codec: Codec, rgb: np.ndarray, qp_level: int, pre, name: str, preset: str,
                  plain_bits: int) -> list[Variant]:
    """One network's two variants: at the same level, and at the best level within the plain stream's bits."""
    from prepcodec.export.encode_job import fit_to_target, levels_by_quality

    inputs: dict[int, np.ndarray] = {}
    streams: dict[int, bytes] = {}  # the bisection may come back to the same level (the base one, say)

    def encode(lv: int) -> bytes:
        if lv not in streams:
            inputs[lv] = pre(rgb, codec.to_hevc_qp(lv))
            streams[lv] = codec.encode(inputs[lv], lv, preset)
        return streams[lv]

    same = encode(qp_level)
    level_eq, data_eq, _ = fit_to_target(encode, levels_by_quality(codec), plain_bits)
    return [
        _variant(codec, f"{name}, same level", qp_level, inputs[qp_level], same, network=name),
        _variant(codec, f"{name}, equal bits", level_eq, inputs[level_eq], data_eq, network=name),
    ]


def code_photo(codec: Codec, rgb: np.ndarray, qp_level: int, pres: dict, preset: str) -> list[Variant]:
    """Plain at the level; then for each network (name -> preprocessor) its stream at the same level and at equal
    (or fewer) bits than plain."""
    plain = codec.encode(rgb, qp_level, preset)
    variants = [_variant(codec, "plain", qp_level, rgb, plain)]
    for name, pre in pres.items():
        variants += _npp_variants(codec, rgb, qp_level, pre, name, preset, 8 * len(plain))
    return variants


def annotate(photo: ShowcasePhoto, classifier, detector) -> None:
    """Fill in the classifier's top-5 and the detector's boxes of the original and every decoded variant."""
    from prepcodec.npp.preprocessors import to_tensor

    if classifier is not None:
        photo.original_top5 = classifier.predict(to_tensor(photo.original))[0]["top5"]
        for v in photo.variants:
            v.top5 = classifier.predict(to_tensor(v.decoded))[0]["top5"]
    if detector is not None:
        from prepcodec.tasks.outputs import DRAW_MIN_SCORE

        for v in photo.variants:
            v.boxes = detector.predict(to_tensor(v.decoded))[0]
            v.n_boxes = int((v.boxes["scores"] >= DRAW_MIN_SCORE).sum())
