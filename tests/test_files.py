"""What nextlab writes gets the mode a plain open() would give under the user's umask, not the 0600 of a temporary
file: checkpoints, Hugging Face exports, compressed and decompressed files. One writer per run directory."""

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from conftest import make_text, tiny_args

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.cli import main
from nextlab.compress.coder import CoderOptions
from nextlab.compress.files import compress_file, decompress_file
from nextlab.errors import NextlabError
from nextlab.files import LOCK_FILE, current_umask, lock_beside, run_lock
from nextlab.hf import export_checkpoint
from nextlab.tune import SFTConfig, sft


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


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_one_writer_per_run_directory(corpus_file, tmp_path, capsys):
    """A live holder's lock refuses a second run, naming its pid and host; a gone holder's lock is taken over with
    a warning; a finished run leaves no lock behind."""
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": "nextlab train"}))
    assert main(tiny_args(corpus_file, out, steps=10)) == 2
    err = capsys.readouterr().err
    assert f"nextlab train (pid {os.getpid()} on {socket.gethostname()}) is writing here" in err and err.count("\n") == 1
    assert not (out / "checkpoints").exists() and lock.exists()  # nothing written, the holder's lock left alone
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "what": "nextlab train"}))
    assert main(tiny_args(corpus_file, out, steps=10)) == 0
    assert "taking over the lock" in capsys.readouterr().out
    assert not lock.exists() and (out / "checkpoints").exists()


def test_a_refused_run_leaves_no_directory_and_tuning_holds_a_lock_beside_its_output(tmp_path, tiny_checkpoint):
    with pytest.raises(NextlabError):
        with run_lock(tmp_path / "new" / LOCK_FILE, "test"):
            raise NextlabError("refused before writing")
    assert not (tmp_path / "new").exists()
    beside = lock_beside(tmp_path / "tuned" / "sft")
    assert beside == tmp_path / "tuned" / f".sft{LOCK_FILE}"
    with run_lock(beside, "nextlab tune sft"):
        with pytest.raises(NextlabError, match="nextlab tune sft .* is writing here"):
            sft(tiny_checkpoint, tmp_path / "tuned" / "sft", SFTConfig(steps=1))
