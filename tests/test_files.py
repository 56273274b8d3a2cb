"""What nextlab writes gets the mode a plain open() would give under the user's umask, not the 0600 of a temporary
file: checkpoints, Hugging Face exports, compressed and decompressed files."""

import os
import stat

import pytest
from conftest import make_text

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.compress.coder import CoderOptions
from nextlab.compress.files import compress_file, decompress_file
from nextlab.files import current_umask
from nextlab.hf import export_checkpoint


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_written_get_the_umask_mode(tiny_checkpoint, tmp_path, umask_027):
    assert current_umask() == 0o027
    ckpt = load_checkpoint(tiny_checkpoint)
    saved = save_checkpoint(tmp_path / "ckpt", ckpt.model, ckpt.tokenizer, {})
    assert {f.name: mode(f) for f in saved.iterdir()} == dict.fromkeys(("config.json", "model.safetensors", "tokenizer.json"), umask_027)
    exported = export_checkpoint(saved, tmp_path / "hf")
    assert all(mode(f) == umask_027 for f in exported.iterdir())
    src = tmp_path / "in.txt"
    src.write_bytes(make_text(20).encode())
    packed = compress_file(src, saved, opts=CoderOptions(streams=2, min_stream_tokens=16, block_steps=8, threads=1)).output
    assert mode(packed) == umask_027
    restored = decompress_file(packed, saved, tmp_path / "out.txt").output
    assert mode(restored) == umask_027 and restored.read_bytes() == src.read_bytes()
