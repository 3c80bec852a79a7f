"""The ``sovcloud`` command line: thin typer commands over the library, one module per command group.

May import typer, rich, :mod:`sovcloud.errors` and :mod:`sovcloud.vocab` at module level; every other
sovcloud module is imported inside the command that uses it, so ``sovcloud --help`` loads no solver,
server or database driver.
"""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
