"""Scaling laws and emergence: sweeps of ordinary training runs, honest fits, sharpness per metric."""

from nextlab.scaling.analysis import emergence, emergence_over_training, fit_sweep, plot_sweep
from nextlab.scaling.emergence import fit_sigmoid, sharpness_table
from nextlab.scaling.fit import extrapolation_check, fit_chinchilla, fit_power_law
from nextlab.scaling.sweep import load_sweep, load_sweep_results, run_sweep, sweep_from_dict

__all__ = [
    "emergence",
    "emergence_over_training",
    "extrapolation_check",
    "fit_chinchilla",
    "fit_power_law",
    "fit_sigmoid",
    "fit_sweep",
    "load_sweep",
    "load_sweep_results",
    "plot_sweep",
    "run_sweep",
    "sharpness_table",
    "sweep_from_dict",
]
