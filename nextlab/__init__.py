"""nextlab: a laptop-scale laboratory for next-token prediction."""

__version__ = "0.1.0"
