"""Hugging Face interop: exported checkpoints open in transformers and compute what nextlab computes (logits,
tokenizer ids, greedy generation); local transformers models import exactly; what cannot be expressed is refused.
Everything is made here with random weights; nothing is downloaded."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nextlab.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from nextlab.cli import main  # noqa: E402
from nextlab.errors import NextlabError  # noqa: E402
from nextlab.hf import export_checkpoint, import_checkpoint  # noqa: E402
from nextlab.hf.tokenizer import NEXTLAB_TOKENIZER_FILE, hf_tokenizer_json  # noqa: E402
from nextlab.model import GPT, ModelConfig  # noqa: E402
from nextlab.sample import greedy_continuations  # noqa: E402
from nextlab.tokenizer import ChatTokenizer, train_tokenizer  # noqa: E402

CORPUS = ["def f(x):\n    return x + 1\n", "the quick brown fox jumps over the lazy dog", "23 + 58 = 81"] * 10
HOSTILE = ["", "plain text", "<|endoftext|> typed as text", "naïve café, 日本語, emoji 🙂, \u0301combining",
           "tabs\tand\r\nnewlines\n\n  spaces  ", "\x00 NUL and \x7f DEL", "<0x41> looks like a byte token"]


def random_checkpoint(path, arch="modern", kind="bytes", qk_norm=True, n_kv_head=0, gelu="exact", seed=0, bias=True):
    """A small model whose every weight is random (the modern init zeroes some, which would hide a mistake)."""
    torch.manual_seed(seed)
    tok = train_tokenizer(kind, CORPUS, 300)
    cfg = ModelConfig(arch=arch, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64,
                      block_size=64, qk_norm=qk_norm, gelu=gelu, bias=bias)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_checkpoint(path, model, tok, {})
    return model.eval(), tok


CASES = {"llama-bytes-gqa": ("modern", "bytes", False, 2, "exact", True), "qwen3-chars": ("modern", "chars", True, 0, "exact", True),
         "qwen3-bpe-gqa": ("modern", "bpe", True, 1, "exact", True), "gpt2-bpe": ("gpt2", "bpe", False, 0, "exact", True),
         "gpt2-bytes-tanh": ("gpt2", "bytes", False, 0, "tanh", True),
         "gpt2-chars-no-bias": ("gpt2", "chars", False, 0, "exact", False)}  # nanoGPT's bias = False: zeros in GPT-2


@pytest.mark.parametrize("case", list(CASES))
def test_an_export_computes_what_nextlab_computes(case, tmp_path):
    arch, kind, qk_norm, n_kv_head, gelu, bias = CASES[case]
    model, tok = random_checkpoint(tmp_path / "ckpt", arch, kind, qk_norm, n_kv_head, gelu, bias=bias)
    if not bias:
        assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == {"modern": "qwen3" if qk_norm else "llama", "gpt2": "gpt2"}[arch]
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    # the tokenizer: the same ids for any text, the same text back, the end-of-text token where nextlab has it
    for text in HOSTILE + CORPUS[:3]:
        ids = tok.encode(text)
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids, text
        assert hf_tok.decode(ids) == tok.decode(ids)
    assert hf_tok.eos_token_id == tok.eot_id and hf_tok.convert_ids_to_tokens(tok.eot_id) == "<|endoftext|>"
    # by default a text starts a document, as in nextlab: it follows end-of-text
    assert hf_tok("the quick")["input_ids"] == [tok.eot_id] + tok.encode("the quick")
    # the logits, fp32, on a batch of real token ids
    ids = torch.tensor([([tok.eot_id] + tok.encode(t * 8))[:40] for t in CORPUS[:3]])
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(ids).logits
    assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() < 1e-4
    # greedy generation with the KV cache on both sides
    prompt = [tok.eot_id] + tok.encode("the quick")
    x = torch.tensor([prompt])  # the mask is given: transformers would take the leading end-of-text for padding
    generated = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False, eos_token_id=None,
                            pad_token_id=tok.eot_id)
    assert generated[0, len(prompt):].tolist() == greedy_continuations(model, tok, [prompt], [24])[0]
    # import of the export, then export again: the very same weight file, and the very same tokenizer
    back = import_checkpoint(out, tmp_path / "back")
    assert load_checkpoint(back).tokenizer.to_json() == tok.to_json()
    again = export_checkpoint(back, tmp_path / "hf2")
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def save_hf(model, directory, tok):
    """A transformers model as a plain Hugging Face directory: its safetensors, and a byte-level BPE tokenizer.json
    (no nextlab_tokenizer.json: the import reads the Hugging Face tokenizer)."""
    model.save_pretrained(directory)
    (directory / "tokenizer.json").write_text(hf_tokenizer_json(tok))
    return directory


def tiny_hf_configs(vocab_size):
    c = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 64}
    return {
        "llama": transformers.LlamaConfig(**c, tie_word_embeddings=False),
        "llama-tied": transformers.LlamaConfig(**c, tie_word_embeddings=True),
        "qwen3": transformers.Qwen3Config(**c, head_dim=16, tie_word_embeddings=False),
        "gpt2": transformers.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                        activation_function="gelu"),
        # GPT-2's own tanh GELU (transformers' default for GPT-2, and what real GPT-2 checkpoints use)
        "gpt2-tanh": transformers.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=64),
    }


@pytest.mark.parametrize("name", ["llama", "llama-tied", "qwen3", "gpt2", "gpt2-tanh"])
def test_a_transformers_model_imports_exactly(name, tmp_path):
    tok = train_tokenizer("bpe", CORPUS, 300)
    torch.manual_seed(1)
    hf = transformers.AutoModelForCausalLM.from_config(tiny_hf_configs(tok.vocab_size)[name]).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = save_hf(hf, tmp_path / "hf", tok)
    assert not (directory / NEXTLAB_TOKENIZER_FILE).exists()
    assert main(["import", str(directory), str(tmp_path / "ours")]) == 0
    ckpt = load_checkpoint(tmp_path / "ours")
    assert ckpt.tokenizer.encode(CORPUS[0]) == tok.encode(CORPUS[0])
    ids = torch.tensor([[tok.eot_id] + tok.encode(CORPUS[0] + CORPUS[1])[:50]])
    with torch.no_grad():
        assert (ckpt.model(ids)[0] - hf(ids).logits).abs().max().item() < 1e-4


def refusal(tmp_path, config, tok=None, weights=True):
    tok = tok or train_tokenizer("bpe", CORPUS, 300)
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    if weights:
        (d / "model.safetensors").write_bytes(b"")
    (d / "tokenizer.json").write_text(hf_tokenizer_json(tok))
    with pytest.raises(NextlabError) as e:
        import_checkpoint(d, tmp_path / "out")
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("change, says", [
    ({"model_type": "mistral"}, "model_type 'mistral' is not one nextlab can import"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "the rotary positions are scaled ('llama3')"),
    ({"attention_bias": True}, "attention_bias is set"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
    ({"head_dim": 32}, "head_dim 32 x 4 heads is not hidden_size 64"),
])
def test_what_nextlab_cannot_compute_exactly_is_refused_by_name(change, says, tmp_path):
    config = {"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "max_position_embeddings": 64, **change}
    assert says in refusal(tmp_path, config)


def test_gpt2_with_another_activation_is_refused_and_pickles_are_never_loaded(tmp_path):
    gpt2 = {"model_type": "gpt2", "vocab_size": 300, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}
    assert "activation_function is 'relu'" in refusal(tmp_path, {**gpt2, "activation_function": "relu"})
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**gpt2, "activation_function": "gelu"}))
    (d / "pytorch_model.bin").write_bytes(b"not read")
    (d / "tokenizer.json").write_text(hf_tokenizer_json(train_tokenizer("bpe", CORPUS, 300)))
    with pytest.raises(NextlabError, match="nextlab loads safetensors only, never pickles"):
        import_checkpoint(d, tmp_path / "out")


def test_tokenizers_that_are_not_byte_level_bpe_are_refused(tmp_path):
    from tokenizers import Tokenizer, models

    unigram = Tokenizer(models.Unigram([("▁a", -1.0), ("b", -2.0)]))
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
                                               "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}))
    (d / "tokenizer.json").write_text(unigram.to_str())
    with pytest.raises(NextlabError, match="a 'Unigram' tokenizer; nextlab imports byte-level BPE tokenizers only"):
        import_checkpoint(d, tmp_path / "out")


def test_a_chat_model_and_an_occupied_directory_are_refused_on_export(tmp_path, capsys):
    model, tok = random_checkpoint(tmp_path / "base")
    chat = ChatTokenizer(tok)
    cfg = ModelConfig(**{**vars(model.cfg), "vocab_size": chat.vocab_size, "output_vocab": tok.vocab_size})
    save_checkpoint(tmp_path / "chat", GPT(cfg), chat, {})
    assert main(["export", str(tmp_path / "chat"), str(tmp_path / "out")]) == 2
    assert "role markers are input-only" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["export", str(tmp_path / "base"), str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (tmp_path / "full" / "keep.txt").read_text() == "mine"
