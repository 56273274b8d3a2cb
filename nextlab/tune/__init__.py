"""Reshaping the distribution: the chat format, instruction tuning (SFT), reward-based tuning (RL), and before/after measurement."""

from nextlab.tune.chat import add_chat_tokens, check_messages, is_chat, prompt_ids, render
from nextlab.tune.rl import RLConfig, rl
from nextlab.tune.sft import SFTConfig, sft

__all__ = ["RLConfig", "SFTConfig", "add_chat_tokens", "check_messages", "is_chat", "prompt_ids", "render", "rl", "sft"]
