"""prepcodec: neural preprocessing that makes standard image codecs cheaper for machine vision."""

__version__ = "0.1.0"
