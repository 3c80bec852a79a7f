"""The one exception tree of sovcloud.

Library code raises these; the CLI maps each to a one-line message (or one line per
problem for scenario errors) and an exit code, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "InsufficientFunds",
    "LedgerError",
    "PhysicsError",
    "PlanFileError",
    "Problem",
    "ScenarioError",
    "ScenarioNotFound",
    "SovcloudError",
    "TraceError",
    "UnknownEntity",
    "UsageError",
]


class SovcloudError(Exception):
    """Base of every error sovcloud raises on purpose."""

    exit_code: int = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario: where it is, what it is, and how to fix it."""

    file: str
    line: int | None
    field: str
    value: str
    message: str
    hint: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        value = f" (got {self.value})" if self.value else ""
        return f"{where}: {self.field}: {self.message}{value}; fix: {self.hint}"


class ScenarioError(SovcloudError):
    """A scenario file could not be read or failed validation; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in scenario"
        super().__init__(head + "\n" + "\n".join(p.render() for p in self.problems))


class ScenarioNotFound(SovcloudError):
    """A scenario name or path that does not exist."""

    exit_code = 2


class UnknownEntity(SovcloudError):
    """A chip, model, site, zone or city id that is not in the scenario."""

    exit_code = 2


class UsageError(SovcloudError):
    """A command-line option with a value the command cannot use."""

    exit_code = 2


class PhysicsError(SovcloudError):
    """Physics inputs that cannot be evaluated (e.g. a non-positive token count)."""

    exit_code = 2


class PlanFileError(SovcloudError):
    """A plan.json (or its Parquet tables) that is missing, malformed or of another schema version."""

    exit_code = 2


class TraceError(SovcloudError):
    """A request trace file that cannot be read: names the file, the row, the column and the value."""

    exit_code = 2


class ConfigError(SovcloudError):
    """A gateway, emulator or tenant configuration value that cannot be used."""

    exit_code = 2


class LedgerError(SovcloudError):
    """The metering ledger cannot be opened or written (database unreachable, schema mismatch)."""


class InsufficientFunds(LedgerError):
    """A tenant's grants and credits cannot cover a request's worst-case cost."""
