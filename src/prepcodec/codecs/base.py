"""The one codec contract every standard codec implements.

A codec turns an RGB uint8 HxWx3 array into the *real* bitstream bytes of a standard format and back.
Every rate number in prepcodec is 8 * len(bytes) / (H * W) of those bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from prepcodec.errors import InputError

# Largest image any codec accepts: WebP's hard limit is 16383 px a side; 64 Mpx keeps one frame's float
# working copies (colour conversion) within a few GB.
MAX_SIDE = 16383
MAX_PIXELS = 64 * 1024 * 1024

# Speed presets. "eval" = the reference settings every published number uses; "fast" = what training calls
# every step (same format, same level meaning, faster encoder search).
PRESETS: tuple[str, ...] = ("eval", "fast")


@dataclass(frozen=True)
class LevelSpec:
    """The codec's native quality knob."""

    knob: str  # "qp", "quality", "distance"
    min: float
    max: float
    integer: bool  # True: level must be an integer
    higher_is_better: bool  # True when a larger level means higher quality / more bits (quality); False for qp

    def check(self, level: float) -> float:
        """Validate a level; raise InputError (one line) when out of range."""
        try:
            value = float(level)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{self.knob} must be a number, got {level!r}") from exc
        if not (self.min <= value <= self.max):
            raise InputError(f"{self.knob} {level} out of range [{self.min:g}, {self.max:g}]")
        if self.integer and value != int(value):
            raise InputError(f"{self.knob} must be an integer, got {level!r}")
        return int(value) if self.integer else value


class Codec(ABC):
    """A real standard codec. Subclasses set the class attributes and implement the two methods."""

    name: str  # registry name: "hevc", "vvc", "jpeg", "webp", "avif", "jxl"
    extension: str  # file extension a stock decoder recognises: ".hevc", ".266", ".jpg", ...
    level_spec: LevelSpec
    description: str = ""

    @abstractmethod
    def encode(self, rgb: np.ndarray, level: float, preset: str = "eval") -> bytes:
        """Encode an RGB uint8 HxWx3 image at `level` and return the real bitstream bytes.

        Any H, W >= 1 works (pad internally, the decoder crops back); same input -> same bytes.
        """

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes produced by `encode` into an RGB uint8 HxWx3 array of the original size."""

    def availability(self) -> tuple[bool, str]:
        """(available, backend+version or the reason it is not available)."""
        return True, ""

    def to_hevc_qp(self, level: float) -> float:
        """The HEVC QP whose mean Kodak bpp is closest to this codec at `level` (shipped calibration table)."""
        from prepcodec.codecs.qp_axis import to_hevc_qp

        return to_hevc_qp(self.name, self.level_spec.check(level))

    def from_hevc_qp(self, qp: float) -> float:
        """The native level whose mean Kodak bpp is closest to HEVC at `qp` (rounded for integer knobs)."""
        from prepcodec.codecs.qp_axis import from_hevc_qp

        level = from_hevc_qp(self.name, float(qp))
        spec = self.level_spec
        level = min(max(level, spec.min), spec.max)
        return int(round(level)) if spec.integer else level


def check_preset(preset: str) -> str:
    """Validate a speed preset name (InputError otherwise)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return preset


def check_size(width: int, height: int, what: str = "image") -> None:
    """InputError when an image is empty or beyond the stated limit."""
    if width < 1 or height < 1:
        raise InputError(f"{what} is empty ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(
            f"{what} is {width}x{height}, beyond the limit of {MAX_SIDE} px a side and "
            f"{MAX_PIXELS // (1024 * 1024)} Mpx"
        )


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 HxWx3 image within the size limit; returns it C-contiguous."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise InputError(f"expected an RGB uint8 HxWx3 array, got shape {shape} dtype {dtype}")
    h, w = rgb.shape[:2]
    if h < 1 or w < 1:
        raise InputError(f"empty image {w}x{h}")
    if h > MAX_SIDE or w > MAX_SIDE or h * w > MAX_PIXELS:
        raise InputError(f"image {w}x{h} too large (limit {MAX_SIDE} px a side and {MAX_PIXELS // (1024 * 1024)} Mpx)")
    return np.ascontiguousarray(rgb)
