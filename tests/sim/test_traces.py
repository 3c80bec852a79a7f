"""Trace loading (Azure 2023 and 2024 formats, Mooncake JSONL), bad rows, and the accounting of every row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sovcloud.errors import TraceError
from sovcloud.sim.output import build_outputs, write_outputs
from sovcloud.sim.run import SimConfig, simulate
from sovcloud.sim.traces import TRACES, load_trace

DATA = Path(__file__).parents[1] / "data"
ROWS = {"azure-code": 8819, "azure-conv": 19366, "mooncake": 12031}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_bundled_traces_load(name: str) -> None:
    tr = load_trace(name)
    assert tr.rows == ROWS[name] and tr.t_s[0] == 0.0 and np.all(np.diff(tr.t_s) >= 0)
    assert 3000 < tr.span_s < 3600 and np.all(tr.input_tokens > 0) and np.all(tr.output_tokens > 0)
    assert sorted(tr.row) == list(range(tr.rows))
    assert tr.format == ("mooncake" if name == "mooncake" else "azure-2023")


def test_azure_2024_format_with_offsets_and_mixed_precision(tmp_path: Path) -> None:
    p = tmp_path / "week.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2024-05-10 00:00:00.009930+00:00,4808,10\n"
                 "2024-05-10 00:00:01+00:00,3180,8\n"
                 "2024-05-10 00:00:01.5+00:00,100,0\n"
                 "2024-05-10 00:00:00.5+00:00,7,7\n", encoding="utf-8")
    tr = load_trace(p)
    assert tr.format == "azure-2024" and tr.rows == 4 and tr.start_utc is not None and tr.start_utc.hour == 0
    np.testing.assert_allclose(tr.t_s, [0.0, 0.49007, 0.99007, 1.49007], atol=1e-6)
    assert list(tr.row) == [0, 3, 1, 2] and list(tr.output_tokens) == [10, 7, 8, 0]


def test_mixed_2023_and_2024_timestamps_in_one_file(tmp_path: Path) -> None:
    p = tmp_path / "mixed.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,1,1\n"
                 "2023-11-16 18:17:04.5+00:00,2,2\n", encoding="utf-8")
    np.testing.assert_allclose(load_trace(p).t_s, [0.0, 0.52004], atol=1e-6)


@pytest.mark.parametrize(("text", "needle"), [
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,1,1\nyesterday,2,2\n",
     ":3: column TIMESTAMP: not an ISO 8601 time (got 'yesterday'); fix:"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,1,1\n2023-11-16 18:17:04,x,2\n",
     ":3: column ContextTokens: not a non-negative whole number of tokens (got 'x'); fix:"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,1,-4\n",
     ":2: column GeneratedTokens: not a non-negative whole number of tokens (got '-4'); fix:"),
    ("TIMESTAMP,Context,GeneratedTokens\n2023-11-16 18:17:03,1,1\n", ":1: column ContextTokens: missing"),
])
def test_bad_azure_rows_name_file_row_column_value_and_fix(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(TraceError) as err:
        load_trace(p)
    assert str(p) in str(err.value) and needle in str(err.value)


def test_bad_mooncake_rows(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 10, oops\n', encoding="utf-8")
    with pytest.raises(TraceError, match=r"bad\.jsonl:2: column \(line\): not JSON"):
        load_trace(p)
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n'
                 '{"timestamp": 10, "input_length": 2.5, "output_length": 2}\n', encoding="utf-8")
    with pytest.raises(TraceError, match=r":2: column input_length: .*\(got '2\.5'\)"):
        load_trace(p)
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")


@pytest.mark.parametrize("name", sorted(TRACES))
def test_every_trace_row_is_accounted_for(plan_dir: Path, tmp_path: Path, name: str) -> None:
    # a 40-minute window of the hour-long trace at 1.5x its rate, with an outage in the middle
    run = simulate(plan_dir, SimConfig(trace=name, hours=0.5, trace_scale=1.5, seed=3,
                                       shocks=("outage:de-fra@0.2h-0.3h",)))
    out = build_outputs(run)
    write_outputs(out, tmp_path)
    block, req = out.summary["trace"], out.summary["requests"]
    assert block["rows"] == ROWS[name] == block["replayed"] + block["outside_window"]
    assert block["outside_window"] > 0 and block["surge_added"] == 0
    assert req["arrivals"] == block["replayed"]
    rows = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(rows) == block["replayed"] and rows.row.is_unique
    assert "unaccounted" not in set(rows.outcome.astype(str))
    counts = rows.outcome.astype(str).value_counts()
    assert counts.get("served", 0) == req["served"] and counts.get("lost", 0) == req["lost"]
    assert counts.get("in_flight", 0) == req["in_flight"]
    assert counts[counts.index.str.startswith("rejected:")].sum() == req["rejected"]
    assert sum(block["rows_by_outcome"].values()) == block["replayed"]
    assert out.summary["residency_violations"] == 0 and out.summary["traffic"] == f"trace:{name}"


def test_trace_surge_copies_are_counted(plan_dir: Path) -> None:
    run = simulate(plan_dir, SimConfig(trace="azure-code", hours=0.25, shocks=("surge:DE:2.5",), seed=1))
    block = build_outputs(run).summary["trace"]
    assert block["surge_added"] > 0
    assert run.requests == block["replayed"] + block["surge_added"]
    assert json.dumps(block)  # plain JSON types
