"""vLLM's tokenizer endpoints: GET /tokenizer_info, POST /tokenize, POST /detokenize, in vLLM's request and response
shapes, so that clients written for a vLLM server (lm-evaluation-harness's `RemoteTokenizer` among them) tokenize
with the served model's own tokenizer and send token ids.

As in vLLM, whose Hugging Face tokenizers parse special tokens in text, the text "<|endoftext|>" in a /tokenize prompt
is the end-of-text token: that is how such clients find the end-of-text id (they tokenize the `eos_token` that
/tokenizer_info names). Everywhere else nextlab reads that text as plain text. nextlab adds no beginning-of-sequence
token, so `add_special_tokens` changes nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from nextlab.errors import NextlabError
from nextlab.serve.completions import APIError, check_token_ids
from nextlab.tokenizer import EOT, Tokenizer, chat_prompt_ids, check_messages, is_chat


class TokenizeRequest(BaseModel):
    """vLLM's TokenizeCompletionRequest (a `prompt`) or TokenizeChatRequest (`messages`, for chat-tuned models)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0

    model: str | None = None
    prompt: str | None = None
    messages: list[dict] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0

    model: str | None = None
    tokens: list[int]


def tokenizer_info(tokenizer: Tokenizer, block_size: int) -> dict:
    """What vLLM's /tokenizer_info gives: the tokenizer's class and special tokens, and the context length."""
    return {"tokenizer_class": f"nextlab.{tokenizer.kind}", "eos_token": EOT, "bos_token": EOT, "pad_token": EOT,
            "eos_token_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size, "model_max_length": block_size,
            "add_bos_token": False, "chat_template": None}


def tokenize(tokenizer: Tokenizer, req: TokenizeRequest, block_size: int) -> dict:
    if (req.prompt is None) == (req.messages is None):
        raise APIError(400, "give either prompt or messages", "prompt")
    if req.messages is not None:
        if not is_chat(tokenizer):
            raise APIError(400, "messages need a chat-tuned model; this one takes a prompt", "messages")
        try:
            ids = chat_prompt_ids(tokenizer, check_messages(req.messages, "messages"))
        except NextlabError as e:
            raise APIError(400, str(e), "messages") from None
    else:
        ids = []
        for i, part in enumerate(req.prompt.split(EOT)):
            ids += ([tokenizer.eot_id] if i else []) + tokenizer.encode(part)
    out = {"count": len(ids), "max_model_len": block_size, "tokens": ids, "token_strs": None}
    if req.return_token_strs:
        out["token_strs"] = [tokenizer.token_str(i) for i in ids]
    return out


def detokenize(tokenizer: Tokenizer, req: DetokenizeRequest) -> dict:
    check_token_ids(req.tokens, tokenizer, "tokens")
    return {"prompt": tokenizer.decode(req.tokens)}
