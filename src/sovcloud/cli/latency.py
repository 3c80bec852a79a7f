"""``sovcloud latency FROM TO [--json]``: modelled round-trip time between two places.

``rtt = 2 d stretch / v_fibre + access_ms`` with ``d`` the great-circle distance
(:mod:`sovcloud.physics.latency`, fitted :data:`~sovcloud.physics.latency.DEFAULT_MODEL`). FROM and TO are each a
site id of the bundled scenario, ``lat,lon``, an ISO country code or name, or a city.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from sovcloud.errors import SovcloudError, UnknownEntity

from .common import cli_errors

if TYPE_CHECKING:
    from sovcloud.physics.latency import Place

__all__ = ["latency_command", "register", "scenario_site_coords"]


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def scenario_site_coords(sites: Any) -> dict[str, tuple[float, float]]:
    """``{site id: (lat, lon)}`` from scenario site records (objects or mappings with id, lat, lon).

    Records lacking an id or finite coordinates are skipped, so an empty or partial list is fine.
    """
    out: dict[str, tuple[float, float]] = {}
    for rec in sites or ():
        sid, lat, lon = _field(rec, "id"), _field(rec, "lat"), _field(rec, "lon")
        if sid is None or lat is None or lon is None:
            continue
        try:
            la, lo = float(lat), float(lon)
        except (TypeError, ValueError):
            continue
        if math.isfinite(la) and math.isfinite(lo):
            out[str(sid)] = (la, lo)
    return out


def _load_sites() -> tuple[dict[str, tuple[float, float]], str | None]:
    """Site coordinates of the bundled scenario, or ``({}, why)`` when it cannot be loaded."""
    from sovcloud.scenario.loader import load_scenario

    try:
        scenario = load_scenario()
    except Exception as exc:  # site ids are optional here: cities, countries and lat,lon still work
        return {}, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return scenario_site_coords(getattr(scenario, "sites", None)), None


def _resolve(text: str, sites: dict[str, tuple[float, float]], sites_error: str | None) -> Place:
    from sovcloud.physics.latency import resolve_place

    try:
        return resolve_place(text, sites)
    except UnknownEntity as exc:
        if sites_error is None:
            raise
        raise UnknownEntity(f"{exc} (scenario sites unavailable: {sites_error})") from exc


def _place_json(query: str, p: Place) -> dict[str, Any]:
    return {"query": query, "name": p.name, "kind": p.kind, "lat": p.lat, "lon": p.lon}


def latency_command(
    src: str = typer.Argument(..., help="from: site id, 'lat,lon', country (code or name) or city"),
    dst: str = typer.Argument(..., help="to: site id, 'lat,lon', country (code or name) or city"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Modelled round-trip time (ms) between two places."""
    from sovcloud.geo import haversine_km
    from sovcloud.physics.latency import DEFAULT_MODEL, fibre_bound_ms

    try:
        sites, sites_error = _load_sites()
        a = _resolve(src, sites, sites_error)
        b = _resolve(dst, sites, sites_error)
        distance = float(haversine_km(a.lat, a.lon, b.lat, b.lon))
        rtt = float(DEFAULT_MODEL.rtt_ms(distance))
        bound = float(fibre_bound_ms(distance))
    except SovcloudError as exc:
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(code=exc.exit_code) from exc
    if json_out:
        payload = {
            "from": _place_json(src, a),
            "to": _place_json(dst, b),
            "distance_km": round(distance, 3),
            "rtt_ms": round(rtt, 3),
            "fibre_bound_ms": round(bound, 3),
            "model": {"stretch": DEFAULT_MODEL.stretch, "access_ms": DEFAULT_MODEL.access_ms,
                      "fibre_km_per_ms": DEFAULT_MODEL.fibre_km_per_ms},
        }
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    table = Table(title="Modelled round-trip time")
    table.add_column("")
    table.add_column("place")
    table.add_column("kind")
    table.add_column("lat", justify="right")
    table.add_column("lon", justify="right")
    table.add_row("from", a.name, a.kind, f"{a.lat:.4f}", f"{a.lon:.4f}")
    table.add_row("to", b.name, b.kind, f"{b.lat:.4f}", f"{b.lon:.4f}")
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(f"distance {distance:,.0f} km   RTT {rtt:.1f} ms   (light-in-fibre bound {bound:.1f} ms; "
                  f"stretch {DEFAULT_MODEL.stretch:g}, access {DEFAULT_MODEL.access_ms:g} ms)")


def register(app: typer.Typer) -> None:
    """Add ``latency`` to ``app``.

    ``ignore_unknown_options`` lets a southern or western ``lat,lon`` such as ``-23.55,-46.63`` stand as
    a positional argument: click would otherwise read its leading ``-`` as the start of an option. The
    command has no short options, so no character of a coordinate can be taken for one.
    """
    app.command("latency", help="Estimated network round trip between two places (city, country, site id, "
                "lat,lon).", context_settings={"ignore_unknown_options": True})(cli_errors(latency_command))
