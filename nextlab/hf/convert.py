"""`nextlab export` and `nextlab import`: a checkpoint as a Hugging Face model directory, and back.

An export holds `config.json`, `generation_config.json`, `model.safetensors` (float32, Hugging Face names), the
tokenizer files `AutoTokenizer` reads, and `nextlab_tokenizer.json` (so that import gives back the very tokenizer).
Nothing is downloaded either way; what one side cannot express exactly is refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nextlab.checkpoint import load_checkpoint, save_checkpoint
from nextlab.errors import NextlabError
from nextlab.files import give_default_mode, read_json_object
from nextlab.hf.tokenizer import read_tokenizer, write_tokenizer
from nextlab.hf.weights import from_hf_state, hf_config, model_config_from_hf, to_hf_state
from nextlab.model import GPT
from nextlab.tokenizer import is_chat

HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a nextlab checkpoint (or a run's latest) as a Hugging Face model directory `out`; returns it."""
    ckpt = load_checkpoint(checkpoint)
    model, tokenizer, cfg = ckpt.model, ckpt.tokenizer, ckpt.model.cfg
    if is_chat(tokenizer) or cfg.output_vocab:
        raise NextlabError(f"{ckpt.path}: instruction-tuned, and its role markers are input-only (no output row); Llama, "
                           "Qwen3 and GPT-2 give every input token an output row, so the export would give the markers "
                           "probability the model never gives them. Export the base checkpoint instead")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise NextlabError(f"{out}: exists and is not empty; choose a new directory")
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_export(tmp, cfg, model.state_dict(), tokenizer)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:  # never a half-written export under any name
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_export(directory: Path, cfg, state: dict, tokenizer) -> None:
    (directory / "config.json").write_text(json.dumps(hf_config(cfg, tokenizer.eot_id), indent=1))
    generation = {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id, "pad_token_id": tokenizer.eot_id}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=1))
    state = to_hf_state(cfg, state)
    if cfg.arch == "gpt2":  # tied: GPT-2 reads its output layer from the token embedding
        state.pop("lm_head.weight", None)
    save_file(state, str(directory / HF_WEIGHTS), metadata={"format": "pt"})
    give_default_mode(directory / HF_WEIGHTS)  # safetensors writes 0600
    write_tokenizer(tokenizer, directory, cfg.block_size)

def import_checkpoint(directory: str | Path, out: str | Path) -> Path:
    """A local Hugging Face Llama, Qwen3 or GPT-2 directory as a nextlab checkpoint at `out`; returns it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NextlabError(f"{directory}: no such directory (nextlab imports local model directories only; nothing is downloaded)")
    config_path = directory / "config.json"
    hf = read_json_object(config_path)
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise NextlabError(f"{out}: exists and is not an empty directory; choose a new one")
    cfg = model_config_from_hf(hf, str(config_path))
    tokenizer = read_tokenizer(directory)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise NextlabError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size} rows")
    hf_state = {k: v.float() for k, v in read_weights(directory).items()}
    model = GPT(cfg)
    state = from_hf_state(cfg, hf_state, tied=bool(hf.get("tie_word_embeddings", cfg.arch == "gpt2")))
    expected, given = set(model.state_dict()), set(state)
    if expected != given:
        missing, extra = sorted(expected - given), sorted(given - expected)
        raise NextlabError(f"{directory}: the weights do not match config.json (missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise NextlabError(f"{directory}: the weights do not match config.json ({str(e).splitlines()[-1].strip()[:200]})") from None
    info = {"params": model.num_params(), "non_embedding_params": model.num_params(non_embedding=True),
            "imported_from": {"path": str(directory.resolve()), "model_type": hf["model_type"]}}
    return save_checkpoint(out, model, tokenizer, info)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors, or of every shard its index names; pickled weights are refused."""
    index = directory / HF_INDEX
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise NextlabError(f"{index}: not a safetensors index ({e.__class__.__name__})") from None
    elif (directory / HF_WEIGHTS).exists():
        files = [HF_WEIGHTS]
    elif any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise NextlabError(f"{directory}: weights only as pickles (.bin/.pt); nextlab loads safetensors only, never pickles")
    else:
        raise NextlabError(f"{directory}: no {HF_WEIGHTS}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = directory / name
        try:
            state.update(load_file(str(path)))
        except FileNotFoundError:
            raise NextlabError(f"{path}: missing (named by {HF_INDEX})") from None
        except (SafetensorError, OSError) as e:
            raise NextlabError(f"{path}: corrupt or truncated weights ({str(e).splitlines()[0]})") from None
    return state
