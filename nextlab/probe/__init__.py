"""Inside the model: linear probes for the generator's latents, induction heads, in-context learning."""

from nextlab.probe.heads import (
    HeadScores,
    head_scores,
    heads_over_training,
    in_context_learning_score,
    induction_score_from_pattern,
    induction_scores,
    plot_heads_over_training,
    previous_token_from_pattern,
    statistical_induction_from_pattern,
)
from nextlab.probe.probes import logistic_probe, ridge_probe
from nextlab.probe.run import ProbeResult, plot_probe, probe, world_knobs

__all__ = [
    "HeadScores",
    "ProbeResult",
    "head_scores",
    "heads_over_training",
    "in_context_learning_score",
    "induction_score_from_pattern",
    "induction_scores",
    "logistic_probe",
    "plot_heads_over_training",
    "plot_probe",
    "previous_token_from_pattern",
    "probe",
    "ridge_probe",
    "statistical_induction_from_pattern",
    "world_knobs",
]
