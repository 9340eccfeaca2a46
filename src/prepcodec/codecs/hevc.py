"""HEVC intra (the BPG-class reference codec): libx265 through PyAV, raw Annex-B `.hevc`.

Eval settings are the measured bpgenc-equivalent route: preset veryslow, tune ssim,
`qp=N:keyint=1:info=0:pools=1:frame-threads=1`, 8-bit 4:2:0 BT.601 full range; x265's `qp=N` then means
`bpgenc -q N`. The fast preset changes only the x265 search preset.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from prepcodec.codecs.base import LevelSpec
from prepcodec.codecs.video import VideoIntraCodec

X265_PRESETS = {"eval": "veryslow", "fast": "superfast"}


def x265_params(qp: int) -> str:
    """The x265-params string of the reference route (`log-level` only silences x265's banner)."""
    return f"qp={qp}:keyint=1:info=0:pools=1:frame-threads=1:log-level=error"


class HEVC(VideoIntraCodec):
    name = "hevc"
    extension = ".hevc"
    level_spec = LevelSpec(knob="qp", min=0, max=51, integer=True, higher_is_better=False)
    description = "HEVC intra (BPG-class), libx265 via PyAV"
    kind = "hevc"
    decoder_name = "hevc"
    bit_depth = 8
    # libx265 refuses some pictures 16 px thin and over ~4096 px long (16x4500, 8200x16: avcodec_open2 fails;
    # 16x4096 and 32x16383 encode), so thin pictures are padded to 32 px and cropped back on decode
    min_side = 32

    def _encode_yuv(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], level: int, preset: str) -> bytes:
        h, w = planes[0].shape
        ctx = av.CodecContext.create("libx265", "w")
        ctx.width, ctx.height = w, h
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.color_range = 2  # full range (JPEG), signalled in the VUI so stock players convert correctly
        ctx.options = {"preset": X265_PRESETS[preset], "tune": "ssim", "x265-params": x265_params(level)}
        frame = av.VideoFrame(w, h, "yuv420p")
        for plane, arr in zip(frame.planes, planes, strict=True):
            buf = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
            buf[:, : arr.shape[1]] = arr
            plane.update(buf)
        frame.pts = 0
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
        return b"".join(bytes(p) for p in packets)

    def availability(self) -> tuple[bool, str]:
        if "libx265" not in av.codecs_available:
            return False, f"PyAV {av.__version__} was built without libx265"
        return True, f"libx265 via PyAV {av.__version__}"
