"""The catalog a caller holding model and chip ids resolves them with.

The physics computes on catalog entries (:class:`~sovcloud.scenario.catalog.ModelArch`,
:class:`~sovcloud.scenario.catalog.Accelerator`) and never loads a scenario itself. Code that works
from ids (the calibration cases of :mod:`sovcloud.physics.calibrate`) takes a :class:`Catalog`
argument; :class:`sovcloud.scenario.model.Scenario` is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sovcloud.scenario.catalog import Accelerator, ModelArch

__all__ = ["Catalog"]


class Catalog(Protocol):
    """Models and accelerators by id: ``model(id)`` and ``chip(id)`` raise UnknownEntity for an unknown id."""

    @property
    def models(self) -> Sequence[ModelArch]:
        """Every model of the catalog, in catalog order."""
        ...

    @property
    def accelerators(self) -> Sequence[Accelerator]:
        """Every accelerator of the catalog, in catalog order."""
        ...

    def model(self, model_id: str) -> ModelArch:
        """The model with id ``model_id``."""
        ...

    def chip(self, chip_id: str) -> Accelerator:
        """The accelerator with id ``chip_id``."""
        ...
