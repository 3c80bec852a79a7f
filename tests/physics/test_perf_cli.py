"""``sovcloud perf``: ids resolved in the bundled scenario, JSON and table output, errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sovcloud.cli.perf import perf_command
from sovcloud.errors import PhysicsError, UnknownEntity
from sovcloud.physics.parallel import best_split
from sovcloud.physics.perf import estimate
from tests.physics.catalog import SC


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("perf")(perf_command)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer in multi-command mode
        """Nothing."""

    return app


def test_cli_json_output() -> None:
    args = ["perf", "--model", "llama-3.1-70b", "--chip", "h200-sxm", "--chips", "1", "--precision", "fp8"]
    result = CliRunner().invoke(_app(), [*args, "--input", "1000", "--output", "1000", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = estimate(SC.model("llama-3.1-70b"), SC.chip("h200-sxm"), 1, "fp8", 1000, 1000)
    assert data == expected.to_json()
    assert data["fits"] is True and data["reason"] is None
    inter = CliRunner().invoke(
        _app(), [*args, "--input", "1000", "--output", "1000", "--scenario", "interactive", "--json"]
    )
    assert json.loads(inter.output)["tpot_s"] <= 0.04
    refused = CliRunner().invoke(
        _app(),
        [
            "perf",
            "--model",
            "llama-3.1-70b",
            "--chip",
            "a100-80gb-sxm",
            "--precision",
            "fp8",
            "--input",
            "10",
            "--output",
            "10",
            "--json",
        ],
    )
    assert refused.exit_code == 0 and json.loads(refused.output)["fits"] is False
    table = CliRunner().invoke(_app(), [*args, "--input", "100", "--output", "100"])
    assert table.exit_code == 0 and "output tokens/s/chip" in table.output


def test_cli_errors_are_sovcloud_errors() -> None:
    bad_chip = CliRunner().invoke(
        _app(), ["perf", "--model", "qwen3-8b", "--chip", "nope", "--input", "1", "--output", "1"]
    )
    assert isinstance(bad_chip.exception, UnknownEntity)
    bad_model = CliRunner().invoke(
        _app(), ["perf", "--model", "nope", "--chip", "h100-sxm", "--input", "1", "--output", "1"]
    )
    assert isinstance(bad_model.exception, UnknownEntity)
    bad_scenario = CliRunner().invoke(
        _app(),
        [
            "perf",
            "--model",
            "qwen3-8b",
            "--chip",
            "h100-sxm",
            "--input",
            "1",
            "--output",
            "1",
            "--scenario",
            "x",
        ],
    )
    assert isinstance(bad_scenario.exception, PhysicsError)


def test_cli_splits_chips_into_the_best_tp_groups_unless_tp_is_given() -> None:
    args = ["perf", "--model", "llama-2-70b", "--chip", "h200-sxm", "--chips", "8", "--precision", "fp8",
            "--input", "700", "--output", "290", "--json"]
    best = json.loads(CliRunner().invoke(_app(), args).output)
    one_group = json.loads(CliRunner().invoke(_app(), [*args, "--tp", "8"]).output)
    assert (best["chips"], best["tp"] * best["replicas"]) == (8, 8)
    assert best == best_split(SC.model("llama-2-70b"), SC.chip("h200-sxm"), 8, "fp8", 700, 290).to_json()
    assert (one_group["tp"], one_group["replicas"]) == (8, 1)
    assert best["output_tokens_per_s_per_chip"] >= one_group["output_tokens_per_s_per_chip"]
    pinned = estimate(SC.model("llama-2-70b"), SC.chip("h200-sxm"), 2, "fp8", 700, 290)
    two = json.loads(CliRunner().invoke(_app(), [*args, "--tp", "2"]).output)
    assert (two["tp"], two["replicas"]) == (2, 4)
    assert two["output_tokens_per_s_per_chip"] == pytest.approx(pinned.output_tokens_per_s_per_chip)
    assert two["decode_tokens_per_s"] == pytest.approx(4 * pinned.decode_tokens_per_s)
    bad = CliRunner().invoke(_app(), [*args, "--tp", "3"])
    assert isinstance(bad.exception, PhysicsError) and "divide" in str(bad.exception)
