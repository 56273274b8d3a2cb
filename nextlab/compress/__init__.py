"""Lossless compression with the model's next-token distribution (see coder.py)."""

from nextlab.compress.coder import (
    FRESH_MODEL,
    CoderOptions,
    CodingStats,
    compress_bytes,
    decompress_bytes,
    fresh_model,
    fresh_options,
    read_header,
)

__all__ = [
    "FRESH_MODEL",
    "CoderOptions",
    "CodingStats",
    "compress_bytes",
    "decompress_bytes",
    "fresh_model",
    "fresh_options",
    "read_header",
]
