"""Hugging Face interop: export a checkpoint as a transformers model directory, import one back (see convert.py)."""

from nextlab.hf.convert import export_checkpoint, import_checkpoint

__all__ = ["export_checkpoint", "import_checkpoint"]
