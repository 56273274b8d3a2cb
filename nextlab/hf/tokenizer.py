"""Tokenizers, nextlab <-> Hugging Face: a `tokenizers` JSON that gives exactly nextlab's ids, and back.

Export builds, with the `tokenizers` library, a tokenizer that `AutoTokenizer.from_pretrained` loads and that
encodes any text to the ids nextlab's tokenizer gives:

- `bytes`: a BPE with no merges over GPT-2's byte-level alphabet, the byte b as id b, `<|endoftext|>` as 256.
- `chars`: a BPE with no merges over the characters, in nextlab's order, with byte fallback: a character outside
  the vocabulary becomes its UTF-8 bytes as the tokens `<0x00>`..`<0xFF>`, ids byte_base + b, as in nextlab.
- `bpe`: nextlab's BPE is a `tokenizers` byte-level BPE already; it is written as it is.

Each gets a post-processor that puts `<|endoftext|>` before a text when special tokens are asked for (transformers'
default): in nextlab a prompt starts a document, which follows end-of-text, and so the model is scored and sampled.

nextlab never turns the text "<|endoftext|>" into the special token (only its data pipeline puts one in), so
`tokenizer_config.json` sets `split_special_tokens`: the exported tokenizer does the same.

Import takes back what export wrote (`nextlab_tokenizer.json`, the exact nextlab tokenizer) or any byte-level BPE
with an `<|endoftext|>` token (GPT-2's, Qwen's); other tokenizers are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from nextlab.errors import NextlabError
from nextlab.files import read_json_object
from nextlab.tokenizer import EOT, BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer, byte_level_inverse, tokenizer_from_json

NEXTLAB_TOKENIZER_FILE = "nextlab_tokenizer.json"  # the nextlab tokenizer itself, beside the Hugging Face files


def _byte_level_char() -> dict[int, str]:
    return {b: c for c, b in byte_level_inverse().items()}


def _eot_token(eot_id: int) -> dict:
    return {"id": eot_id, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True}


def hf_tokenizer_json(tokenizer: Tokenizer) -> str:
    """tokenizer.json (the `tokenizers` format) encoding text to exactly `tokenizer`'s ids."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    if isinstance(tokenizer, BPETokenizer):
        hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    elif isinstance(tokenizer, ByteTokenizer):
        hf = HFTokenizer(models.BPE(vocab={c: b for b, c in _byte_level_char().items()} | {EOT: tokenizer.eot_id}, merges=[]))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
    elif isinstance(tokenizer, CharTokenizer):
        vocab = ({c: i for i, c in enumerate(tokenizer.chars)} | {EOT: tokenizer.eot_id}
                 | {f"<0x{b:02X}>": tokenizer.byte_base + b for b in range(256)})
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
        hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    else:
        raise NextlabError(f"no Hugging Face form for a {tokenizer.kind!r} tokenizer")
    hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    if hf.token_to_id(EOT) != tokenizer.eot_id:
        raise NextlabError(f"exporting the {tokenizer.kind} tokenizer put {EOT} at id {hf.token_to_id(EOT)}, not {tokenizer.eot_id}")
    # a text starts a document, as in nextlab: with special tokens (transformers' default) it follows end-of-text
    hf.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B",
                                                      special_tokens=[(EOT, tokenizer.eot_id)])
    return hf.to_str()


def hf_tokenizer_config(tokenizer: Tokenizer, block_size: int) -> dict:
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT, "unk_token": None,
            "pad_token": EOT, "model_max_length": block_size, "split_special_tokens": True,
            "clean_up_tokenization_spaces": False}


def write_tokenizer(tokenizer: Tokenizer, directory: Path, block_size: int) -> None:
    (directory / "tokenizer.json").write_text(hf_tokenizer_json(tokenizer))
    (directory / "tokenizer_config.json").write_text(json.dumps(hf_tokenizer_config(tokenizer, block_size), indent=1))
    (directory / "special_tokens_map.json").write_text(json.dumps({"bos_token": EOT, "eos_token": EOT, "pad_token": EOT}, indent=1))
    (directory / NEXTLAB_TOKENIZER_FILE).write_text(json.dumps(tokenizer.to_json(), ensure_ascii=False))


def read_tokenizer(directory: Path) -> Tokenizer:
    """The nextlab tokenizer of a Hugging Face directory: the exact one export wrote, or a byte-level BPE with <|endoftext|>."""
    ours = directory / NEXTLAB_TOKENIZER_FILE
    if ours.exists():
        return tokenizer_from_json(read_json_object(ours), str(ours))
    path = directory / "tokenizer.json"
    if not path.exists():
        raise NextlabError(f"{directory}: no tokenizer.json (nextlab reads the `tokenizers` format; "
                           "a sentencepiece tokenizer.model alone is not imported)")
    obj = read_json_object(path)
    model = obj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise NextlabError(f"{path}: a {model.get('type')!r} tokenizer; nextlab imports byte-level BPE tokenizers only")
    alphabet = byte_level_inverse()
    odd = next((t for t in model["vocab"] if any(c not in alphabet for c in t)), None)
    if odd is not None:
        raise NextlabError(f"{path}: not a byte-level BPE (the token {odd!r} is not written in the byte-level alphabet); "
                           "nextlab imports byte-level BPE tokenizers only")
    specials = {t["content"]: t["id"] for t in obj.get("added_tokens", [])}
    if EOT not in specials and EOT not in model["vocab"]:
        raise NextlabError(f"{path}: no {EOT} token, which nextlab uses to separate documents")
    return tokenizer_from_json(obj, str(path))
