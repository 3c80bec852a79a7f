"""``python -m sovcloud.cli``: the same as the ``sovcloud`` console script."""

from __future__ import annotations

from .app import main

main()
