"""Shared pieces of the command line: the consoles and the error-to-exit-code decorator.

Every :class:`~sovcloud.errors.SovcloudError` raised by a command becomes a clear message on stderr
and its exit code (2 for bad input), never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from sovcloud.errors import ScenarioError, SovcloudError

__all__ = ["cli_errors", "err_console", "out_console"]

P = ParamSpec("P")
R = TypeVar("R")

out_console = Console(width=160)
err_console = Console(stderr=True, width=160)


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn sovcloud errors raised by a command into messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ScenarioError as exc:
            for problem in exc.problems:
                err_console.print(problem.render(), markup=False, highlight=False)
            n = len(exc.problems)
            err_console.print(f"error: {n} problem{'s' if n != 1 else ''} in scenario", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except SovcloudError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper
