from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sovcloud.cli import app as cli_app
from sovcloud.cli.latency import latency_command, scenario_site_coords
from sovcloud.errors import PhysicsError, UnknownEntity
from sovcloud.geo import haversine_km
from sovcloud.physics.latency import (
    DEFAULT_MODEL,
    FIBRE_KM_PER_MS,
    LatencyModel,
    calibration_data,
    calibration_table,
    fibre_bound_ms,
    fit,
    resolve_place,
    rtt_matrix,
    rtt_ms,
)
from sovcloud.scenario import loader as scenario_module

# ---------------------------------------------------------------------------------------------- model


def test_fibre_speed_is_c_over_group_index() -> None:
    assert pytest.approx(299.792458 / 1.468) == FIBRE_KM_PER_MS
    assert float(fibre_bound_ms(1000.0)) == pytest.approx(2000.0 / 204.2183, rel=1e-5)


def test_rtt_formula_on_a_hand_example() -> None:
    m = LatencyModel(stretch=1.5, access_ms=5.0)
    # 2 x 1000 km x 1.5 / 204.2183 km/ms = 14.6901 ms, + 5 ms access
    assert float(m.rtt_ms(1000.0)) == pytest.approx(19.6901, abs=1e-4)
    assert float(m.rtt_ms(0.0)) == 5.0
    assert m.rtt_ms(np.array([[0.0, 1000.0]])).shape == (1, 2)


def test_default_model_is_the_fit_of_the_shipped_csv() -> None:
    refit = fit()
    assert refit.stretch == pytest.approx(DEFAULT_MODEL.stretch, rel=1e-3)
    assert refit.access_ms == pytest.approx(DEFAULT_MODEL.access_ms, rel=1e-3)
    assert LatencyModel.fit() == refit


def test_default_model_meets_the_accuracy_target_on_measured_pairs() -> None:
    table = calibration_table()
    assert len(table) == 32
    in_range = table[(table.distance_km >= 500) & (table.distance_km <= 20_000)]
    assert len(in_range) == 31
    assert float(in_range.error_pct.abs().median()) <= 15.0


def test_default_model_is_physical() -> None:
    assert DEFAULT_MODEL.stretch >= 1.0 and DEFAULT_MODEL.access_ms >= 0.0
    # not wildly off the light-in-fibre bound either: backbone paths are ~1.3-2x the great circle
    assert 1.2 <= DEFAULT_MODEL.stretch <= 2.2
    assert DEFAULT_MODEL.access_ms <= 20.0


def test_fit_recovers_the_constants_of_exact_synthetic_data() -> None:
    d = np.array([100.0, 800.0, 2500.0, 6000.0, 12000.0])
    truth = LatencyModel(stretch=1.4, access_ms=3.0)
    got = fit(d, truth.rtt_ms(d))
    assert got.stretch == pytest.approx(1.4, rel=1e-4)
    assert got.access_ms == pytest.approx(3.0, rel=1e-3)
    # the same from a DataFrame with a distance column, and from coordinates
    df = pd.DataFrame({"distance_km": d, "rtt_ms": truth.rtt_ms(d)})
    assert fit(df).stretch == pytest.approx(1.4, rel=1e-4)


def test_fit_is_robust_to_one_detoured_route() -> None:
    d = np.linspace(500.0, 15000.0, 20)
    truth = LatencyModel(stretch=1.6, access_ms=6.0)
    y = truth.rtt_ms(d)
    y[7] *= 2.5  # one badly detoured path
    got = fit(d, y, quantile=0.5)
    assert got.stretch == pytest.approx(1.6, rel=0.02)


def test_lower_quantile_fits_below_the_median_fit() -> None:
    df = calibration_data()
    low, mid = fit(df, quantile=0.35), fit(df, quantile=0.5)
    d = np.array([1000.0, 5000.0, 10000.0])
    assert np.all(low.rtt_ms(d) < mid.rtt_ms(d))


def test_rtt_matrix_is_all_pairs_and_matches_pairwise() -> None:
    rng = np.random.default_rng(0)
    lat_a, lon_a = rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300)
    lat_b, lon_b = rng.uniform(-60, 70, 40), rng.uniform(-180, 180, 40)
    m = rtt_matrix(lat_a, lon_a, lat_b, lon_b)
    assert m.shape == (300, 40)
    i, j = 17, 33
    d = float(haversine_km(lat_a[i], lon_a[i], lat_b[j], lon_b[j]))
    assert m[i, j] == pytest.approx(float(rtt_ms(d)))
    assert np.allclose(DEFAULT_MODEL.rtt_between(lat_a[:40], lon_a[:40], lat_b, lon_b), np.diagonal(m[:40]))


def test_known_pair_london_new_york() -> None:
    # 5,570 km great circle: bound 54.6 ms; measured public-Internet pings 71-78 ms (CSV)
    london, ny = resolve_place("London"), resolve_place("New York")
    rtt = float(rtt_matrix([london.lat], [london.lon], [ny.lat], [ny.lon])[0, 0])
    assert 54.6 < rtt < 110.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: rtt_ms(-1.0),
        lambda: rtt_ms(np.nan),
        lambda: rtt_matrix([95.0], [0.0], [0.0], [0.0]),
        lambda: LatencyModel(stretch=0.9, access_ms=1.0),
        lambda: LatencyModel(stretch=1.5, access_ms=-1.0),
        lambda: fit(np.array([1.0, 2.0]), np.array([1.0])),
        lambda: fit(np.array([100.0, 200.0]), np.array([0.0, 3.0])),
        lambda: fit(np.array([100.0, 200.0]), np.array([2.0, 3.0]), quantile=1.0),
    ],
)
def test_bad_input_raises_physics_error(call: Any) -> None:
    with pytest.raises(PhysicsError):
        call()


_d = st.floats(min_value=0.0, max_value=20_100.0, allow_nan=False)


@given(d1=_d, d2=_d, stretch=st.floats(1.0, 4.0), access=st.floats(0.0, 50.0))
def test_rtt_is_monotone_and_above_the_fibre_bound(d1: float, d2: float, stretch: float, access: float) -> None:
    lo, hi = min(d1, d2), max(d1, d2)
    for m in (DEFAULT_MODEL, LatencyModel(stretch=stretch, access_ms=access)):
        r_lo, r_hi = float(m.rtt_ms(lo)), float(m.rtt_ms(hi))
        assert r_lo <= r_hi
        assert r_lo >= float(fibre_bound_ms(lo)) and r_hi >= float(fibre_bound_ms(hi))


# ---------------------------------------------------------------------------------------------- places

SITES = {"eu-fra-1": (50.11, 8.68), "ap-sin-1": (1.35, 103.82)}


def test_resolve_site_id_first() -> None:
    p = resolve_place("eu-fra-1", SITES)
    assert (p.kind, p.name, p.lat, p.lon) == ("site", "eu-fra-1", 50.11, 8.68)
    assert resolve_place("EU-FRA-1", SITES).name == "eu-fra-1"


def test_resolve_lat_lon() -> None:
    p = resolve_place(" -33.87, 151.21 ")
    assert (p.kind, p.lat, p.lon) == ("latlon", -33.87, 151.21)
    with pytest.raises(UnknownEntity, match="lat,lon"):
        resolve_place("91,0")


def test_resolve_country_by_code_and_name() -> None:
    de = resolve_place("DE")
    assert de.kind == "country" and de.name == "Germany"
    assert 47 < de.lat < 55 and 6 < de.lon < 15
    assert resolve_place("germany") == de
    # a country name wins over a same-named city (Armenia, Colombia)
    assert resolve_place("Armenia").kind == "country"


def test_resolve_city_names_accents_and_alternates() -> None:
    paris = resolve_place("Paris")
    assert paris.kind == "city" and paris.name == "Paris, FR"
    assert resolve_place("sao paulo").name == "São Paulo, BR"
    assert resolve_place("Frankfurt").name == "Frankfurt am Main, DE"
    assert resolve_place("Frankfurt, Germany").name == "Frankfurt am Main, DE"
    portland = resolve_place("Portland, US")
    assert portland.kind == "city" and portland.lon < -100  # Oregon, the most populous


def test_unknown_places_raise_unknown_entity() -> None:
    with pytest.raises(UnknownEntity, match=r"unknown place 'Qwzxv'.*eu-fra-1"):
        resolve_place("Qwzxv", SITES)
    with pytest.raises(UnknownEntity, match="no city"):
        resolve_place("Antarctica")
    with pytest.raises(UnknownEntity):
        resolve_place("   ")


# ---------------------------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    app.command("latency")(latency_command)
    return app


def _fake_scenario(monkeypatch: pytest.MonkeyPatch, sites: list[Any]) -> None:
    monkeypatch.setattr(scenario_module, "load_scenario", lambda *a, **k: SimpleNamespace(sites=sites))


def test_cli_json_between_cities(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_scenario(monkeypatch, [])
    res = CliRunner().invoke(_app(), ["latency", "London", "New York", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["from"]["name"] == "London, GB" and out["to"]["name"] == "New York City, US"
    assert out["distance_km"] == pytest.approx(5570, abs=5)
    assert out["rtt_ms"] == pytest.approx(float(rtt_ms(out["distance_km"])), abs=1e-2)
    assert out["rtt_ms"] > out["fibre_bound_ms"]


def test_cli_site_ids_from_the_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_scenario(monkeypatch, [SimpleNamespace(id="eu-fra-1", lat=50.11, lon=8.68),
                                 {"id": "ap-sin-1", "lat": 1.35, "lon": 103.82}])
    res = CliRunner().invoke(_app(), ["latency", "eu-fra-1", "ap-sin-1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["from"]["kind"] == "site" and out["to"]["kind"] == "site"
    d = float(haversine_km(50.11, 8.68, 1.35, 103.82))
    assert out["distance_km"] == pytest.approx(d, abs=1e-3)


def test_cli_table_output(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_scenario(monkeypatch, [])
    res = CliRunner().invoke(_app(), ["latency", "Paris", "DE"])
    assert res.exit_code == 0, res.output
    assert "Paris, FR" in res.output and "Germany" in res.output and "RTT" in res.output


def test_cli_unknown_place_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_scenario(monkeypatch, [])
    res = CliRunner().invoke(_app(), ["latency", "Qwzxv", "Paris"])
    assert res.exit_code == 2
    assert "unknown place 'Qwzxv'" in res.output
    assert "Traceback" not in res.output


def test_cli_survives_a_broken_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("scenario under construction")

    monkeypatch.setattr(scenario_module, "load_scenario", broken)
    ok = CliRunner().invoke(_app(), ["latency", "Paris", "Berlin", "--json"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(_app(), ["latency", "eu-fra-1", "Paris"])
    assert bad.exit_code == 2 and "scenario sites unavailable" in bad.output


def test_scenario_site_coords_skips_incomplete_records() -> None:
    recs = [SimpleNamespace(id="a", lat=1.0, lon=2.0), {"id": "b", "lat": None, "lon": 3.0},
            SimpleNamespace(id="c"), {"id": "d", "lat": "x", "lon": 1.0}]
    assert scenario_site_coords(recs) == {"a": (1.0, 2.0)}
    assert scenario_site_coords(None) == {}


@pytest.mark.parametrize(("lat", "lon"), [(-23.55, -46.63), (-23.55, 46.63), (23.55, -46.63), (23.55, 46.63)])
@pytest.mark.parametrize("json_first", [False, True])
def test_sovcloud_latency_takes_coordinates_of_every_hemisphere(
    monkeypatch: pytest.MonkeyPatch, lat: float, lon: float, json_first: bool
) -> None:
    _fake_scenario(monkeypatch, [])
    here, there = f"{lat},{lon}", f"{-lat},{-lon}"
    args = ["latency", "--json", here, there] if json_first else ["latency", here, there, "--json"]
    res = CliRunner().invoke(cli_app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["from"]["lat"], out["from"]["lon"]) == (lat, lon)
    assert (out["to"]["lat"], out["to"]["lon"]) == (-lat, -lon)
    assert out["distance_km"] == pytest.approx(float(haversine_km(lat, lon, -lat, -lon)), abs=1e-3)


def test_sovcloud_latency_southern_coordinate_to_a_city(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_scenario(monkeypatch, [])
    res = CliRunner().invoke(cli_app, ["latency", "-23.55,-46.63", "Amsterdam"])
    assert res.exit_code == 0, res.output
    assert "Amsterdam" in res.output and "RTT" in res.output
