"""Real standard codecs behind one contract, a batch process pool, and the shared HEVC-QP axis."""

from prepcodec.codecs.base import MAX_PIXELS, MAX_SIDE, PRESETS, Codec, LevelSpec
from prepcodec.codecs.pool import CodecPool, RoundTrip, default_pool
from prepcodec.codecs.registry import codec_for_extension, get_codec, list_codecs, sniff_codec

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "PRESETS",
    "Codec",
    "CodecPool",
    "LevelSpec",
    "RoundTrip",
    "codec_for_extension",
    "default_pool",
    "get_codec",
    "list_codecs",
    "sniff_codec",
]
