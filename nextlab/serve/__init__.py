"""Serve a checkpoint: a web page that shows the next-token distribution, and an OpenAI-compatible API."""

from nextlab.serve.app import create_app, model_name, serve
from nextlab.serve.completions import APIError, CompletionRequest, Limits, plan_completion, run_plan

__all__ = ["APIError", "CompletionRequest", "Limits", "create_app", "model_name", "plan_completion", "run_plan", "serve"]
