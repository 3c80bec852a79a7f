"""Base classes for scenario records: strict, immutable, and carrying their provenance.

Every number in a scenario either has a source or is a labelled assumption. An entity keeps
``sources`` and ``assumptions`` as maps from one of its own field names (or ``"*"`` for the
whole record) to a citation or to the reasoning behind the assumed value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["ID_PATTERN", "Entity", "Id", "Record"]

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
#: A lower-case identifier: letters, digits, '.', '_' and '-'.
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=80)]


class Record(BaseModel):
    """A strict, frozen record: unknown fields are errors, numbers are not strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Entity(Record):
    """A record with an id and provenance for its fields."""

    id: Id
    sources: dict[str, str] = Field(
        default_factory=dict, description="field name (or '*') -> citation: URL or document reference"
    )
    assumptions: dict[str, str] = Field(
        default_factory=dict, description="field name (or '*') -> why the value was assumed"
    )

    @model_validator(mode="before")
    @classmethod
    def _provenance_names_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = set(cls.model_fields)
        for key in ("sources", "assumptions"):
            block = data.get(key)
            if isinstance(block, dict):
                for name in block:
                    base = re.split(r"[.\[]", str(name), maxsplit=1)[0]
                    if name != "*" and base not in names:
                        raise ValueError(
                            f"{key} names '{name}', which is not a field of {cls.__name__}; "
                            f"use one of its fields or '*'"
                        )
        return data

    def source_of(self, name: str) -> str | None:
        """The citation for field ``name`` (or the whole record), if any."""
        return self.sources.get(name) or self.sources.get("*")
