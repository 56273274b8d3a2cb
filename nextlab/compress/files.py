"""Files in, files out: what `nextlab compress` and `nextlab decompress` do, callable from Python.

Also the classic compressors every result is compared with (standard library,
plus zstd when the `zstandard` package is installed).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nextlab.compress.coder import FRESH_MODEL, CoderOptions, CodingStats, compress_bytes, decompress_bytes, fresh_model
from nextlab.compress.container import unpack, write_atomic
from nextlab.errors import NextlabError

SUFFIX = ".nxz"


@dataclass
class FileResult:
    output: Path
    stats: CodingStats
    model_params: int  # 0 when nothing needs shipping (a fresh model)

    @property
    def adjusted_bits_per_byte(self) -> float:
        return adjusted_bits_per_byte(self.stats, self.model_params)


def adjusted_bits_per_byte(stats: CodingStats, model_params: int) -> float:
    """Deletang et al.'s adjusted rate: the model counts at 2 bytes per parameter."""
    return 8 * (stats.compressed_bytes + 2 * model_params) / max(1, stats.original_bytes)


def baseline_sizes(data: bytes) -> dict[str, int]:
    """Compressed sizes by gzip -9, bzip2 -9, xz -9e (and zstd -19 when installed)."""
    sizes = {
        "gzip -9": len(gzip.compress(data, 9, mtime=0)),
        "bzip2 -9": len(bz2.compress(data, 9)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
    }
    try:
        import zstandard
    except ImportError:
        return sizes
    sizes["zstd -19"] = len(zstandard.ZstdCompressor(level=19).compress(data))
    return sizes


def measure_compression(data: bytes, model, tokenizer, modes=("static", "adaptive"), threads: int = 0) -> dict:
    """Compress `data` in each mode, check the round trip, and compare with the classic compressors.

    Also scores the data with the teacher-forced scorer (`sample.token_logprobs`):
    its cross-entropy in nats per byte, divided by ln 2, predicts the static rate.
    """
    import math

    from nextlab.sample import token_logprobs

    ids = tokenizer.encode_bytes(data)
    nats = -float(token_logprobs(model, ids, context=[tokenizer.eot_id]).sum()) if ids else 0.0
    out = {
        "bytes": len(data),
        "params": model.num_params(),
        "scorer_nats_per_byte": nats / max(1, len(data)),
        "scorer_bits_per_byte": nats / max(1, len(data)) / math.log(2),
        "baselines": {name: 8 * n / max(1, len(data)) for name, n in baseline_sizes(data).items()},
        "modes": {},
    }
    for mode in modes:
        blob, st = compress_bytes(data, model, tokenizer, CoderOptions(mode=mode, threads=threads))
        restored, dst = decompress_bytes(blob, model, tokenizer)
        if restored != data:  # decompress_bytes checks the SHA-256 itself; this is belt and braces
            raise NextlabError(f"{mode} round trip failed")
        out["modes"][mode] = {
            "bits_per_byte": st.bits_per_byte,
            "ideal_bits_per_byte": st.ideal_bits_per_byte,
            "adjusted_bits_per_byte": adjusted_bits_per_byte(st, out["params"]),
            "coder_overhead": st.coder_overhead,
            "compress_kb_per_s": st.kb_per_s,
            "decompress_kb_per_s": dst.kb_per_s,
            "streams": st.streams,
            "kernel": st.kernel,
            "workers": st.workers,
        }
    return out


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its status, from the same open file (a rename meanwhile cannot mix two files)."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno())
    except FileNotFoundError:
        raise NextlabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NextlabError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise NextlabError(f"{path}: cannot read ({e.strerror})") from None


def _attributes(st: os.stat_result) -> dict:
    """What decompress restores, as gzip and xz do: the permission bits and the modification time, of a regular
    file (a pipe's or a device's would mean nothing on the restored file)."""
    if not stat.S_ISREG(st.st_mode):
        return {}
    return {"file": {"mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}}


def _recorded_attributes(header: dict, source: str) -> tuple[int, int] | None:
    """The (mode, mtime in ns) to restore; None for a file without them (compressed before they were recorded)."""
    if "file" not in header:
        return None
    rec = header["file"] if isinstance(header["file"], dict) else {}
    mode, mtime_ns = rec.get("mode"), rec.get("mtime_ns")
    if not _is_int(mode) or not 0 <= mode <= 0o7777:
        raise NextlabError(f"{source}: malformed header (file.mode {mode!r} is not a permission mode 0..0o7777)")
    if not _is_int(mtime_ns) or not -(2**63) <= mtime_ns < 2**63:
        raise NextlabError(f"{source}: malformed header (file.mtime_ns {mtime_ns!r} is not a time in nanoseconds)")
    # the permission bits only, as gzip and xz: setuid, setgid and sticky would hand whoever runs the file the rights
    # of whoever decompressed it, on the word of a file anyone can write
    return mode & 0o777, mtime_ns


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_output(out: Path, force: bool) -> None:
    if out.is_dir():
        raise NextlabError(f"{out}: is a directory; give the output a file name")
    if out.exists() and not force:
        raise NextlabError(f"{out} already exists (use --force to overwrite)")
    if not out.parent.is_dir():
        raise NextlabError(f"{out.parent}: no such directory for the output")


def compress_file(
    path: str | Path,
    checkpoint: str | Path | None,
    out: str | Path | None = None,
    opts: CoderOptions | None = None,
    *,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Compress a file with a checkpoint (None: a fresh model from `seed`); writes `out` (default IN.nxz)."""
    path = Path(path)
    data, st = _read(path)  # first: a path such as "." has no name to give the output
    out = Path(out) if out else path.with_name(path.name + SUFFIX)
    _check_output(out, force)
    if checkpoint is None:
        model, tokenizer = fresh_model(FRESH_MODEL, seed)
        blob, stats = compress_bytes(data, model, tokenizer, opts, fresh_seed=seed, progress=progress,
                                     extra_header=_attributes(st))
        params = 0
    else:
        from nextlab.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        source = str(ckpt.path.resolve())
        blob, stats = compress_bytes(data, ckpt.model, ckpt.tokenizer, opts, source=source, progress=progress,
                                     extra_header=_attributes(st))
        params = ckpt.model.num_params()
    write_atomic(out, blob)
    return FileResult(out, stats, params)


def decompress_file(
    path: str | Path,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Decompress a file; the checkpoint defaults to the one recorded in the file, when it still exists."""
    path = Path(path)
    if out is None:
        if path.suffix != SUFFIX:
            raise NextlabError(f"{path}: name does not end in {SUFFIX}; say where to write with -o")
        out = path.with_suffix("")
    out = Path(out)
    blob, _ = _read(path)
    _check_output(out, force)
    header = unpack(blob, str(path)).header
    original = _recorded_attributes(header, str(path))
    model = tokenizer = None
    params = 0
    if "fresh" not in header.get("model", {}):
        recorded = header.get("model", {}).get("source")
        checkpoint = checkpoint or (recorded if recorded and Path(recorded).exists() else None)
        if checkpoint is None:
            raise NextlabError(f"{path} was compressed with the model at {recorded or '(unknown)'}; pass it with -m")
        from nextlab.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        model, tokenizer, params = ckpt.model, ckpt.tokenizer, ckpt.model.num_params()
    data, stats = decompress_bytes(blob, model, tokenizer, source=str(path), progress=progress)
    write_atomic(out, data, original)
    return FileResult(out, stats, params)
