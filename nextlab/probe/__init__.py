"""Inside the model: linear probes for the generator's latents, induction heads, in-context learning."""

from nextlab.probe.heads import in_context_learning_score, induction_score_from_pattern, induction_scores
from nextlab.probe.probes import logistic_probe, ridge_probe
from nextlab.probe.run import ProbeResult, plot_probe, probe, world_knobs

__all__ = [
    "ProbeResult",
    "in_context_learning_score",
    "induction_score_from_pattern",
    "induction_scores",
    "logistic_probe",
    "plot_probe",
    "probe",
    "ridge_probe",
    "world_knobs",
]
