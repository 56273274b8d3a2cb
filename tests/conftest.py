"""Shared fixtures: a small generated corpus, an isolated cache, a tiny trained checkpoint."""

import contextlib
import os
import random
import socket
import subprocess
import sys
import time

import pytest

WORDS = "the a cat dog bird sees eats likes runs sleeps big small red old happy tree house river stone and but".split()


def make_text(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + ".\n" for _ in range(n_lines))


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    os.environ["NEXTLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text(make_text(3000))
    return path


TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "train.batch_size=8",
    "train.eval_every=10",
    "train.eval_windows=16",
    "train.warmup_steps=5",
    "train.threads=1",
    "train.progress=false",
]


def tiny_args(corpus, out, steps=20, extra=()):
    args = ["train", "--data", str(corpus), "--out", str(out), "--steps", str(steps)]
    for s in TINY + list(extra):
        args += ["--set", s]
    return args


def run_cli(*args, timeout=300, **kw):
    """Run `python -m nextlab ...` in a subprocess (a real process: exit codes, stderr, signals)."""
    return subprocess.run([sys.executable, "-m", "nextlab", *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def tiny_checkpoint(corpus_file, tmp_path_factory):
    from nextlab.cli import main

    out = tmp_path_factory.mktemp("run") / "tiny"
    assert main(tiny_args(corpus_file, out, steps=30)) == 0
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(checkpoint, *args, env=None):
    """`nextlab serve CHECKPOINT ARGS` on a free loopback port, up and healthy; yields its base URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nextlab", "serve", str(checkpoint), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"server did not start: {proc.stdout.read()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
