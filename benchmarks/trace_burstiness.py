"""Burstiness of real request traces: the coefficient of variation of the per-minute arrival count.

Usage: ``python benchmarks/trace_burstiness.py [--bin-s 60]``. For each bundled trace it prints the requests,
the span, the mean count per bin, the CV of the counts, and the excess CV ``sqrt(max(var - mean, 0)) / mean``:
the part not explained by Poisson noise, which is what the simulator's ``--burstiness`` and the planner's
``planning.burstiness`` model (a Gamma factor on each minute's rate, docs/serving.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from sovcloud.sim.traces import load_trace

TRACES = ("azure-conv", "azure-code", "mooncake")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-s", type=float, default=60.0, help="bin width in seconds (default 60)")
    args = ap.parse_args()
    print(f"| trace | requests | span h | mean per {args.bin_s:g} s | CV | excess CV |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in TRACES:
        t = load_trace(name).t_s
        counts = np.bincount((t // args.bin_s).astype(np.int64)).astype(np.float64)
        mean, var = float(counts.mean()), float(counts.var())
        excess = np.sqrt(max(var - mean, 0.0)) / mean
        print(f"| {name} | {len(t):,} | {float(t.max()) / 3600:.2f} | {mean:.1f} | {np.sqrt(var) / mean:.3f} | "
              f"{excess:.3f} |")


if __name__ == "__main__":
    main()
