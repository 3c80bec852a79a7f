"""The scenario: its schema (pydantic models), YAML loading with overlays, shocks as text, and diagnostics.

May import sovcloud.errors, sovcloud.vocab and sovcloud.geo only.
"""
