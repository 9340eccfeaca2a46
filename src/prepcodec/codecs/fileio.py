"""Atomic file writing and bitstream-file recognition for the encode/decode commands."""

from __future__ import annotations

from pathlib import Path

from prepcodec.codecs.registry import codec_for_extension, get_codec, sniff_codec
from prepcodec.errors import InputError


def read_bitstream(path: Path, codec: str | None = None) -> tuple[str, bytes]:
    """(codec name, bytes) of a bitstream file; the codec comes from `codec`, the magic bytes or the extension."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = path.read_bytes()
    if codec is not None:
        return get_codec(codec).name, data
    name = sniff_codec(data[:64]) or codec_for_extension(path)
    if name is None:
        raise InputError(f"{path}: cannot tell the codec from its extension or first bytes; pass --codec")
    return name, data
