"""Giving a pretrained model the chat format, and talking to it in the terminal.

The format itself (conversations as tokens, the loss mask) lives with `ChatTokenizer`
in nextlab/tokenizer.py, so that serving and sampling can use it too.
"""

from __future__ import annotations

import dataclasses

import torch

from nextlab.errors import NextlabError
from nextlab.model import GPT
from nextlab.tokenizer import ChatTokenizer, Tokenizer, chat_prompt_ids, is_chat


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
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, read with surrogateescape
            write("(that line is not valid UTF-8 text; nothing was sent)")
            continue
        messages.append({"role": "user", "content": line})
        ids = chat_prompt_ids(tokenizer, messages, model.cfg.block_size)
        write("model> ", end="", flush=True)
        reply = ""
        for g in generate_stream(model, tokenizer, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, context=ids):
            write(g.text, end="", flush=True)
            reply += g.text
        write("")
        messages.append({"role": "assistant", "content": reply})
