"""Reading and writing images: every input becomes RGB uint8 HxWx3, or a one-line InputError.

Codecs and models only ever see RGB uint8, so every odd format is converted here, once, and the conversion is
reported through `notes` (the CLI prints them) instead of happening silently:

- grayscale (1, L, I;16, I, F) -> grey replicated to R=G=B; 16-bit / 32-bit values scaled to 8 bit;
- alpha (LA, RGBA, PA, palette with transparency) -> composited over a WHITE background (what a viewer shows);
- palette (P), CMYK, YCbCr, LAB and any other mode Pillow can convert -> RGB through Pillow's converters;
- 16-bit-per-channel RGB(A) PNGs -> Pillow reduces them to 8 bit on read (keeps the high byte); noted;
- EXIF orientation is applied, so pixels are upright as a viewer shows them (noted when it changes anything);
- multi-frame files (GIF, TIFF) -> the first frame (noted).

Size limit: the codecs' own (`prepcodec.codecs.base.MAX_SIDE` px a side, `MAX_PIXELS` pixels), checked from the
header before any pixel is decoded. Truncated files are refused even if some other code enabled Pillow's
`LOAD_TRUNCATED_IMAGES`.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from prepcodec.codecs.base import check_size
from prepcodec.errors import InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".avif", ".jxl",
)

_GRAY_MODES = {"1", "L", "I", "F"}
_EXIF_ORIENTATION = 0x0112


def _register_plugins() -> None:
    """JPEG XL is read through pillow-jxl-plugin (AVIF and WebP are built into Pillow)."""
    with contextlib.suppress(ImportError):
        import pillow_jxl  # noqa: F401


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Force Pillow to raise on truncated files for the duration of one load."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def _scale_to_u8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth or float grey values -> uint8: floats in [0, 1] x255, values above 255 /257, else kept."""
    is_float = a.dtype.kind == "f"
    x = np.nan_to_num(a.astype(np.float64))
    peak = float(x.max()) if x.size else 0.0
    if is_float and peak <= 1.0:
        x = x * 255.0
    elif peak > 255.0:
        x = x / 257.0
    return np.clip(x, 0, 255).round().astype(np.uint8)


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to RGB uint8, appending what was done to `notes`."""
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        notes.append("converted palette image to RGB")
        mode = im.mode
    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        notes.append("composited alpha channel over white")
        mode = "RGB" if mode.startswith("RGB") else "L"
        if mode == "L":
            notes.append("converted grayscale to RGB")
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in _GRAY_MODES or mode.startswith("I;16"):
        if mode in ("1", "L"):
            g = np.asarray(im.convert("L"), dtype=np.uint8)
        else:
            g = _scale_to_u8(np.asarray(im))
            notes.append(f"reduced {mode} grayscale to 8 bit")
        notes.append("converted grayscale to RGB")
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot convert image mode {mode} to RGB") from exc
        notes.append(f"converted {mode} to RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def load_image(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """Read any supported image file as RGB uint8 HxWx3 (see module doc for conversions and limits).

    `notes`, when given, receives one short line per conversion applied (e.g. "converted grayscale to RGB").
    """
    _register_plugins()
    notes = notes if notes is not None else []
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                check_size(im.width, im.height, what=str(p))
                frames = getattr(im, "n_frames", 1)
                sixteen = any(";16" in str(t[3] if len(t) > 3 else "") for t in (im.tile or []))
                with _strict_truncation():
                    im.load()
                if frames > 1:
                    notes.append(f"used the first of {frames} frames")
                if sixteen and im.mode in ("RGB", "RGBA"):
                    notes.append("reduced 16-bit channels to 8 bit")
                if im.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
                    im = ImageOps.exif_transpose(im)
                    notes.append("applied EXIF orientation")
                rgb = _to_rgb(im, notes)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError(f"{p}: not a recognised image file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{p}: image too large ({exc})".splitlines()[0]) from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, EOFError; plugins raise others (jxl: RuntimeError)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: corrupt or truncated image ({reason[:160]})") from exc
    return rgb


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 HxWx3 as PNG atomically (temp file in the same folder, then os.replace)."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"save_png expects an RGB uint8 HxWx3 array, got shape {a.shape} dtype {a.dtype}")
    from prepcodec.atomic import write_bytes

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), "RGB").save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
    return Path(path)


def is_image_path(path: str | Path) -> bool:
    """True for a file whose extension is one `load_image` is meant for."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped); InputError when there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: no such folder")
    found = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_path(p))
    if not found:
        raise InputError(f"{d}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found
