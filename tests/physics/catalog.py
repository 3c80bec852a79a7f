"""The bundled default scenario, loaded once for the physics tests.

The physics takes catalog entries (``ModelArch``, ``Accelerator``) and never loads a scenario; the
tests resolve ids here: ``SC.model("llama-3.1-70b")``, ``SC.chip("h100-sxm")``.
"""

from __future__ import annotations

from sovcloud.scenario.loader import load_scenario

__all__ = ["SC"]

#: The bundled default scenario (its catalog of models and accelerators).
SC = load_scenario()
