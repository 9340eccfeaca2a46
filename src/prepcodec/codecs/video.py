"""Shared machinery of the two video-intra codecs (HEVC, VVC): pad, YUV 4:2:0, PyAV decode, crop back."""

from __future__ import annotations

import av
import numpy as np

from prepcodec.codecs.annexb import (
    END_OF_BITSTREAM,
    hevc_sps_size,
    is_complete,
    read_size_sei,
    size_sei,
    split_nals,
    vvc_sps_size,
)
from prepcodec.codecs.base import Codec, check_preset, check_rgb, check_size
from prepcodec.codecs.yuv import pad_to_multiple, rgb_to_yuv420, yuv420_to_rgb
from prepcodec.errors import BitstreamError

av.logging.set_level(av.logging.PANIC)  # corrupt streams are reported as BitstreamError, not as log spam


class VideoIntraCodec(Codec):
    """An intra-only video codec fed with our own BT.601 full-range YUV 4:2:0 and decoded in-process by PyAV."""

    kind: str  # "hevc" or "vvc": Annex-B NAL header flavour
    decoder_name: str  # PyAV decoder
    bit_depth: int = 8  # sample depth of the coded stream
    min_side: int = 16  # both encoders refuse smaller pictures; tiny images are padded up and cropped back

    def _encode_yuv(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], level: int, preset: str) -> bytes:
        """Encode even-sized 8-bit planes (Y, U, V) and return the Annex-B stream."""
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, level: float, preset: str = "eval") -> bytes:
        rgb = check_rgb(rgb)
        level = self.level_spec.check(level)
        check_preset(preset)
        h, w = rgb.shape[:2]
        padded = pad_to_multiple(rgb, 2)
        if min(padded.shape[:2]) < self.min_side:
            grow = ((0, max(0, self.min_side - padded.shape[0])), (0, max(0, self.min_side - padded.shape[1])), (0, 0))
            padded = np.pad(padded, grow, mode="edge")
        data = self._encode_yuv(rgb_to_yuv420(padded), level, preset)
        if not data:
            raise BitstreamError(f"{self.name} encoder produced no output for a {w}x{h} image")
        if padded.shape[:2] != (h, w):
            data += size_sei(self.kind, w, h)
        return data + END_OF_BITSTREAM[self.kind]

    def _check_declared_size(self, data: bytes) -> None:
        """The size the headers declare, within the limits, before any pixel is decoded (the SPS, and our size
        record)."""
        declared = [read_size_sei(self.kind, data), (hevc_sps_size if self.kind == "hevc" else vvc_sps_size)(data)]
        for size in declared:
            if size is not None:
                check_size(*size, what=f"{self.name} bitstream (its header)")

    def decode(self, data: bytes) -> np.ndarray:
        data = bytes(data)
        if not split_nals(data):
            raise BitstreamError(f"not a {self.name} Annex-B bitstream (no start code)")
        if not is_complete(self.kind, data):
            raise BitstreamError(f"truncated {self.name} bitstream (no end-of-bitstream NAL unit at the end)")
        self._check_declared_size(data)
        frame = self._decode_frame(data)
        planes = []
        for plane in frame.planes:
            if self.bit_depth > 8:
                arr = np.frombuffer(memoryview(plane), dtype="<u2").reshape(plane.height, plane.line_size // 2)
                arr = arr[:, : plane.width].astype(np.int32)
                shift = self.bit_depth - 8
                arr = np.clip((arr + (1 << (shift - 1))) >> shift, 0, 255).astype(np.uint8)
            else:
                arr = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
                arr = arr[:, : plane.width]
            planes.append(arr)
        rgb = yuv420_to_rgb(*planes)
        size = read_size_sei(self.kind, data)
        if size is not None:
            w, h = size
            if not (1 <= w <= rgb.shape[1] and 1 <= h <= rgb.shape[0]):
                raise BitstreamError(
                    f"{self.name} size record {w}x{h} does not fit the {rgb.shape[1]}x{rgb.shape[0]} picture"
                )
            rgb = rgb[:h, :w]
        return np.ascontiguousarray(rgb)

    def _decode_frame(self, data: bytes) -> av.VideoFrame:
        """Decode exactly one picture, treating any decoder complaint as a corrupt stream."""
        ctx = av.CodecContext.create(self.decoder_name, "r")
        ctx.options = {"err_detect": "explode", "threads": "1"}
        try:
            frames = list(ctx.decode(av.Packet(data))) + list(ctx.decode(None))
        except (av.FFmpegError, ValueError) as exc:
            raise BitstreamError(f"corrupt or truncated {self.name} bitstream ({exc.__class__.__name__})") from None
        expected = "yuv420p10le" if self.bit_depth == 10 else ("yuv420p", "yuvj420p")
        if len(frames) != 1:
            raise BitstreamError(f"corrupt or truncated {self.name} bitstream (decoded {len(frames)} pictures, want 1)")
        frame = frames[0]
        if frame.format.name not in expected:
            raise BitstreamError(f"{self.name} bitstream has pixel format {frame.format.name}, expected {expected}")
        if frame.is_corrupt:
            raise BitstreamError(f"corrupt or truncated {self.name} bitstream (decoder reported errors)")
        return frame
