"""Run configuration: dataclasses, read from TOML and `--set key=value` overrides.

A run config has three sections, `[model]`, `[data]` and `[train]`, plus the
top-level `out`. Every key is checked: an unknown key names the closest valid
ones, a wrong type names the expected type, an impossible value says why.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from nextlab.errors import NextlabError
from nextlab.model import ModelConfig

TOKENIZERS = ("bytes", "chars", "bpe")
OPTIMIZERS = ("muon", "adamw")
SCHEDULES = ("cosine", "wsd", "constant")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class DataConfig:
    path: str = "stdlib"  # a text file, a folder, a glob, "stdlib" (the built-in corpus), or "" for none
    tokenizer: str = "bytes"  # bytes | chars | bpe
    bpe_vocab_size: int = 4096
    val_fraction: float = 0.1
    # Generated text with a known generator, mixed in: {name = weight} or {name = {weight = w, knob = value}}.
    worlds: dict = field(default_factory=dict)
    world_bytes: int = 2_000_000  # how much world text to generate (train and validation together)
    world_seed: int = 0


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # sequences per optimizer step, summed over processes and accumulation
    micro_batch_size: int = 0  # sequences per forward pass per process; 0 = batch_size / processes
    optimizer: str = "muon"  # muon (hidden matrices) + adamw (the rest), or adamw for all
    lr: float = 3e-3  # AdamW learning rate (all parameters, or embeddings/norms/head under muon)
    muon_lr: float = 0.02
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    decay_fraction: float = 0.3  # wsd: share of steps spent decaying
    grad_clip: float = 1.0  # 0 disables
    eval_every: int = 100
    eval_windows: int = 256  # size of the fixed validation set, in windows
    eval_context: int = 0  # tokens per validation window; 0 = model.block_size (set it to compare runs of other contexts)
    eval_world_docs: int = 64  # whole held-out documents per world scored at each evaluation (0 = none)
    eval_tasks: list = field(default_factory=list)  # task names (nextlab.evals) scored during training
    eval_tasks_every: int = 0  # steps between task evaluations; 0 = eval_every
    eval_task_items: int = 32  # items per task at each of those evaluations
    eval_task_shots: int = 0  # k solved examples before each item
    eval_tasks_at: list = field(default_factory=list)  # more steps to evaluate at (loss, tasks), e.g. log-spaced
    save_every: int = 0  # 0 = only the final checkpoint
    keep_last: int = 2
    seed: int = 1337
    device: str = "cpu"  # cpu | cuda | mps | auto
    dtype: str = "auto"  # auto (bf16 where it is faster) | float32 | bfloat16
    threads: int = 0  # torch threads; 0 = leave PyTorch's default
    progress: bool = True


@dataclass
class RunConfig:
    out: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def problems(self) -> list[str]:
        out = self.model.problems()
        d, t = self.data, self.train
        if d.tokenizer not in TOKENIZERS:
            out.append(f"data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {d.tokenizer!r}")
        if not d.path and not d.worlds:
            out.append("data.path is empty and data.worlds names no world: there is nothing to train on")
        if d.worlds and d.world_bytes < 1000:
            out.append(f"data.world_bytes must be at least 1000, got {d.world_bytes}")
        if not 0.0 < d.val_fraction < 1.0:
            out.append(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if t.optimizer not in OPTIMIZERS:
            out.append(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
        if t.schedule not in SCHEDULES:
            out.append(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {t.schedule!r}")
        if t.dtype not in DTYPES:
            out.append(f"train.dtype must be one of {', '.join(DTYPES)}, got {t.dtype!r}")
        for name in ("steps", "batch_size", "eval_every", "eval_windows", "keep_last"):
            if getattr(t, name) < 1:
                out.append(f"train.{name} must be at least 1, got {getattr(t, name)}")
        if t.eval_context > self.model.block_size:
            out.append(f"train.eval_context ({t.eval_context}) cannot exceed model.block_size ({self.model.block_size})")
        for name in ("micro_batch_size", "warmup_steps", "save_every", "threads", "eval_context", "eval_world_docs",
                     "eval_tasks_every", "eval_task_items", "eval_task_shots"):
            if getattr(t, name) < 0:
                out.append(f"train.{name} must be at least 0, got {getattr(t, name)}")
        for name in ("lr", "muon_lr"):
            if getattr(t, name) <= 0:
                out.append(f"train.{name} must be positive, got {getattr(t, name)}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in t.eval_tasks_at):
            out.append(f"train.eval_tasks_at must be a list of steps (integers >= 0), got {t.eval_tasks_at!r}")
        if not 0.0 <= t.min_lr_ratio <= 1.0:
            out.append(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
        return out

    def check(self) -> RunConfig:
        problems = self.problems()
        if problems:
            raise NextlabError("bad config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _expected_type(hint) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint) if t is not type(None))
    return (hint,)


def _coerce(key: str, value, hint):
    """Check a TOML value against a dataclass field's type (ints are accepted for floats)."""
    expected = _expected_type(hint)
    if float in expected and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if bool not in expected and isinstance(value, bool):
        raise NextlabError(f"config key {key!r}: expected {' or '.join(t.__name__ for t in expected)}, got a boolean")
    if not isinstance(value, expected):
        raise NextlabError(
            f"config key {key!r}: expected {' or '.join(t.__name__ for t in expected)}, got {type(value).__name__} {value!r}"
        )
    return value


def _unknown_key(key: str, valid: list[str]) -> NextlabError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; valid keys: {', '.join(valid)}"
    return NextlabError(f"unknown config key {key!r}{hint}")


def _apply(obj, values: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _unknown_key(full, names)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise NextlabError(f"config key {full!r}: expected a table [{full}], got {value!r}")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(full, value, hints[key]))


def parse_override(text: str) -> tuple[list[str], object]:
    """`train.lr=1e-3` -> (["train", "lr"], 0.001); values are read as TOML, bare words as strings."""
    if "=" not in text:
        raise NextlabError(f"--set {text!r}: expected key=value, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string such as model.arch=gpt2
    return key.split("."), value


def nest(path: list[str], value) -> dict:
    out: dict = {}
    node = out
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = (), **sections) -> RunConfig:
    """Build a RunConfig: defaults, then the TOML file, then `sections` dicts, then `--set` overrides."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise NextlabError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise NextlabError(f"{path}: cannot read config ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise NextlabError(f"{path}: invalid TOML ({e})") from None
        _apply(cfg, data)
    for section, values in sections.items():
        if values:
            _apply(cfg, {section: values})
    for text in overrides:
        keys, value = parse_override(text)
        _apply(cfg, nest(keys, value))
    return cfg


def config_from_dict(values: dict) -> RunConfig:
    cfg = RunConfig()
    _apply(cfg, values)
    return cfg
