"""Real LLM inference request traces: the Azure formats (2023 and 2024) and Mooncake JSONL.

Formats (one row = one request):

* Azure LLM inference, CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``: 2023 files have naive
  timestamps with 7 fractional digits (``2023-11-16 18:17:03.9799600``, taken as UTC), the 2024
  week-long files ``+00:00`` offsets and mixed fractional precision (``...00:00:01+00:00``,
  ``...00:00:00.009930+00:00``); both are accepted, also mixed in one file.
* Mooncake JSONL ``{"timestamp": ms, "input_length": n, "output_length": n, ...}``, times in
  milliseconds from the trace start (other keys such as ``hash_ids`` are ignored).

Files are read vectorised (pyarrow, pandas); a row that cannot be used raises
:class:`~sovcloud.errors.TraceError` naming the file, the row (file line), the column, the value and
a fix, never a traceback. The bundled copies are selectable by name: ``azure-code``, ``azure-conv``,
``mooncake`` (see ``sovcloud/data/traces/README.md`` for their sources and licences).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from sovcloud.errors import TraceError

__all__ = ["TRACES", "Trace", "load_trace", "trace_path"]

TRACES = {
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "mooncake": "mooncake_conversation_trace.jsonl",
}
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_COLUMNS = ("timestamp", "input_length", "output_length")


@dataclass(frozen=True)
class Trace:
    """A trace sorted by time; ``row`` is each request's 0-based data row in the file."""

    name: str
    path: Path
    format: str  # azure-2023 | azure-2024 | mooncake
    t_s: NDArray[np.float64]  # seconds since the first request
    input_tokens: NDArray[np.float64]
    output_tokens: NDArray[np.float64]
    row: NDArray[np.int64]
    start_utc: dt.datetime | None

    @property
    def rows(self) -> int:
        return len(self.t_s)

    @property
    def span_s(self) -> float:
        return float(self.t_s[-1]) if self.rows else 0.0

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate over the span (rows per second)."""
        return self.rows / max(self.span_s, 1.0)


def trace_path(name_or_path: str | Path) -> Path:
    """The file of a bundled trace name, or the given path (which must exist)."""
    if str(name_or_path) in TRACES:
        return Path(str(resources.files("sovcloud") / "data" / "traces" / TRACES[str(name_or_path)]))
    p = Path(name_or_path)
    if not p.is_file():
        raise TraceError(f"{p}: no such trace file; fix: give a path to an Azure CSV or Mooncake JSONL trace, "
                         f"or a bundled name ({', '.join(TRACES)})")
    return p


def _bad(path: Path, line: int, column: str, value: object, problem: str, fix: str) -> TraceError:
    return TraceError(f"{path}:{line}: column {column}: {problem} (got {str(value)!r}); fix: {fix}")


def _tokens(path: Path, frame: pd.DataFrame, column: str, first_line: int) -> NDArray[np.float64]:
    """A non-negative integer token column; the first bad row raises."""
    raw = frame[column]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna() | (num < 0) | (num != np.floor(num))
    if bool(bad.any()):
        i = int(np.argmax(bad.to_numpy()))
        raise _bad(path, first_line + i, column, raw.iloc[i], "not a non-negative whole number of tokens",
                   "write token counts as integers >= 0, or drop the row")
    out: NDArray[np.float64] = num.to_numpy(dtype=np.float64)
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    """Azure CSV with a vectorised fast path; on a conversion error, read as text to find the bad row."""
    strings = {c: pa.string() for c in AZURE_COLUMNS}
    try:
        with path.open("rb") as fh:
            names = [c.strip().strip('"') for c in fh.readline().decode("utf-8").strip().split(",")]
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a readable CSV trace ({exc}); fix: give an Azure LLM inference CSV with "
                         f"columns {', '.join(AZURE_COLUMNS)}") from exc
    missing = [c for c in AZURE_COLUMNS if c not in names]
    if missing:
        raise TraceError(f"{path}:1: column {missing[0]}: missing from the header (got {', '.join(names)}); fix: "
                         f"an Azure trace has columns {', '.join(AZURE_COLUMNS)}")
    for ts_type in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        types = {"TIMESTAMP": ts_type, "ContextTokens": pa.int64(), "GeneratedTokens": pa.int64()}
        try:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(AZURE_COLUMNS)))
        except pa.ArrowInvalid:
            continue
        frame: pd.DataFrame = table.to_pandas()
        frame["TIMESTAMP"] = pd.to_datetime(frame["TIMESTAMP"], utc=True)
        return frame
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=strings,
                                                                         include_columns=list(AZURE_COLUMNS)))
    text: pd.DataFrame = table.to_pandas()
    ts = pd.to_datetime(text["TIMESTAMP"], format="ISO8601", utc=True, errors="coerce")
    if bool(ts.isna().any()):
        i = int(np.argmax(ts.isna().to_numpy()))
        raise _bad(path, i + 2, "TIMESTAMP", text["TIMESTAMP"].iloc[i], "not an ISO 8601 time",
                   "write times like 2023-11-16 18:17:03.9799600 or 2024-05-10 00:00:01.5+00:00")
    text["TIMESTAMP"] = ts
    return text


def _load_azure(path: Path) -> tuple[str, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                                     dt.datetime | None]:
    frame = _read_csv(path)
    if frame.empty:
        raise TraceError(f"{path}: the trace has no rows; fix: give a trace with at least one request")
    inp = _tokens(path, frame, "ContextTokens", 2)
    out = _tokens(path, frame, "GeneratedTokens", 2)
    ts = frame["TIMESTAMP"]
    t0 = ts.min()
    secs = (ts - t0).dt.total_seconds().to_numpy(dtype=np.float64)
    with path.open("rb") as fh:
        fh.readline()
        fmt = "azure-2024" if b"+" in fh.readline() else "azure-2023"
    return fmt, secs, inp, out, t0.to_pydatetime()


def _load_mooncake(path: Path) -> tuple[str, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                                        dt.datetime | None]:
    try:
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as exc:
        _locate_bad_json(path)
        raise TraceError(f"{path}: not JSON lines ({exc}); fix: write one JSON object per line") from exc
    if frame.empty:
        raise TraceError(f"{path}: the trace has no rows; fix: give a trace with at least one request")
    for col in MOONCAKE_COLUMNS:
        if col not in frame.columns:
            raise TraceError(f"{path}:1: column {col}: missing (got {', '.join(map(str, frame.columns))}); fix: "
                             f"a Mooncake trace has keys {', '.join(MOONCAKE_COLUMNS)}")
    ms = _tokens(path, frame, "timestamp", 1)
    return ("mooncake", (ms - ms.min()) / 1000.0, _tokens(path, frame, "input_length", 1),
            _tokens(path, frame, "output_length", 1), None)


def _locate_bad_json(path: Path) -> None:
    """Raise for the first line that is not a JSON object (only run when the vectorised read failed)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad(path, line_no, "(line)", line.strip()[:60], f"not JSON ({exc.msg})",
                           "write one JSON object per line") from exc
            if not isinstance(obj, dict):
                raise _bad(path, line_no, "(line)", line.strip()[:60], "not a JSON object",
                           'write objects like {"timestamp": 0, "input_length": 10, "output_length": 5}')


def load_trace(name_or_path: str | Path) -> Trace:
    """Load a bundled trace by name or any Azure CSV / Mooncake JSONL file, sorted by time."""
    path = trace_path(name_or_path)
    if path.suffix.lower() in (".jsonl", ".json"):
        fmt, secs, inp, out, start = _load_mooncake(path)
    elif path.suffix.lower() == ".csv":
        fmt, secs, inp, out, start = _load_azure(path)
    else:
        raise TraceError(f"{path}: unknown trace format '{path.suffix}'; fix: give an Azure .csv or a Mooncake "
                         ".jsonl trace")
    order = np.argsort(secs, kind="stable")
    return Trace(name=str(name_or_path) if str(name_or_path) in TRACES else path.name, path=path, format=fmt,
                 t_s=secs[order], input_tokens=inp[order], output_tokens=out[order],
                 row=order.astype(np.int64), start_utc=start)
