"""Checkpoints: the one place that writes and reads a model to and from disk.

A checkpoint is a directory:

    config.json         model config, tokenizer kind, the run's config, step, metrics, nextlab version
    model.safetensors   the weights
    tokenizer.json      the tokenizer (nextlab JSON, or Hugging Face's format for BPE)
    train_state.pt      optimizer, RNG and data-sampler state, step (training checkpoints only;
                        plain tensors and numbers, loaded with torch.load(weights_only=True))

A run directory keeps its checkpoints as `checkpoints/step_XXXXXXX/`. Every
checkpoint is written to a temporary directory, fsynced, then renamed into
place, so a crash never leaves a half-written one under a real name. Anything
that takes a checkpoint path also takes a run directory (its latest checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

import nextlab
from nextlab.errors import NextlabError
from nextlab.files import give_default_mode, read_json_object
from nextlab.model import GPT, ModelConfig
from nextlab.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: Tokenizer
    config: dict  # the contents of config.json
    path: Path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, model: GPT, tokenizer: Tokenizer, info: dict, train_state: dict | None = None) -> Path:
    """Write a checkpoint atomically to `directory` (replacing one already there)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    config = {"nextlab_version": nextlab.__version__, "model": vars(model.cfg).copy(), "tokenizer": tokenizer.kind, **info}
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    save_model(model, str(tmp / WEIGHTS_FILE))
    give_default_mode(tmp / WEIGHTS_FILE)  # safetensors writes 0600
    save_tokenizer(tokenizer, tmp)
    if train_state is not None:
        torch.save(train_state, tmp / STATE_FILE)
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    if directory.exists():
        old = directory.with_name(f".old-{directory.name}-{os.getpid()}")
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old)
    else:
        tmp.rename(directory)
    _fsync(directory.parent)
    return directory


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    d = Path(run_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step_"))


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints; also clear leftovers of writes a crash interrupted."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in (Path(run_dir) / CHECKPOINTS_DIR).glob(".*-step_*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory's latest checkpoint."""
    path = Path(path)
    try:
        if (path / CONFIG_FILE).exists() or (path / WEIGHTS_FILE).exists():
            return path
        found = list_checkpoints(path)
    except PermissionError as e:
        raise NextlabError(f"{path}: cannot read ({e.strerror})") from None
    if found:
        return found[-1]
    if not path.exists():
        raise NextlabError(f"checkpoint {str(path)!r} does not exist")
    raise NextlabError(f"{path}: not a checkpoint (no {CONFIG_FILE}) nor a run directory with checkpoints")


def read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    config = read_json_object(path)
    if not isinstance(config.get("model"), dict):
        raise NextlabError(f"{path}: corrupt (no model section)")
    return config


def model_config_from(config: dict, source: str) -> ModelConfig:
    try:
        cfg = ModelConfig(**config["model"])
    except TypeError as e:
        raise NextlabError(f"{source}: model config does not match this nextlab version ({e})") from None
    problems = cfg.problems()
    if problems:
        raise NextlabError(f"{source}: bad model config: {'; '.join(problems)}")
    return cfg


def load_weights(model: GPT, path: Path) -> None:
    """Load weights into a model of the right shape; any mismatch or corruption names the file."""
    if not path.exists():
        raise NextlabError(f"{path}: missing")
    try:
        load_model(model, str(path), strict=True)
    except (SafetensorError, OSError, ValueError) as e:
        raise NextlabError(f"{path}: corrupt or truncated weights ({str(e).splitlines()[0]})") from None
    except RuntimeError as e:
        msg = str(e).replace("\n", " ")
        raise NextlabError(f"{path}: weights do not match the model config ({msg[:300]})") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """The model (in eval mode), tokenizer and config of a checkpoint or run directory."""
    directory = resolve_checkpoint(path)
    config = read_config(directory)
    cfg = model_config_from(config, str(directory / CONFIG_FILE))
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise NextlabError(f"{directory}: tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}")
    model = GPT(cfg)
    load_weights(model, directory / WEIGHTS_FILE)
    model.to(device).eval()
    return Checkpoint(model, tokenizer, config, directory)


def model_fingerprint(model: GPT, tokenizer: Tokenizer) -> str:
    """SHA-256 of the weights (names, dtypes, shapes, values), the model config and the tokenizer.

    Two models with the same fingerprint compute the same function on the same machine.
    """
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps(vars(model.cfg), sort_keys=True).encode())
    h.update(json.dumps(tokenizer.to_json(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_card(config: dict) -> list[tuple[str, str]]:
    """What a checkpoint is, in plain rows: architecture, parameters, tokenizer, data, tokens seen, loss."""
    m, d = config["model"], config.get("data", {})
    rows = [
        ("architecture", f"{m['arch']}: {m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, context {m['block_size']}"),
        ("parameters", f"{config['params']:,} ({config['non_embedding_params']:,} non-embedding)" if "params" in config else "unknown"),
        ("tokenizer", f"{config['tokenizer']} ({m['vocab_size']} tokens)"),
    ]
    if d:
        rows.append(("training data", f"{d['path']}{' + worlds ' + ', '.join(d['worlds']) if d.get('worlds') else ''}: "
                                      f"{d['documents']:,} documents, {d['train_tokens']:,} train tokens"))
    if "tokens_seen" in config:
        rows.append(("tokens seen", f"{config['tokens_seen']:,} in {config['step']} steps"))
    if config.get("val_loss") is not None:
        rows.append(("validation loss", f"{config['val_loss']:.4f} nats/token, {config['val_bpb']:.3f} bits/byte"))
    for t in config.get("tuning", []):
        rows.append(("tuning", f"{t['method']}: {t['steps']} steps on {t['data']} (from {t['from']})"))
    return rows


def load_train_state(directory: str | Path) -> dict:
    path = Path(directory) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NextlabError(f"{path}: missing (not a training checkpoint)") from None
    except Exception as e:  # torch raises several types for a damaged zip/pickle
        raise NextlabError(f"{path}: corrupt or truncated training state ({e.__class__.__name__})") from None
