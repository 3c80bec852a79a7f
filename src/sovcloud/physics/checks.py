"""Validation of the performance model's inputs, and the refusal text for an unsupported precision.

Invalid inputs raise :class:`~sovcloud.errors.PhysicsError`: counts must be integers of at least a
minimum (booleans refused), SLOs positive finite seconds or None, precisions one of
:data:`sovcloud.vocab.PRECISION_BYTES`, and models and chips catalog entries (callers holding ids
resolve them with their catalog first, e.g. ``scenario.model(id)``).
"""

from __future__ import annotations

import math

import numpy as np

from sovcloud.errors import PhysicsError
from sovcloud.scenario.catalog import Accelerator, ModelArch
from sovcloud.vocab import PRECISION_BYTES

__all__ = ["check_chip", "check_int", "check_model", "check_precision", "check_slo", "unsupported_reason"]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise PhysicsError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def check_slo(name: str, value: float | None) -> float | None:
    """``value`` as a float of seconds if it is positive and finite; None stays None (no SLO)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise PhysicsError(f"{name} must be a positive number of seconds or None (got {value!r})")
    return float(value)


def check_precision(precision: str) -> str:
    """``precision`` if it names a known number format."""
    if precision not in PRECISION_BYTES:
        raise PhysicsError(f"unknown precision '{precision}'; use one of {', '.join(PRECISION_BYTES)}")
    return precision


def check_model(model: object) -> ModelArch:
    """``model`` if it is a catalog :class:`~sovcloud.scenario.catalog.ModelArch` (an id is refused)."""
    if not isinstance(model, ModelArch):
        raise PhysicsError(f"expected a catalog ModelArch, got {model!r}; resolve model ids with the catalog "
                           "first (scenario.model(id))")
    return model


def check_chip(chip: object) -> Accelerator:
    """``chip`` if it is a catalog :class:`~sovcloud.scenario.catalog.Accelerator` (an id is refused)."""
    if not isinstance(chip, Accelerator):
        raise PhysicsError(f"expected a catalog Accelerator, got {chip!r}; resolve chip ids with the catalog "
                           "first (scenario.chip(id))")
    return chip


def unsupported_reason(chip: Accelerator, precision: str) -> str:
    """Why ``chip`` cannot serve at ``precision``, naming the precisions it does support."""
    kind = "tensor cores" if precision != "int8" else "integer tensor units"
    return f"{chip.id} has no {precision} {kind}; supported: {', '.join(chip.tflops)}"
