"""VVC intra: libvvenc in imageio-ffmpeg's static FFmpeg (through pipes), decoded in-process by PyAV.

Eval settings: `-preset slow -qp N -qpa 0 -vvenc-params IntraPeriod=1:IntraQPOffset=0:VideoFullRange=1` (QP N: VTM's
`-q N`). libvvenc codes 10-bit, so we feed our 8-bit BT.601 full-range planes shifted left by 2 and round back
after decoding. Output is raw Annex-B `.266`.
"""

from __future__ import annotations

import functools
import subprocess

import numpy as np

from prepcodec.codecs.base import LevelSpec
from prepcodec.codecs.video import VideoIntraCodec
from prepcodec.errors import BackendUnavailable, BitstreamError

VVENC_PRESETS = {"eval": "slow", "fast": "faster"}


@functools.cache
def _ffmpeg_with_vvenc() -> tuple[str | None, str]:
    """(ffmpeg path, version text) or (None, why not)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None, "imageio-ffmpeg is not installed (pip install 'imageio-ffmpeg>=0.8')"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, f"imageio-ffmpeg's ffmpeg does not run: {exc}"
    if "libvvenc" not in out:
        return None, (
            f"imageio-ffmpeg {imageio_ffmpeg.__version__} has no libvvenc encoder (needs imageio-ffmpeg>=0.8)"
        )
    return exe, f"libvvenc in imageio-ffmpeg {imageio_ffmpeg.__version__}"


class VVC(VideoIntraCodec):
    name = "vvc"
    extension = ".266"
    level_spec = LevelSpec(knob="qp", min=0, max=63, integer=True, higher_is_better=False)
    description = "VVC intra, libvvenc (imageio-ffmpeg) + PyAV vvc decoder"
    kind = "vvc"
    decoder_name = "vvc"
    bit_depth = 10

    def _encode_yuv(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], level: int, preset: str) -> bytes:
        exe, why = _ffmpeg_with_vvenc()
        if exe is None:
            raise BackendUnavailable(f"vvc: {why}")
        h, w = planes[0].shape
        raw = b"".join((p.astype("<u2") << 2).tobytes() for p in planes)
        cmd = [
            exe, "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-color_range", "pc", "-i", "pipe:0",
            "-frames:v", "1", "-c:v", "libvvenc", "-preset", VVENC_PRESETS[preset], "-qp", str(level), "-qpa", "0",
            "-threads", "1", "-vvenc-params", "IntraPeriod=1:IntraQPOffset=0:VideoFullRange=1",
            "-f", "vvc", "pipe:1",
        ]  # fmt: skip
        proc = subprocess.run(cmd, input=raw, capture_output=True, timeout=600)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            why = msg[-1] if msg else f"exit code {proc.returncode}"
            raise BitstreamError(
                f"libvvenc could not encode this {w}x{h} image at QP {level} (libvvenc 1.15 fails on some detailed "
                f"images at QP <= 3): {why}"
            )
        return proc.stdout

    def availability(self) -> tuple[bool, str]:
        exe, why = _ffmpeg_with_vvenc()
        if exe is None:
            return False, why
        import av

        if "vvc" not in av.codecs_available:
            return False, f"PyAV {av.__version__} has no vvc decoder"
        return True, f"{why}, PyAV {av.__version__} decoder"
