"""Tokenizers: text <-> token ids, saved with every checkpoint.

Three kinds, one small interface (`encode`, `decode`, `vocab_size`, `eot_id`,
`save`, and `load_tokenizer`):

- `bytes`: the 256 byte values plus `<|endoftext|>`. Lossless on any input.
- `chars`: one token per character seen in the corpus, plus `<|endoftext|>`,
  plus a byte fallback: a character not in the vocabulary is encoded as its
  UTF-8 bytes (256 extra tokens), so encoding never fails and never loses data.
  This is the choice for char-level corpora such as Shakespeare: the model still
  sees 65 "real" characters, and any prompt can still be typed.
- `bpe`: byte-level BPE trained with Hugging Face `tokenizers`. Lossless.

`encode_bytes` tokenizes arbitrary bytes (not only valid UTF-8) so that
`decode_bytes(encode_bytes(data)) == data`; the compressor relies on it.
`decode` of ids that do not form valid UTF-8 (a model can sample half a
character) replaces the broken bytes with U+FFFD; `decode_bytes` gives the raw
bytes.

`ChatTokenizer` wraps any of the three with the chat role markers; the chat
format (conversations as tokens, and which positions tuning trains) is at the
end of this file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from nextlab.errors import NextlabError
from nextlab.files import read_json_object

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"


class ByteTokenizer:
    kind = "bytes"

    def __init__(self) -> None:
        self.eot_id = 256
        self.vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(data)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        return EOT if i == self.eot_id else bytes([i]).decode("utf-8", errors="backslashreplace")

    def to_json(self) -> dict:
        return {"nextlab_tokenizer": "bytes"}


class CharTokenizer:
    kind = "chars"

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.eot_id = len(self.chars)
        self.byte_base = self.eot_id + 1  # ids byte_base..byte_base+255 are raw bytes
        self.vocab_size = self.byte_base + 256

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        ids = []
        for c in text:
            i = self.index.get(c)
            if i is None:
                ids.extend(self.byte_base + b for b in c.encode("utf-8"))
            else:
                ids.append(i)
        return ids

    def encode_bytes(self, data: bytes) -> list[int]:
        return _encode_any_bytes(data, self.encode, lambda b: self.byte_base + b)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        out = bytearray()
        for i in ids:
            if i < self.eot_id:
                out += self.chars[i].encode("utf-8")
            elif i >= self.byte_base:
                out.append(i - self.byte_base)
        return bytes(out)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        if i < self.eot_id:
            return self.chars[i]
        if i == self.eot_id:
            return EOT
        return f"<0x{i - self.byte_base:02X}>"

    def to_json(self) -> dict:
        return {"nextlab_tokenizer": "chars", "chars": self.chars}


class BPETokenizer:
    kind = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        # "<|endoftext|>" typed in a text is text; the special token comes only from the data pipeline.
        self.hf.encode_special_tokens = True
        self.eot_id = hf_tokenizer.token_to_id(EOT)
        self.vocab_size = hf_tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257 + 1:
            raise NextlabError(f"bpe vocab_size must be at least 258 (256 bytes + {EOT} + 1 merge), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_bytes(self, data: bytes) -> list[int]:
        byte_token = {b: self.hf.token_to_id(c) for c, b in byte_level_inverse().items()}
        return _encode_any_bytes(data, self.encode, byte_token.__getitem__)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        # The byte-level alphabet maps each byte to one printable char; undo it exactly.
        table = byte_level_inverse()
        out = bytearray()
        for i in ids:
            if i == self.eot_id:
                continue
            out += bytes(table[c] for c in self.hf.id_to_token(i))
        return bytes(out)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        if i == self.eot_id:
            return EOT
        return self.decode_bytes([i]).decode("utf-8", errors="backslashreplace")

    def to_json(self) -> dict:
        return json.loads(self.hf.to_str())


_BYTE_LEVEL_INVERSE: dict[str, int] | None = None
_ESCAPES = re.compile("([\udc80-\udcff]+)")  # bytes that `surrogateescape` could not decode


def _encode_any_bytes(data: bytes, encode, byte_id) -> list[int]:
    """Valid UTF-8 runs through the tokenizer's `encode`; each byte that is not valid UTF-8 as `byte_id(byte)`."""
    ids = []
    for run in _ESCAPES.split(data.decode("utf-8", errors="surrogateescape")):
        if run and "\udc80" <= run[0] <= "\udcff":
            ids.extend(byte_id(ord(c) - 0xDC00) for c in run)
        elif run:
            ids.extend(encode(run))
    return ids


def token_pieces(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, in order ("" while a UTF-8 character is incomplete); they join to decode(ids)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(tokenizer.decode_bytes([i])) for i in ids]
    if pieces:
        pieces[-1] += decoder.decode(b"", final=True)
    return pieces


def byte_level_inverse() -> dict[str, int]:
    """GPT-2's bytes_to_unicode table, inverted (char -> byte)."""
    global _BYTE_LEVEL_INVERSE
    if _BYTE_LEVEL_INVERSE is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_LEVEL_INVERSE = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTE_LEVEL_INVERSE


class ChatTokenizer:
    """A text tokenizer plus the chat role markers, as ids after its own (the chat format: see below).

    Text is tokenized exactly as by the base tokenizer and never turns into a marker,
    whatever it contains: only the chat formatter puts markers in, so a user cannot
    forge a turn by typing "<|assistant|>".
    """

    ROLES = ("<|user|>", "<|assistant|>")

    def __init__(self, base: ByteTokenizer | CharTokenizer | BPETokenizer) -> None:
        self.base = base
        self.kind = base.kind
        self.eot_id = base.eot_id
        self.user_id, self.assistant_id = base.vocab_size, base.vocab_size + 1
        self.vocab_size = base.vocab_size + len(self.ROLES)

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text)

    def encode_bytes(self, data: bytes) -> list[int]:
        return self.base.encode_bytes(data)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.base.decode_bytes([i for i in ids if i < self.base.vocab_size])

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        return self.ROLES[i - self.base.vocab_size] if i >= self.base.vocab_size else self.base.token_str(i)

    def to_json(self) -> dict:
        return {"nextlab_tokenizer": "chat", "roles": list(self.ROLES), "base": self.base.to_json()}


Tokenizer = ByteTokenizer | CharTokenizer | BPETokenizer | ChatTokenizer
KINDS = ("bytes", "chars", "bpe")

# The chat format. A conversation is a list of messages {"role": "user" | "assistant", "content": str},
# alternating and starting with the user (OpenAI's message shape). As tokens:
#
#     <|endoftext|> <|user|> What is 37 plus 45? <|assistant|> 82 <|endoftext|> <|user|> ...
#
# - The role markers are input-only: the model reads them but never predicts them, so its output
#   layer does not grow (ModelConfig.output_vocab; nextlab/tune/chat.py adds their embeddings).
# - An assistant turn ends with the end-of-text token the model already predicts at the end of every
#   document. A new end-of-turn output token would need a new output row, and any new row moves every
#   probability of the base model (softmax renormalizes); reusing end-of-text leaves the base model's
#   predictions on ordinary text exactly as they were until tuning starts.
# - Training signal: only the assistant's tokens and the end-of-text that closes its turn are
#   predicted in the loss; the user's words and the markers are context.

IGNORE = -100  # target of a position the loss skips (F.cross_entropy's ignore_index)


def is_chat(tokenizer: Tokenizer) -> bool:
    return isinstance(tokenizer, ChatTokenizer)


def check_messages(messages, where: str = "conversation") -> list[dict]:
    """The messages, checked: a non-empty list of {role, content}, user first, roles alternating."""
    if not isinstance(messages, list) or not messages:
        raise NextlabError(f"{where}: messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content", "name"} or not isinstance(m.get("content"), str):
            raise NextlabError(f"{where}: message {i} must be {{\"role\": ..., \"content\": \"...\"}}, got {m!r:.80}")
        want = ("user", "assistant")[i % 2]
        if m.get("role") != want:
            raise NextlabError(f"{where}: message {i} has role {m.get('role')!r}; turns alternate user, assistant, ... "
                               f"starting with the user, so it should be {want!r}")
    return messages


def render_chat(tokenizer: ChatTokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and the training target of each position (IGNORE where not trained).

    targets[t] is what position t predicts: ids[t + 1] inside an assistant turn (and its
    closing end-of-text), IGNORE elsewhere; len(targets) == len(ids) - 1.
    """
    ids, trained = [tokenizer.eot_id], [False]
    for m in messages:
        if m["role"] == "user":
            part = [tokenizer.user_id] + tokenizer.encode(m["content"]) + [tokenizer.assistant_id]
            ids += part
            trained += [False] * len(part)
        else:
            part = tokenizer.encode(m["content"]) + [tokenizer.eot_id]
            ids += part
            trained += [True] * len(part)
    targets = [ids[t + 1] if trained[t + 1] else IGNORE for t in range(len(ids) - 1)]
    return ids, targets


def chat_prompt_ids(tokenizer: ChatTokenizer, messages: list[dict], block_size: int | None = None) -> list[int]:
    """The tokens that ask for the next assistant turn: the conversation up to the user's last message and <|assistant|>.

    With block_size, the oldest exchanges are dropped until the prompt leaves room to answer
    (a quarter of the context); a last user message that alone does not fit is an error.
    """
    if messages[-1]["role"] != "user":
        raise NextlabError("the conversation must end with a user message to ask for a reply")
    while True:
        ids, _ = render_chat(tokenizer, messages)
        if block_size is None or len(ids) <= block_size - block_size // 4 or len(messages) == 1:
            break
        messages = messages[2:]
    if block_size is not None and len(ids) > block_size - 1:
        raise NextlabError(f"the last message is {len(ids)} tokens with its markers; this model's context is {block_size}")
    return ids




def train_tokenizer(kind: str, texts: Sequence[str], bpe_vocab_size: int = 4096) -> Tokenizer:
    """Build a tokenizer of `kind` for a corpus (bytes needs no corpus)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, bpe_vocab_size)
    raise NextlabError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")


def tokenizer_from_json(obj: dict, source: str = "tokenizer") -> Tokenizer:
    kind = obj.get("nextlab_tokenizer")
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "chars":
        return CharTokenizer(obj["chars"])
    if kind == "chat":
        if obj.get("roles") != list(ChatTokenizer.ROLES) or not isinstance(obj.get("base"), dict):
            raise NextlabError(f"{source}: a chat tokenizer with roles {obj.get('roles')}; this nextlab knows {list(ChatTokenizer.ROLES)}")
        return ChatTokenizer(tokenizer_from_json(obj["base"], source))
    if "model" in obj:  # a Hugging Face tokenizer.json
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(json.dumps(obj)))
    raise NextlabError(f"{source}: not a nextlab or Hugging Face tokenizer")


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> Path:
    path = Path(directory) / TOKENIZER_FILE
    path.write_text(json.dumps(tok.to_json(), ensure_ascii=False))
    return path


def load_tokenizer(directory: str | Path) -> Tokenizer:
    path = Path(directory) / TOKENIZER_FILE
    return tokenizer_from_json(read_json_object(path), str(path))


def fingerprint(tok: Tokenizer) -> str:
    """A short hash that changes whenever the id mapping changes (used for data caches)."""
    import hashlib

    return hashlib.sha256(json.dumps(tok.to_json(), sort_keys=True).encode()).hexdigest()[:16]
