"""The compressed file format: one self-checking container, written atomically.

Layout (all integers little-endian):

    magic            6 bytes   b"NXLZ\\r\\n" (the CR LF catches text-mode transfers)
    version          u16       FORMAT_VERSION
    header length    u32
    header           zlib-compressed UTF-8 JSON: mode, model fingerprint (and the seed and config of
                     a fresh model), original length and SHA-256, tokenizer, streams,
                     block checksums, coder and update parameters, thread count, and
                     (when the input was a regular file) its permission bits and mtime
    payload length   u64
    payload          the range coder's 32-bit words
    file digest      32 bytes  SHA-256 of everything above

The digest makes any bit flip or truncation an error before decoding starts;
the per-block checksums in the header catch the one failure a digest cannot:
a machine whose floating-point results differ from the encoder's.

The version changes only when an older reader would misread a newer file: version 2 added the
ring kernel (`options.kernel`), whose floats a version-1 reader would not reproduce; a version-1
file names no kernel and decodes with the model's own forward, as it was made. Version 3 added
the bfloat16 ring (`options.dtype`) and workers (`options.workers`, one payload part each: `payload_parts`);
a version-2 file names neither and decodes in float32, in one process. Version 4 added the ring's
attention in attention.py's loops (`options.attention`); a version-3 file names none and decodes
with torch.bmm. An optional header
key is no such change: readers ignore keys they do not know, and treat a missing optional key as
"not recorded" (the `file` key, the original's mode and mtime, came this way: files without it
decompress as before, to the umask's default mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nextlab.errors import NextlabError
from nextlab.files import give_default_mode

MAGIC = b"NXLZ\r\n"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
_PREFIX = struct.Struct("<6sHI")  # magic, version, header length
_DIGEST = 32


class Container(NamedTuple):
    header: dict
    payload: np.ndarray  # the range coder's uint32 words
    version: int


def pack(header: dict, payload: np.ndarray, version: int = FORMAT_VERSION) -> bytes:
    """The container's bytes for a header and the coder's uint32 words (`version`: for tests of old files)."""
    head = zlib.compress(json.dumps(header, separators=(",", ":"), sort_keys=True).encode(), 9)
    words = np.ascontiguousarray(payload, dtype="<u4").tobytes()
    body = _PREFIX.pack(MAGIC, version, len(head)) + head + struct.pack("<Q", len(words)) + words
    return body + hashlib.sha256(body).digest()


def unpack(blob: bytes, source: str) -> Container:
    """Header, payload words and format version of a container; every kind of damage is a NextlabError naming
    `source`."""
    if len(blob) < len(MAGIC) or blob[: len(MAGIC)] != MAGIC:
        raise NextlabError(f"{source}: not a nextlab compressed file (bad magic bytes)")
    if len(blob) < _PREFIX.size + 8 + _DIGEST:
        raise NextlabError(f"{source}: truncated ({len(blob)} bytes)")
    _, version, head_len = _PREFIX.unpack_from(blob)
    if version not in READABLE_VERSIONS:
        raise NextlabError(f"{source}: format version {version} is not supported (this nextlab reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))})")
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise NextlabError(f"{source}: corrupted or truncated (file checksum does not match)")
    try:
        header = json.loads(zlib.decompress(body[_PREFIX.size : _PREFIX.size + head_len]))
        (n,) = struct.unpack_from("<Q", body, _PREFIX.size + head_len)
        start = _PREFIX.size + head_len + 8
        if start + n != len(body) or n % 4:
            raise ValueError("payload length does not match the file")
    except (ValueError, struct.error, zlib.error) as e:  # only reachable with a forged digest
        raise NextlabError(f"{source}: malformed container ({e})") from None
    return Container(header, np.frombuffer(body[start:], dtype="<u4").astype(np.uint32), version)


def write_atomic(path: str | Path, data: bytes, original: tuple[int, int] | None = None) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: never a half-written file.

    The file gets the mode open() would give under the umask or, when `original` is given, that (mode,
    mtime in ns); both before the rename, so that it never appears with others.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if original is None:
            give_default_mode(tmp)  # mkstemp made it 0600
        else:
            _restore(tmp, path, *original)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _restore(tmp: str, path: Path, mode: int, mtime_ns: int) -> None:
    """Give the written file the original's mode and mtime; a filesystem that cannot keep them gets a warning, as
    with gzip, not a lost result."""
    try:
        os.chmod(tmp, mode)
        # atime stays the moment of writing: the container records none (reading the original to compress it
        # touched its atime anyway), and the restored file was indeed just written
        os.utime(tmp, ns=(os.stat(tmp).st_atime_ns, mtime_ns))
    except OSError as e:
        warnings.warn(f"{path}: could not restore the original's mode and modification time ({e.strerror})", stacklevel=2)


def block_checksum(tokens: np.ndarray) -> bytes:
    """Checksum of one block of decoded tokens: 2 bytes of SHA-256, enough to stop at the first bad block
    (a wrong block passes with probability 1/65536, and the next one and the original's SHA-256 still catch it)."""
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i4").tobytes()).digest()[:2]
