"""The one exception tree of sovcloud.

Library code raises these; the CLI maps each to a one-line message (or one line per problem for scenario
errors) and an exit code, never a traceback; the gateway maps :class:`ApiError` to an OpenAI-style error body.
Catching :class:`SovcloudError` catches every error sovcloud raises on purpose::

    SovcloudError
    ├── UsageError                      a command-line option the command cannot use (exit 2)
    ├── ScenarioError                   scenario problems, each with file:line, field, value and fix (exit 2)
    ├── ScenarioNotFound, UnknownEntity a scenario, chip, model, site, zone or city that does not exist (exit 2)
    ├── PhysicsError                    physics inputs that cannot be evaluated (exit 2)
    ├── PlanError                       the planner
    │   ├── SolveError                  the solver failed so that no plan can be reported
    │   └── PlanFileError               a plan.json or simulation summary that is missing or malformed (exit 2)
    ├── TraceError                      a request trace that cannot be read (exit 2)
    ├── GatewayError                    the live gateway
    │   ├── ConfigError                 a gateway, emulator or tenant setting that cannot be used (exit 2)
    │   ├── ApiError                    a refusal in OpenAI's error format (HTTP status, type, param, code)
    │   └── UpstreamError               a backend that could not be reached or broke off
    ├── LedgerError                     metering: the ledger cannot be opened or written
    │   └── InsufficientFunds           grants and credits cannot cover a request's worst-case cost
    └── LedgerValueError                metering: an amount, option or date the ledger cannot take (a ValueError)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ApiError",
    "ConfigError",
    "GatewayError",
    "InsufficientFunds",
    "LedgerError",
    "LedgerValueError",
    "PhysicsError",
    "PlanError",
    "PlanFileError",
    "Problem",
    "ScenarioError",
    "ScenarioNotFound",
    "SolveError",
    "SovcloudError",
    "TraceError",
    "UnknownEntity",
    "UpstreamError",
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


class PlanError(SovcloudError):
    """Base of the planner's errors."""


class SolveError(PlanError):
    """The solver failed in a way no plan can be reported for."""


class PlanFileError(PlanError):
    """A plan.json (or its Parquet tables) that is missing, malformed or of another schema version."""

    exit_code = 2


class TraceError(SovcloudError):
    """A request trace file that cannot be read: names the file, the row, the column and the value."""

    exit_code = 2


class GatewayError(SovcloudError):
    """Base of the live gateway's errors."""


class ConfigError(GatewayError):
    """A gateway, emulator or tenant configuration value that cannot be used."""

    exit_code = 2


class ApiError(GatewayError):
    """A refusal in OpenAI's error format: HTTP status, message, type, param and code.

    The HTTP boundary turns it into ``{"error": {"message", "type", "param", "code"}}`` with its status and headers.
    """

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


class UpstreamError(GatewayError):
    """The upstream could not be reached or broke off (connection, timeout, protocol)."""


class LedgerError(SovcloudError):
    """The metering ledger cannot be opened or written (database unreachable, schema mismatch)."""


class LedgerValueError(SovcloudError, ValueError):
    """An amount, option or date the ledger cannot take (a negative token count, an expiry in the past).

    Not a :class:`LedgerError`: callers that treat a ledger error as "the database is unavailable" must not
    mistake a bad value for an outage.
    """

    exit_code = 2


class InsufficientFunds(LedgerError):
    """A tenant's grants and credits cannot cover a request's worst-case cost."""
