"""Time loading and compiling the default scenario.

    python benchmarks/compile_speed.py
"""

from __future__ import annotations

import statistics
import time

from sovcloud.scenario.loader import read_document, validate_document
from sovcloud.world.compiled import compile


def main() -> None:
    t = time.perf_counter()
    doc = read_document("global-2025")
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    scenario = validate_document(doc)
    t_validate = time.perf_counter() - t
    runs = []
    for _ in range(10):
        t = time.perf_counter()
        world = compile(scenario)
        runs.append(time.perf_counter() - t)
    ds = world.ds
    print(f"zones {ds.sizes['zone']}, sites {ds.sizes['site']}, chips {ds.sizes['chip']}, models {ds.sizes['model']}")
    print(f"read YAML + extends:            {t_read * 1e3:8.1f} ms")
    print(f"validate + generate zones:      {t_validate * 1e3:8.1f} ms (first call, includes loading GeoNames)")
    print(f"compile (median of 10):         {statistics.median(runs) * 1e3:8.1f} ms")
    print(f"compile (max of 10):            {max(runs) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
