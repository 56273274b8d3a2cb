"""Model configs and weights, nextlab <-> Hugging Face transformers, for the three architectures both can express.

- `modern` without QK-norm is Llama (`LlamaForCausalLM`), with QK-norm Qwen3 (`Qwen3ForCausalLM`): nextlab's
  parameter names already follow theirs, so the weights map one to one under a `model.` prefix.
- `gpt2` is GPT-2 (`GPT2LMHeadModel`), with the exact GELU or, as real GPT-2 checkpoints, its tanh form: queries,
  keys and values are one `c_attn` matrix there, every matrix is stored transposed (GPT-2's `Conv1D` computes
  x @ W), and the output layer is tied to the token embedding.

Each direction checks everything the other side could hold that this side cannot compute exactly (a rotary
scaling, biases where nextlab has none, a head size other than width / heads, ...) and refuses it by name:
a model is converted exactly or not at all.
"""

from __future__ import annotations

import torch

from nextlab.errors import NextlabError
from nextlab.model import ModelConfig

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "gpt2": "GPT2LMHeadModel"}
GPT2_ACTIVATIONS = {"exact": "gelu", "tanh": "gelu_new"}  # nextlab's gelu -> transformers' activation_function
# transformers' names for the same tanh approximation (NewGELU and PyTorch's own)
GELU_FROM_HF = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def hf_model_type(cfg: ModelConfig) -> str:
    if cfg.arch == "gpt2":
        return "gpt2"
    return "qwen3" if cfg.qk_norm else "llama"


def hf_config(cfg: ModelConfig, eot_id: int) -> dict:
    """config.json of the Hugging Face model that computes what a nextlab model of `cfg` computes."""
    cfg = cfg.resolved()
    kind = hf_model_type(cfg)
    common = {"architectures": [ARCHITECTURES[kind]], "model_type": kind, "vocab_size": cfg.vocab_size,
              "bos_token_id": eot_id, "eos_token_id": eot_id, "torch_dtype": "float32", "use_cache": True}
    if kind == "gpt2":
        return {**common, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_positions": cfg.block_size,
                "n_inner": cfg.mlp_hidden, "activation_function": GPT2_ACTIVATIONS[cfg.gelu], "layer_norm_epsilon": cfg.norm_eps,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True,
                "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "tie_word_embeddings": True}
    out = {**common, "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden, "num_hidden_layers": cfg.n_layer,
           "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
           "hidden_act": "silu", "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
           # both spellings: transformers 5 reads rope_parameters, 4.x rope_theta
           "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
           "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False, "initializer_range": 0.02}
    if kind == "llama":
        out |= {"mlp_bias": False, "pretraining_tp": 1}
    else:
        out |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.n_layer}
    return out


def to_hf_state(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nextlab weights under Hugging Face names (contiguous float32 copies)."""
    if cfg.arch != "gpt2":
        return {(k if k == "lm_head.weight" else f"model.{_modern_to_hf(k)}"): v.float().contiguous().clone() for k, v in state.items()}
    if not cfg.bias:  # GPT-2 always has biases: a model without them has zeros there
        state = state | {k.removesuffix("weight") + "bias": torch.zeros(v.size(0), dtype=v.dtype) for k, v in state.items()
                         if k.endswith(("_proj.weight", "norm.weight"))}
    out = {f"transformer.{theirs}": state[ours] for ours, theirs in _GPT2_TOP}
    for i in range(cfg.n_layer):
        ours, theirs = f"layers.{i}.", f"transformer.h.{i}."
        out[f"{theirs}attn.c_attn.weight"] = torch.cat([state[f"{ours}attn.{p}_proj.weight"] for p in "qkv"]).T
        out[f"{theirs}attn.c_attn.bias"] = torch.cat([state[f"{ours}attn.{p}_proj.bias"] for p in "qkv"])
        for name, hf_name, transposed in _GPT2_LAYER:
            w = state[ours + name]
            out[theirs + hf_name] = w.T if transposed else w
    return {k: v.float().contiguous().clone() for k, v in out.items()}


# GPT-2's names for nextlab's (beside c_attn, which holds q, k and v): whole model, then per layer, with whether
# GPT-2 stores the matrix transposed (its Conv1D computes x @ W)
_GPT2_TOP = (("embed_tokens.weight", "wte.weight"), ("embed_positions.weight", "wpe.weight"), ("norm.weight", "ln_f.weight"),
             ("norm.bias", "ln_f.bias"))
_GPT2_LAYER = tuple((f"{ours}.{kind}", f"{theirs}.{kind}", transposed and kind == "weight")
                    for ours, theirs, transposed in (("attn.o_proj", "attn.c_proj", True), ("mlp.up_proj", "mlp.c_fc", True),
                                                     ("mlp.down_proj", "mlp.c_proj", True), ("attn_norm", "ln_1", False),
                                                     ("mlp_norm", "ln_2", False))
                    for kind in ("weight", "bias"))
_MODERN_NAMES = (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm"), (".attn.", ".self_attn."))


def _modern_to_hf(name: str) -> str:
    for ours, theirs in _MODERN_NAMES:
        name = name.replace(ours, theirs)
    return name


def _modern_from_hf(name: str) -> str:
    for ours, theirs in _MODERN_NAMES:
        name = name.replace(theirs, ours)
    return name


def _need(hf: dict, key: str, source: str):
    if key not in hf:
        raise NextlabError(f"{source}: config.json has no {key!r}")
    return hf[key]


def _refuse(source: str, what: str) -> None:
    raise NextlabError(f"{source}: {what}, which nextlab cannot compute exactly; not imported")


def model_config_from_hf(hf: dict, source: str) -> ModelConfig:
    """The nextlab config of a Hugging Face Llama, Qwen3 or GPT-2 config.json; anything else is refused by name."""
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise NextlabError(f"{source}: model_type {kind!r} is not one nextlab can import (llama, qwen3, gpt2)")
    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in GELU_FROM_HF:
            _refuse(source, f"activation_function is {act!r} (nextlab's gpt2 preset has {', '.join(GELU_FROM_HF)})")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                _refuse(source, f"{flag} is set")
        if hf.get("scale_attn_weights", True) is not True:
            _refuse(source, "scale_attn_weights is off")
        if hf.get("tie_word_embeddings", True) is not True:
            _refuse(source, "the output layer is untied from the embedding (nextlab's gpt2 preset ties them)")
        n_embd = _need(hf, "n_embd", source)
        return ModelConfig(arch="gpt2", vocab_size=_need(hf, "vocab_size", source), block_size=_need(hf, "n_positions", source),
                           n_layer=_need(hf, "n_layer", source), n_head=_need(hf, "n_head", source), n_embd=n_embd,
                           mlp_hidden=hf.get("n_inner") or 4 * n_embd, norm_eps=hf.get("layer_norm_epsilon", 1e-5), dropout=0.0,
                           gelu=GELU_FROM_HF[act])
    hidden, heads = _need(hf, "hidden_size", source), _need(hf, "num_attention_heads", source)
    head_dim = hf.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        _refuse(source, f"head_dim {head_dim} x {heads} heads is not hidden_size {hidden}")
    if hf.get("hidden_act", "silu") != "silu":
        _refuse(source, f"hidden_act is {hf['hidden_act']!r}")
    for flag in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if hf.get(flag):
            _refuse(source, f"{flag} is set")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        _refuse(source, f"the rotary positions are scaled ({rope_type!r})")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        _refuse(source, "only part of each head is rotated (partial_rotary_factor)")
    return ModelConfig(arch="modern", vocab_size=_need(hf, "vocab_size", source),
                       block_size=_need(hf, "max_position_embeddings", source), n_layer=_need(hf, "num_hidden_layers", source),
                       n_head=heads, n_kv_head=hf.get("num_key_value_heads") or heads, n_embd=hidden,
                       mlp_hidden=_need(hf, "intermediate_size", source), qk_norm=kind == "qwen3", rope_theta=float(theta),
                       norm_eps=hf.get("rms_norm_eps", 1e-6), dropout=0.0)


def from_hf_state(cfg: ModelConfig, hf_state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """Hugging Face weights under nextlab names; a tied Llama/Qwen3 output layer becomes an untied copy (same values)."""
    if cfg.arch != "gpt2":
        state = {(k if k == "lm_head.weight" else _modern_from_hf(k.removeprefix("model."))): v for k, v in hf_state.items()}
        if "lm_head.weight" not in state and tied:
            state["lm_head.weight"] = state["embed_tokens.weight"].clone()
        return state
    s = {k.removeprefix("transformer."): v for k, v in hf_state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    out = {ours: s[theirs] for ours, theirs in _GPT2_TOP} | {"lm_head.weight": s["wte.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"layers.{i}.", f"h.{i}."
        for p, w, b in zip("qkv", s[f"{theirs}attn.c_attn.weight"].T.chunk(3), s[f"{theirs}attn.c_attn.bias"].chunk(3)):
            out[f"{ours}attn.{p}_proj.weight"], out[f"{ours}attn.{p}_proj.bias"] = w, b
        for name, hf_name, transposed in _GPT2_LAYER:
            w = s[theirs + hf_name]
            out[ours + name] = w.T if transposed else w
    return {k: v.contiguous() for k, v in out.items()}
