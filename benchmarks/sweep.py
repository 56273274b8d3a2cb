"""The demo's scaling sweep: its wall time on this machine, the fits, and how well they extrapolate.

    python benchmarks/sweep.py [--out runs/bench_sweep] [--jobs 1] [--quick] [--bootstrap 200]

Trains the sweep `nextlab demo` runs (nextlab.reasoning.reasoning_sweep: depths 1, 2 and 4 at
three token budgets on the arithmetic world; --quick: 2 x 2 points), then prints the wall time,
the fitted laws with 95% bootstrap intervals, the error of predicting the largest model's
loss from the others, and the sharpness (10-90% sigmoid width in decades of compute) of
each task under each metric. An existing --out is reused: finished points are skipped,
so delete it to time the sweep from scratch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nextlab.reasoning import reasoning_sweep
from nextlab.scaling import emergence, fit_sweep, plot_sweep, run_sweep
from nextlab.scaling.analysis import emergence_report, fit_report, fits_to_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_sweep")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sweep = reasoning_sweep("arithmetic", args.out, args.quick)
    t0 = time.perf_counter()
    rows = run_sweep(sweep, jobs=args.jobs)
    wall = time.perf_counter() - t0
    print(f"\nsweep wall time: {wall:.0f} s for {len(rows)} runs ({args.jobs} job(s), {args.threads} threads)"
          f"; training time summed over runs {sum(r['wall_s'] for r in rows):.0f} s")
    fits = fit_sweep(rows, n_bootstrap=args.bootstrap)
    print(fit_report(fits))
    table = emergence(rows)
    print(emergence_report(table))
    for p in plot_sweep(rows, fits, Path(sweep.out) / "plots"):
        print(f"wrote {p}")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "rows": rows, "fits": fits_to_json(fits), "emergence": table}, indent=1))


if __name__ == "__main__":
    main()
