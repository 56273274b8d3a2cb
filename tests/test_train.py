import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import free_port, run_cli, tiny_args
from safetensors.torch import load_file

from nextlab.cli import main
from nextlab.config import TrainConfig
from nextlab.train import lr_multiplier


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def final_weights(out):
    ckpts = sorted((out / "checkpoints").iterdir())
    return load_file(ckpts[-1] / "model.safetensors")


def test_loss_falls_and_same_seed_same_numbers(corpus_file, tmp_path):
    for name in ("a", "b"):
        assert main(tiny_args(corpus_file, tmp_path / name, steps=30)) == 0
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    assert a[-1]["val_loss"] < a[0]["val_loss"] - 1.0
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert set(a[-1]) >= {"step", "tokens", "wall_s", "train_loss", "val_loss", "val_bpb", "lr", "tokens_per_s", "mfu"}
    assert a[0]["mfu"] is None and 0 < a[-1]["mfu"] < 1  # against this machine's measured matmul peak


def test_flops_per_token_counts_every_multiplying_weight():
    from nextlab.model import GPT, ModelConfig
    from nextlab.roofline import flops_per_token

    modern = GPT(ModelConfig(vocab_size=100, n_layer=2, n_head=2, n_embd=32, block_size=16))
    gpt2 = GPT(ModelConfig(arch="gpt2", vocab_size=100, n_layer=2, n_head=2, n_embd=32, block_size=16))
    attention = 12 * 2 * 32 * 16
    assert flops_per_token(modern, 16) == 6 * modern.num_params(non_embedding=True) + attention  # untied head included
    assert flops_per_token(gpt2, 16) == 6 * (gpt2.num_params(non_embedding=True) + 100 * 32) + attention  # tied head


@pytest.mark.parametrize("recipe", ["adamw-gpt2", "muon-accum"])
def test_recipes_train(corpus_file, tmp_path, recipe):
    extra = {
        "adamw-gpt2": ["model.arch=gpt2", "train.optimizer=adamw", "train.schedule=cosine", "model.dropout=0.1"],
        "muon-accum": ["train.micro_batch_size=4", "train.schedule=wsd", "train.dtype=bfloat16"],
    }[recipe]
    assert main(tiny_args(corpus_file, tmp_path / "r", steps=20, extra=extra)) == 0
    m = metrics(tmp_path / "r")
    assert m[-1]["val_loss"] < m[0]["val_loss"]


def test_lr_schedules():
    t = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_multiplier(0, t) == pytest.approx(0.1) and lr_multiplier(9, t) == 1.0
    assert lr_multiplier(99, t) == pytest.approx(0.1, abs=0.01)
    t.schedule, t.decay_fraction = "wsd", 0.2
    assert lr_multiplier(79, t) == 1.0 and lr_multiplier(90, t) == pytest.approx(0.55)


def test_keeps_last_k_checkpoints(corpus_file, tmp_path):
    assert main(tiny_args(corpus_file, tmp_path / "k", steps=30, extra=["train.save_every=5", "train.keep_last=2"])) == 0
    assert [p.name for p in sorted((tmp_path / "k" / "checkpoints").iterdir())] == ["step_0000025", "step_0000030"]


def test_sigkill_and_resume_is_bitwise_identical(corpus_file, tmp_path):
    """A run killed at a random moment and resumed ends with exactly the weights of an uninterrupted run."""
    extra = ["train.save_every=4", "model.dropout=0.1", "train.keep_last=3"]
    steps = 60
    began = time.time()
    assert main(tiny_args(corpus_file, tmp_path / "whole", steps=steps, extra=extra)) == 0
    duration = time.time() - began

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nextlab", *tiny_args(corpus_file, out, steps=steps, extra=extra)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoints").exists() or not any((out / "checkpoints").glob("step_*")):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.6 * duration))  # somewhere in the middle: maybe mid-step, maybe mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"

    resumed = run_cli(*tiny_args(corpus_file, out, steps=steps, extra=extra), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    whole, again = final_weights(tmp_path / "whole"), final_weights(out)
    assert whole.keys() == again.keys()
    for k in whole:
        assert torch.equal(whole[k], again[k]), k
    assert [r["step"] for r in metrics(out)] == [r["step"] for r in metrics(tmp_path / "whole")]
    assert [r["val_loss"] for r in metrics(out)] == [r["val_loss"] for r in metrics(tmp_path / "whole")]


def test_sigterm_checkpoints_and_resume_is_bitwise_identical(corpus_file, tmp_path):
    """SIGTERM at random moments, three times over: each stop writes a checkpoint at once and exits 75; the
    resumed run ends with exactly the weights and metrics of an uninterrupted one."""
    extra = ["train.save_every=25", "model.dropout=0.1", "train.eval_every=7"]
    steps = 60
    began = time.time()
    assert main(tiny_args(corpus_file, tmp_path / "whole", steps=steps, extra=extra)) == 0
    duration = time.time() - began

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-u", "-m", "nextlab", *tiny_args(corpus_file, out, steps=steps, extra=extra)]  # unbuffered: lines as they come
    stops = 0
    for attempt in range(4):
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if attempt < 3:
            line = "-"
            while line and not line.startswith("model "):  # the run is set up (its signal handlers are in place)
                line = proc.stdout.readline()
            time.sleep(random.uniform(0.0, 0.5 * duration))
            sent = time.time()
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 75:  # it finished first (a signal after the end meets Python's own handler: -15)
            assert proc.returncode in (0, -signal.SIGTERM) and (out / "checkpoints" / f"step_{steps:07d}").exists(), err
            break
        assert time.time() - sent < 5, "the checkpoint came long after the signal"
        assert "stopped: on SIGTERM" in err and "--resume" in err and err.count("\n") == 1, err
        stops += 1
    assert stops >= 1
    whole, again = final_weights(tmp_path / "whole"), final_weights(out)
    for k in whole:
        assert torch.equal(whole[k], again[k]), k
    a, b = metrics(tmp_path / "whole"), metrics(out)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [(r["val_loss"], r["train_loss"]) for r in a] == [(r["val_loss"], r["train_loss"]) for r in b]


def test_resume_without_config_uses_the_saved_one(corpus_file, tmp_path):
    out = tmp_path / "r"
    assert main(tiny_args(corpus_file, out, steps=10)) == 0
    assert main(["train", "--out", str(out), "--steps", "20", "--resume"]) == 0
    assert metrics(out)[-1]["step"] == 20


def test_two_process_torchrun_matches_one_process(corpus_file, tmp_path):
    """DDP over 2 CPU processes (gloo) follows the single-process loss trajectory for the same global batch."""
    extra = ["train.eval_every=5"]
    single = run_cli(*tiny_args(corpus_file, tmp_path / "one", steps=15, extra=extra + ["train.micro_batch_size=4"]))
    assert single.returncode == 0, single.stderr
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={random.randint(20000, 40000)}", "-m", "nextlab",
        *tiny_args(corpus_file, tmp_path / "two", steps=15, extra=extra),
    ]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout
    one_m, two_m = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in one_m] == [r["step"] for r in two_m] == [0, 5, 10, 15]
    for a, b in zip(one_m, two_m):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        if a["train_loss"] is not None:
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert one_m[-1]["val_loss"] < one_m[0]["val_loss"]


def torchrun_cmd(args, port: int, nproc: int = 2) -> list[str]:
    return [sys.executable, "-u", "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port}", "-m", "nextlab", *args]


TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_nodes_on_loopback_match_one_process(corpus_file, tmp_path):
    """The multi-node recipe of the README: two torchrun launches ("nodes", one process each) meet through a c10d
    rendezvous and train as one 2-process job, following the single-process run."""
    extra = ["train.eval_every=5"]
    single = run_cli(*tiny_args(corpus_file, tmp_path / "one", steps=10, extra=extra + ["train.micro_batch_size=4"]))
    assert single.returncode == 0, single.stderr
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=nextlab-test",
                               "-m", "nextlab", *tiny_args(corpus_file, tmp_path / "two", steps=10, extra=extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=TORCHRUN_ENV) for _ in range(2)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [e[-2000:] for _, e in outs]
    assert sum("2 processes" in o for o, _ in outs) == 1  # one node holds rank 0, which logs
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        assert a["step"] == b["step"] and b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)


def test_sigterm_under_torchrun_stops_every_rank_at_one_step_and_resumes_bitwise(corpus_file, tmp_path):
    """torchrun passes SIGTERM to both ranks; they agree on a step, rank 0 writes the checkpoint, both exit 75,
    and a resumed 2-process run ends with the weights of an uninterrupted one."""
    extra = ["train.eval_every=10", "train.save_every=100"]
    steps = 40
    whole = subprocess.run(torchrun_cmd(tiny_args(corpus_file, tmp_path / "whole", steps=steps, extra=extra), free_port()),
                           capture_output=True, text=True, timeout=300, env=TORCHRUN_ENV)
    assert whole.returncode == 0, whole.stderr[-3000:]

    out = tmp_path / "stopped"
    args = tiny_args(corpus_file, out, steps=steps, extra=extra)
    proc = subprocess.Popen(torchrun_cmd(args, free_port()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=TORCHRUN_ENV)
    line = "-"
    while line and not line.startswith("step      0"):  # training has begun on both ranks
        line = proc.stdout.readline()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "stopped: on SIGTERM at step" in err, err[-3000:]
    saved = sorted((out / "checkpoints").iterdir())
    assert len(saved) == 1 and 0 < int(saved[0].name.split("_")[1]) < steps  # one checkpoint, by rank 0
    resumed = subprocess.run(torchrun_cmd(args + ["--resume"], free_port()), capture_output=True, text=True, timeout=300,
                             env=TORCHRUN_ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = final_weights(tmp_path / "whole"), final_weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["val_loss"] for r in metrics(tmp_path / "whole")] == [r["val_loss"] for r in metrics(out)]


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_a_diverged_run_stops_with_one_line_naming_the_step_and_the_last_good_checkpoint(corpus_file, tmp_path, monkeypatch,
                                                                                         capsys, what):
    """A non-finite loss (or, with a finite loss, a non-finite gradient) at training step 13 stops the run before its
    optimizer step: the error names the step and the checkpoint of step 10, which is left as it was."""
    import torch.nn.functional as F

    real = F.cross_entropy
    calls = {"train": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["train"] += 1
            if calls["train"] == 13:
                return loss * float("nan") if what == "loss" else _InfGrad.apply(loss)
        return loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    out = tmp_path / "run"
    assert main(tiny_args(corpus_file, out, steps=30, extra=["train.save_every=5", "train.keep_last=10"])) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "training diverged at step 13" in err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step_0000010'}" in err
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["step_0000005", "step_0000010"]
    weights = load_file(out / "checkpoints" / "step_0000010" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert main(tiny_args(corpus_file, out, steps=30) + ["--resume"]) == 0  # and the run resumes from it


class _InfGrad(torch.autograd.Function):
    """The identity, whose backward pass is infinite: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_peak_matmul_stops_growing_once_one_matmul_is_slow(monkeypatch):
    """An emulated dtype (bf16 without native support) must not cost a minute per 2048 cube."""
    from nextlab import roofline

    flops, side = roofline.peak_matmul(repeats=1)
    assert flops > 0 and side in (256, 512, 1024, 2048)
    monkeypatch.setattr(roofline, "PEAK_SECONDS", 0.0)
    assert roofline.peak_matmul(repeats=1)[1] == 256
    assert roofline.device_name(torch.device("cpu"))
