"""PROVISIONAL: replaced by the full scenario loader shortly (same public names)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from .catalog import Accelerator, ModelArch
from .errors import UnknownEntity

__all__ = ["Scenario", "load_scenario"]


class Scenario(BaseModel):
    accelerators: list[Accelerator]
    models: list[ModelArch]
    sites: list[Any] = []

    def chip(self, chip_id: str) -> Accelerator:
        for a in self.accelerators:
            if a.id == chip_id:
                return a
        raise UnknownEntity(f"unknown chip '{chip_id}'")

    def model(self, model_id: str) -> ModelArch:
        for m in self.models:
            if m.id == model_id:
                return m
        raise UnknownEntity(f"unknown model '{model_id}'")


def load_scenario(name: str = "global-2025") -> Scenario:
    base = resources.files("sovcloud") / "data" / name
    data: dict[str, Any] = {}
    for f in ("accelerators.yaml", "models.yaml"):
        data.update(yaml.safe_load(base.joinpath(f).read_text()))
    return Scenario.model_validate(data)
