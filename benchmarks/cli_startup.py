"""Cold-start cost of the command line: ``sovcloud --help`` wall time and the import time of ``sovcloud.cli``.

Usage: ``python benchmarks/cli_startup.py [--runs N]``. Each run is a new interpreter, as a user's shell starts
one. Prints min / median / max of the wall time of ``python -m sovcloud.cli --help``, of the cumulative import
time of ``sovcloud.cli`` as ``python -X importtime`` reports it, and the library modules loaded at start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("numpy", "pandas", "xarray", "linopy", "highspy", "scipy", "pydantic", "sqlalchemy", "plotly", "numba",
         "psycopg", "playwright", "uvicorn", "starlette", "aiohttp")


def _help_wall_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sovcloud.cli", "--help"], check=True, capture_output=True)
    return time.perf_counter() - t0


def _import_s() -> float:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sovcloud.cli"], check=True,
                          capture_output=True, text=True)
    for line in reversed(proc.stderr.splitlines()):
        if line.rstrip().endswith("| sovcloud.cli"):
            return int(line.split("|")[1]) / 1e6
    raise SystemExit("python -X importtime printed no line for sovcloud.cli")


def _loaded() -> list[str]:
    code = "import json, sys, sovcloud.cli; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return [m for m in json.loads(proc.stdout) if m in HEAVY]


def _row(name: str, values: list[float]) -> str:
    return (f"{name:<32} {min(values) * 1e3:8.1f} {statistics.median(values) * 1e3:8.1f} "
            f"{max(values) * 1e3:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    _help_wall_s()  # warm the file cache once
    help_s = [_help_wall_s() for _ in range(args.runs)]
    import_s = [_import_s() for _ in range(args.runs)]
    print(f"{'ms, ' + str(args.runs) + ' runs':<32} {'min':>8} {'median':>8} {'max':>8}")
    print(_row("sovcloud --help (wall)", help_s))
    print(_row("import sovcloud.cli (importtime)", import_s))
    print(f"library modules loaded at start: {', '.join(_loaded()) or 'none'}")


if __name__ == "__main__":
    main()
