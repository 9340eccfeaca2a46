"""Codecs by name, and recognising a codec from a file's extension or magic bytes."""

from __future__ import annotations

from pathlib import Path

from prepcodec.codecs.base import Codec
from prepcodec.codecs.hevc import HEVC
from prepcodec.codecs.pillow_codecs import AVIF, JPEG, JXL, WebP
from prepcodec.codecs.vvc import VVC
from prepcodec.errors import InputError

_CLASSES: dict[str, type[Codec]] = {c.name: c for c in (HEVC, VVC, JPEG, WebP, AVIF, JXL)}
_INSTANCES: dict[str, Codec] = {}
_EXTRA_EXTENSIONS = {".jpeg": "jpeg", ".h265": "hevc", ".265": "hevc", ".vvc": "vvc", ".h266": "vvc"}


def list_codecs() -> list[str]:
    """Registered codec names in a fixed order."""
    return list(_CLASSES)


def get_codec(name: str) -> Codec:
    """The codec called `name` (InputError for unknown names)."""
    key = str(name).strip().lower()
    if key not in _CLASSES:
        raise InputError(f"unknown codec {name!r}; choose one of {', '.join(_CLASSES)}")
    if key not in _INSTANCES:
        _INSTANCES[key] = _CLASSES[key]()
    return _INSTANCES[key]


def codec_for_extension(path: str | Path) -> str | None:
    """Codec name for a file extension, or None."""
    ext = Path(path).suffix.lower()
    for name, cls in _CLASSES.items():
        if cls.extension == ext:
            return name
    return _EXTRA_EXTENSIONS.get(ext)


def sniff_codec(head: bytes) -> str | None:
    """Codec name from the first bytes of a file, or None (Annex-B HEVC vs VVC told apart by the first NAL)."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    start = 4 if head[:4] == b"\x00\x00\x00\x01" else (3 if head[:3] == b"\x00\x00\x01" else None)
    if start is not None and len(head) >= start + 2:
        h0, h1 = head[start], head[start + 1]
        if (h0 >> 1) & 0x3F in (32, 33, 34, 35) and h1 & 7:  # HEVC VPS/SPS/PPS/AUD first
            return "hevc"
        if (h1 >> 3) in (14, 15, 16, 20) and h1 & 7:  # VVC VPS/SPS/PPS/AUD first
            return "vvc"
    return None
