"""sovcloud: plan, simulate and operate a sovereign, geo-distributed AI inference cloud."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
