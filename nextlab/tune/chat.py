"""The chat format: conversations as tokens, and growing a pretrained model so it can read them.

A conversation is a list of messages `{"role": "user" | "assistant", "content": str}`,
alternating and starting with the user (OpenAI's message shape). As tokens:

    <|endoftext|> <|user|> What is 37 plus 45? <|assistant|> 82 <|endoftext|> <|user|> ...

- `<|user|>` and `<|assistant|>` are two new tokens after the tokenizer's own
  (`ChatTokenizer`). They are input-only: the model reads them but never predicts
  them, so its output layer does not grow.
- An assistant turn ends with the end-of-text token the model already predicts at
  the end of every document. A new end-of-turn output token would need a new row
  in the output layer, and any new row moves every probability of the base model
  (softmax renormalizes); reusing end-of-text leaves the base model's predictions
  on ordinary text exactly as they were until tuning starts.
- Training signal: only the assistant's tokens and the end-of-text that closes
  its turn are predicted in the loss; the user's words and the markers are context.
"""

from __future__ import annotations

import dataclasses

import torch

from nextlab.errors import NextlabError
from nextlab.model import GPT
from nextlab.tokenizer import ChatTokenizer, Tokenizer

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


def render(tokenizer: ChatTokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
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


def prompt_ids(tokenizer: ChatTokenizer, messages: list[dict], block_size: int | None = None) -> list[int]:
    """The tokens that ask for the next assistant turn: the conversation up to the user's last message and <|assistant|>.

    With block_size, the oldest exchanges are dropped until the prompt leaves room to answer
    (a quarter of the context); a last user message that alone does not fit is an error.
    """
    if messages[-1]["role"] != "user":
        raise NextlabError("the conversation must end with a user message to ask for a reply")
    while True:
        ids, _ = render(tokenizer, messages)
        if block_size is None or len(ids) <= block_size - block_size // 4 or len(messages) == 1:
            break
        messages = messages[2:]
    if block_size is not None and len(ids) > block_size - 1:
        raise NextlabError(f"the last message is {len(ids)} tokens with its markers; this model's context is {block_size}")
    return ids


def add_chat_tokens(model: GPT, tokenizer: Tokenizer, seed: int = 0) -> tuple[GPT, ChatTokenizer]:
    """A copy of `model` that also reads <|user|> and <|assistant|>, and the tokenizer that makes them.

    The pretrained weights are copied unchanged; each new embedding row is the mean of the old
    rows plus noise of their spread (distinct, typical-looking vectors). The output layer is
    untouched, so on text without markers the new model computes exactly what the old one did.
    """
    if is_chat(tokenizer):
        raise NextlabError("this checkpoint already has chat tokens")
    if model.cfg.arch == "gpt2":
        raise NextlabError("chat tokens are input-only and need an untied output layer: the gpt2 preset ties it")
    if model.cfg.vocab_size != tokenizer.vocab_size:
        raise NextlabError(f"the model has {model.cfg.vocab_size} embedding rows but its tokenizer {tokenizer.vocab_size} tokens; "
                           "chat tokens go right after the tokenizer's")
    chat = ChatTokenizer(tokenizer)
    cfg = dataclasses.replace(model.cfg, vocab_size=chat.vocab_size, output_vocab=model.cfg.output_vocab or model.cfg.vocab_size)
    grown = GPT(cfg).to(model.embed_tokens.weight.device)
    state = model.state_dict()
    old = state["embed_tokens.weight"]
    g = torch.Generator().manual_seed(seed)
    new_rows = old.mean(0) + torch.randn(len(ChatTokenizer.ROLES), old.size(1), generator=g).to(old) * old.std(0)
    state["embed_tokens.weight"] = torch.cat([old, new_rows])
    grown.load_state_dict(state)
    grown.set_attention(model.layers[0].attn.manual)
    return grown, chat


def chat_repl(ckpt, temperature: float = 0.0, top_p: float | None = None, max_tokens: int = 128, seed: int | None = None,
              read=input, write=print) -> None:
    """A terminal conversation with a chat-tuned checkpoint (Ctrl-D or /quit ends it, /reset forgets the conversation)."""
    from nextlab.sample import generate_stream

    model, tokenizer = ckpt.model, ckpt.tokenizer
    if not is_chat(tokenizer):
        raise NextlabError(f"{ckpt.path}: not instruction-tuned (it has no chat tokens); `nextlab tune sft` makes a chat model")
    write(f"chatting with {ckpt.path} (Ctrl-D or /quit to end, /reset to start over)")
    messages: list[dict] = []
    while True:
        try:
            line = read("you> ")
        except EOFError:
            write("")
            return
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip() == "/reset":
            messages = []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        ids = prompt_ids(tokenizer, messages, model.cfg.block_size)
        write("model> ", end="", flush=True)
        reply = ""
        for g in generate_stream(model, tokenizer, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, context=ids):
            write(g.text, end="", flush=True)
            reply += g.text
        write("")
        messages.append({"role": "assistant", "content": reply})
