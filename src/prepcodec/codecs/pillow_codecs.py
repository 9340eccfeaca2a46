"""Still-image codecs through Pillow: JPEG (libjpeg), WebP (libwebp), AVIF (libavif) and JPEG XL
(libjxl via pillow-jxl-plugin). One class, four parameter sets: they differ only in save options."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, features

from prepcodec.codecs.base import Codec, LevelSpec, check_preset, check_rgb, check_size
from prepcodec.errors import BitstreamError, PrepcodecError

_QUALITY_0_100 = LevelSpec(knob="quality", min=0, max=100, integer=True, higher_is_better=True)


class PillowCodec(Codec):
    """A Pillow-backed codec; subclasses give the format and the per-preset save options."""

    pil_format: str
    feature: str | None = None  # Pillow feature / module to check for availability
    save_options: dict[str, dict] = {}
    magic: tuple[bytes, ...] = ()

    def encode(self, rgb: np.ndarray, level: float, preset: str = "eval") -> bytes:
        rgb = check_rgb(rgb)
        level = self.level_spec.check(level)
        check_preset(preset)
        self._require()
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buf, format=self.pil_format, quality=level, **self.save_options[preset])
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        self._require()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(bytes(data)), formats=[self.pil_format]) as im:
                    # the header's size, before any pixel is decoded: a 2 KB file may claim gigapixels
                    check_size(*im.size, what=f"{self.name} bitstream (its header)")
                    im.load()
                    rgb = np.array(im.convert("RGB"))  # writable copy
        except PrepcodecError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad streams
            raise BitstreamError(f"corrupt or truncated {self.name} bitstream ({exc.__class__.__name__})") from None
        return np.ascontiguousarray(rgb)

    def _require(self) -> None:
        ok, why = self.availability()
        if not ok:
            from prepcodec.errors import BackendUnavailable

            raise BackendUnavailable(f"{self.name}: {why}")

    def availability(self) -> tuple[bool, str]:
        import PIL

        if self.feature and not features.check(self.feature):
            return False, f"Pillow {PIL.__version__} was built without {self.feature}"
        version = features.version(self.feature) if self.feature else None
        return True, f"Pillow {PIL.__version__}" + (f" ({self.feature} {version})" if version else "")


class JPEG(PillowCodec):
    name = "jpeg"
    extension = ".jpg"
    description = "JPEG baseline 4:2:0 (libjpeg via Pillow)"
    level_spec = LevelSpec(knob="quality", min=1, max=95, integer=True, higher_is_better=True)
    pil_format = "JPEG"
    feature = "jpg"
    # eval: optimised Huffman tables (what a careful encoder ships); fast: default tables. Same quantisers.
    save_options = {"eval": {"subsampling": 2, "optimize": True}, "fast": {"subsampling": 2, "optimize": False}}


class WebP(PillowCodec):
    name = "webp"
    extension = ".webp"
    description = "WebP lossy (libwebp via Pillow)"
    level_spec = _QUALITY_0_100
    pil_format = "WEBP"
    feature = "webp"
    save_options = {"eval": {"method": 6, "lossless": False}, "fast": {"method": 0, "lossless": False}}


class AVIF(PillowCodec):
    name = "avif"
    extension = ".avif"
    description = "AVIF 4:2:0 (libavif via Pillow)"
    level_spec = _QUALITY_0_100
    pil_format = "AVIF"
    feature = "avif"
    save_options = {
        "eval": {"speed": 6, "subsampling": "4:2:0", "max_threads": 1},
        "fast": {"speed": 10, "subsampling": "4:2:0", "max_threads": 1},
    }

    def availability(self) -> tuple[bool, str]:
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # decode single-threaded too: the pool parallelises across images
        return super().availability()


class JXL(PillowCodec):
    """JPEG XL via pillow-jxl-plugin. Knob: libjxl's quality (mapped by libjxl to a Butteraugli distance)."""

    name = "jxl"
    extension = ".jxl"
    description = "JPEG XL VarDCT (libjxl via pillow-jxl-plugin)"
    level_spec = LevelSpec(knob="quality", min=1, max=99, integer=True, higher_is_better=True)
    pil_format = "JXL"
    feature = None
    save_options = {"eval": {"effort": 7, "num_threads": 1}, "fast": {"effort": 3, "num_threads": 1}}

    def availability(self) -> tuple[bool, str]:
        try:
            from importlib.metadata import version

            import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
        except ImportError:
            return False, "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin==1.3.8)"
        import pillow_jxl.JpegXLImagePlugin as plugin

        plugin.DECODE_THREADS = 0  # single-threaded: the pool parallelises across images
        return True, f"pillow-jxl-plugin {version('pillow-jxl-plugin')}"
