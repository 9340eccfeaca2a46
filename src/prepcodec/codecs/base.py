"""The one codec contract every standard codec implements.

A codec turns an RGB uint8 HxWx3 array into the *real* bitstream bytes of a standard format and back.
Every rate number in prepcodec is 8 * len(bytes) / (H * W) of those bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

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
        from prepcodec.errors import InputError

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
