"""Lossless compression with the model's next-token distribution (see coder.py)."""

from nextlab.compress.coder import (
    FRESH_LR,
    FRESH_MODEL,
    CoderOptions,
    CodingStats,
    compress_bytes,
    decompress_bytes,
    fresh_model,
    read_header,
)

__all__ = ["FRESH_LR", "FRESH_MODEL", "CoderOptions", "CodingStats", "compress_bytes", "decompress_bytes", "fresh_model", "read_header"]
