"""Reshaping the distribution: chat tokens for a pretrained model, instruction tuning, reward tuning, before/after measurement."""

from nextlab.tune.chat import add_chat_tokens
from nextlab.tune.rl import RLConfig, rl
from nextlab.tune.sft import SFTConfig, sft

__all__ = ["RLConfig", "SFTConfig", "add_chat_tokens", "rl", "sft"]
