"""OpenAI-compatible chat completions for instruction-tuned checkpoints (no HTTP here).

`POST /v1/chat/completions` renders the messages in nextlab's chat format
(nextlab/tune/chat.py) and runs them as a text completion whose prompt is those
tokens: the same sampler, limits and seeds as /v1/completions. Turns are user and
assistant only (the format has no system role: a system message is refused, not
dropped); an assistant turn ends at end-of-text.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

from nextlab.errors import NextlabError
from nextlab.serve.completions import APIError, CompletionRequest, Limits, Piece, Plan, json_float, plan_completion, usage_json
from nextlab.tokenizer import Tokenizer, chat_prompt_ids, check_messages, is_chat


class ChatRequest(BaseModel):
    """The body of POST /v1/chat/completions."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared: false is not 0

    model: str
    messages: list[dict]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    top_k: int | None = None
    n: int | None = 1
    stream: bool | None = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None


def plan_chat(req: ChatRequest, tokenizer: Tokenizer, block_size: int, limits: Limits, model_name: str) -> Plan:
    """Check a chat request and turn it into the completion it runs (its prompt: the conversation's tokens)."""
    if not is_chat(tokenizer):
        raise APIError(400, f"'{model_name}' is not instruction-tuned (it has no chat format); use /v1/completions, "
                            "or tune it with `nextlab tune sft`", "model", "not_a_chat_model")
    messages = [{k: v for k, v in m.items() if k != "name"} for m in req.messages]
    for i, m in enumerate(messages):
        if isinstance(m.get("content"), list):  # OpenAI's content parts: text only here
            if any(not isinstance(p, dict) or p.get("type") != "text" for p in m["content"]):
                raise APIError(400, f"messages[{i}]: only text content is supported", "messages")
            m["content"] = "".join(p.get("text", "") for p in m["content"])
        if m.get("role") in ("system", "developer", "tool"):
            raise APIError(400, f"messages[{i}]: role '{m['role']}' is not part of nextlab's chat format "
                                "(user and assistant turns only)", "messages")
    try:
        check_messages(messages, "messages")
        if messages[-1]["role"] != "user":
            raise NextlabError("messages: the last message must be the user's (the reply is the assistant's)")
        ids = chat_prompt_ids(tokenizer, messages)[1:]  # the completion adds the leading end-of-text itself
    except NextlabError as e:
        raise APIError(400, str(e), "messages") from None
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if max_tokens is None:  # OpenAI's default is "as long as the context allows"
        max_tokens = max(1, min(limits.max_tokens, block_size - len(ids)))
    if max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
    completion = CompletionRequest(
        model=req.model, prompt=ids, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
        n=req.n, stream=req.stream, stream_options=req.stream_options, stop=req.stop, seed=req.seed,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, logit_bias=req.logit_bias)
    plan = plan_completion(completion, tokenizer, block_size, limits)
    plan.id = f"chatcmpl-{uuid.uuid4().hex}"
    return plan


def _entry(token: str, logprob: float, raw: bytes) -> dict:
    return {"token": token, "logprob": json_float(logprob), "bytes": list(raw)}


def _logprobs(piece: Piece) -> list[dict]:
    return [{**_entry(t, lp, raw), "top_logprobs": [_entry(k, v, top_raw[k]) for k, v in top.items()]}
            for t, lp, raw, top, top_raw in zip(piece.tokens, piece.token_logprobs, piece.token_bytes, piece.top_logprobs,
                                                piece.top_bytes)]


def chat_json(plan: Plan, pieces: list[Piece], model_name: str) -> dict:
    """The whole (non-streamed) chat response."""
    choices: dict[int, dict] = {}
    offsets: dict[int, list[int]] = {}
    completion_tokens = 0
    for piece in pieces:
        c = choices.setdefault(piece.index, {"index": piece.index, "message": {"role": "assistant", "content": ""},
                                             "logprobs": None if plan.logprobs is None else {"content": []}, "finish_reason": None})
        c["message"]["content"] += piece.text
        if c["logprobs"] is not None:
            c["logprobs"]["content"] += _logprobs(piece)
            offsets.setdefault(piece.index, []).extend(piece.text_offset)
        if piece.finish_reason:
            c["finish_reason"] = piece.finish_reason
        completion_tokens += piece.n_tokens
    for i, c in choices.items():  # a stop string's own tokens are cut with its text
        if c["logprobs"] is not None and c["finish_reason"] == "stop":
            keep = sum(1 for o in offsets.get(i, []) if o < len(c["message"]["content"]))
            c["logprobs"]["content"] = c["logprobs"]["content"][:keep]
    return {"id": plan.id, "object": "chat.completion", "created": plan.created, "model": model_name,
            "choices": [choices[i] for i in sorted(choices)], "usage": usage_json(plan, completion_tokens)}


def chat_chunk_json(plan: Plan, piece: Piece, model_name: str, first: bool) -> dict:
    """One server-sent event of a streamed chat completion (the first of each choice carries the role)."""
    delta = {"role": "assistant", "content": piece.text} if first else ({"content": piece.text} if piece.text else {})
    return {"id": plan.id, "object": "chat.completion.chunk", "created": plan.created, "model": model_name,
            "choices": [{"index": piece.index, "delta": delta,
                         "logprobs": None if plan.logprobs is None else {"content": _logprobs(piece)},
                         "finish_reason": piece.finish_reason}]}
