from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from sovcloud.errors import PhysicsError
from sovcloud.physics.energy import (
    NETWORK_OVERHEAD_SHARE,
    ChipPowerSpec,
    SiteParams,
    carbon_t,
    chip_power_w,
    energy_mwh,
    facility_power_mw,
    footprint,
    it_power_mw,
    load_fraction,
    water_m3,
)
from sovcloud.scenario.catalog import Accelerator

# One chip type used throughout: 700 W TDP, idle at 30 % of TDP, 8 per server, 4 kW host overhead
# per server at full load, so full power per chip is 700 + 4000 / 8 = 1200 W before the network.
TDP, IDLE, PER_SERVER, OVERHEAD = 700.0, 0.3, 8.0, 4000.0


def _it(chips: float, u: float, share: float = 0.08) -> float:
    return float(it_power_mw(chips, u, TDP, IDLE, PER_SERVER, OVERHEAD, share))


def test_zero_utilization_gives_idle_power() -> None:
    assert float(chip_power_w(0.0, TDP, IDLE)) == pytest.approx(210.0)
    # 1000 chips x 1200 W x 0.3 idle x 1.08 network = 388.8 kW
    assert _it(1000, 0.0) == pytest.approx(0.3888)


def test_full_utilization_gives_tdp_and_full_server_power() -> None:
    assert float(chip_power_w(1.0, TDP, IDLE)) == pytest.approx(TDP)
    assert _it(1000, 1.0, share=0.0) == pytest.approx(1.2)


def test_power_is_linear_in_utilization() -> None:
    u = np.linspace(0.0, 1.0, 11)
    p = it_power_mw(500.0, u, TDP, IDLE, PER_SERVER, OVERHEAD)
    assert np.allclose(np.diff(p, n=2), 0.0, atol=1e-12)
    slope = (p[-1] - p[0]) / 1.0
    # dynamic part = (1 - idle) of full: 500 x 1200 W x 0.7 x (1 + share) per unit utilisation
    assert slope == pytest.approx(500 * 1200 * 0.7 * (1 + NETWORK_OVERHEAD_SHARE) / 1e6)


def test_power_is_proportional_to_chips_and_network_share_adds() -> None:
    assert _it(2000, 0.4) == pytest.approx(2 * _it(1000, 0.4))
    assert _it(1000, 0.4, share=0.10) == pytest.approx(_it(1000, 0.4, share=0.0) * 1.10)
    by_site = it_power_mw(1000.0, 0.4, TDP, IDLE, PER_SERVER, OVERHEAD, np.array([0.0, 0.10]))
    assert np.allclose(by_site, [_it(1000, 0.4, share=0.0), _it(1000, 0.4, share=0.10)])


def test_pue_multiplies() -> None:
    it = np.array([0.5, 2.0])
    assert np.allclose(facility_power_mw(it, 1.4), [0.7, 2.8])
    assert np.allclose(facility_power_mw(it, np.array([1.0, 1.1])), [0.5, 2.2])


def test_units_on_a_hand_computed_example() -> None:
    # 1000 chips at u = 0.5: load 0.3 + 0.7 * 0.5 = 0.65 -> 1200 W * 0.65 = 780 W per chip
    # -> 780 kW, x 1.08 network = 842.4 kW = 0.8424 MW IT; PUE 1.25 -> 1.053 MW facility.
    it = _it(1000, 0.5)
    assert it == pytest.approx(0.8424)
    fac = float(facility_power_mw(it, 1.25))
    assert fac == pytest.approx(1.053)
    # 24 h: 20.2176 MWh IT, 25.272 MWh facility
    e_it, e_fac = float(energy_mwh(it, 24.0)), float(energy_mwh(fac, 24.0))
    assert e_it == pytest.approx(20.2176)
    assert e_fac == pytest.approx(25.272)
    # water: 1.8 L per IT kWh x 20,217.6 kWh = 36,391.68 L = 36.39168 m3
    assert float(water_m3(e_it, 1.8)) == pytest.approx(36.39168)
    # carbon: 400 g/kWh x (25,272 - 10,000) kWh = 6,108,800 g = 6.1088 t
    assert float(carbon_t(e_fac, 400.0, 10.0)) == pytest.approx(6.1088)
    assert float(carbon_t(e_fac, 400.0)) == pytest.approx(10.1088)


def test_footprint_matches_the_hand_example() -> None:
    spec = ChipPowerSpec(("x",), np.array([TDP]), np.array([IDLE]), np.array([PER_SERVER]), np.array([OVERHEAD]))
    sites = SiteParams(pue=np.array([1.25]), wue_l_per_kwh=np.array([1.8]), carbon_g_per_kwh=np.array([400.0]))
    fp = footprint(np.array([[1000.0]]), np.full((1, 24), 0.5), spec, sites, renewable_mwh=np.array([10.0]))
    assert fp.it_mw.shape == (1, 24)
    assert np.allclose(fp.it_mw, 0.8424)
    assert np.allclose(fp.facility_mw, 1.053)
    assert fp.it_mwh[0] == pytest.approx(20.2176)
    assert fp.facility_mwh[0] == pytest.approx(25.272)
    assert fp.water_m3[0] == pytest.approx(36.39168)
    assert fp.carbon_gross_t[0] == pytest.approx(10.1088)
    assert fp.carbon_t[0] == pytest.approx(6.1088)
    assert fp.renewable_used_mwh[0] == pytest.approx(10.0)
    totals = fp.totals()
    assert totals["peak_facility_mw"] == pytest.approx(1.053)
    assert totals["carbon_t"] == pytest.approx(6.1088)


def test_renewable_coverage_caps_carbon_at_zero() -> None:
    assert float(carbon_t(25.0, 400.0, 30.0)) == 0.0
    assert np.all(carbon_t(np.array([0.0, 5.0, 50.0]), 300.0, 20.0) >= 0.0)
    spec = ChipPowerSpec(("x",), np.array([TDP]), np.array([IDLE]), np.array([PER_SERVER]), np.array([OVERHEAD]))
    sites = SiteParams(pue=1.2, wue_l_per_kwh=0.5, carbon_g_per_kwh=np.array([400.0, 500.0]))
    fp = footprint(np.array([[100.0], [100.0]]), np.full((2, 24), 0.7), spec, sites,
                   renewable_mwh=np.array([1e6, 0.0]))
    assert fp.carbon_t[0] == 0.0
    assert fp.carbon_t_hourly[0].min() == 0.0
    assert fp.renewable_used_mwh[0] == pytest.approx(fp.facility_mwh[0])
    assert fp.carbon_t[1] == pytest.approx(fp.carbon_gross_t[1])


def test_hourly_matching_nets_hour_by_hour() -> None:
    spec = ChipPowerSpec(("x",), np.array([1000.0]), np.array([0.0]), np.array([1.0]), np.array([0.0]))
    sites = SiteParams(pue=1.0, wue_l_per_kwh=0.0, carbon_g_per_kwh=100.0)
    chips = np.array([[1000.0]])  # 1 MW at u = 1, network share 0 below
    util = np.array([[1.0, 1.0]])
    # annual matching: 1 MWh of contracts against 2 MWh -> 1 MWh uncovered -> 0.1 t
    fp_a = footprint(chips, util, spec, sites, renewable_mwh=np.array([1.0]), network_share=0.0)
    # hourly matching: 2 MWh in hour 0 (1 MWh wasted), none in hour 1 -> 1 MWh uncovered -> 0.1 t
    fp_h = footprint(chips, util, spec, sites, renewable_mwh=np.array([[2.0, 0.0]]), network_share=0.0)
    # hourly matching with a surplus that cannot cover the other hour: 3 MWh in hour 0 -> still 0.1 t
    fp_s = footprint(chips, util, spec, sites, renewable_mwh=np.array([[3.0, 0.0]]), network_share=0.0)
    assert fp_a.carbon_t[0] == pytest.approx(0.1)
    assert fp_h.carbon_t[0] == pytest.approx(0.1)
    assert fp_s.carbon_t[0] == pytest.approx(0.1)
    assert np.allclose(fp_h.carbon_t_hourly, [[0.0, 0.1]])
    assert np.allclose(fp_a.carbon_t_hourly, [[0.05, 0.05]])


def _spec2() -> ChipPowerSpec:
    return ChipPowerSpec(ids=("a", "b"), tdp_w=np.array([700.0, 400.0]), idle_fraction=np.array([0.3, 0.2]),
                         server_chips=np.array([8.0, 4.0]), server_overhead_w=np.array([4000.0, 1000.0]))


def test_footprint_broadcasts_site_chip_hour_and_agrees_with_elementwise_sum() -> None:
    rng = np.random.default_rng(7)
    n_site, n_hour = 3, 5
    chips = rng.integers(0, 200, size=(n_site, 2)).astype(float)
    util = rng.uniform(0, 1, size=(n_site, 2, n_hour))
    sites = SiteParams(pue=np.array([1.1, 1.3, 1.5]), wue_l_per_kwh=np.array([0.2, 1.0, 2.0]),
                       carbon_g_per_kwh=rng.uniform(50, 700, size=(n_site, n_hour)))
    spec = _spec2()
    fp = footprint(chips, util, spec, sites, dt_h=2.0)
    expect = it_power_mw(chips[:, :, None], util, spec.tdp_w[None, :, None], spec.idle_fraction[None, :, None],
                         spec.server_chips[None, :, None], spec.server_overhead_w[None, :, None]).sum(axis=1)
    assert fp.it_mw.shape == (n_site, n_hour)
    assert np.allclose(fp.it_mw, expect)
    assert np.allclose(fp.facility_mw, expect * np.array([1.1, 1.3, 1.5])[:, None])
    assert np.allclose(fp.water_m3, (expect * 2.0).sum(axis=1) * np.array([0.2, 1.0, 2.0]))
    assert np.allclose(fp.carbon_t, (fp.facility_mw * 2.0 * np.asarray(sites.carbon_g_per_kwh) / 1000).sum(axis=1))
    # per-site utilisation [site, hour] applies to every chip type of the site
    fp2 = footprint(chips, util[:, 0, :], spec, sites)
    fp3 = footprint(chips, np.repeat(util[:, :1, :], 2, axis=1), spec, sites)
    assert np.allclose(fp2.it_mw, fp3.it_mw)


def test_xarray_inputs_broadcast_by_dimension_name() -> None:
    rng = np.random.default_rng(3)
    chips_np = rng.integers(1, 100, size=(2, 2)).astype(float)
    util_np = rng.uniform(0, 1, size=(2, 2, 4))
    spec = _spec2()
    site_ids, hours = ["s1", "s2"], [0, 1, 2, 3]
    chips = xr.DataArray(chips_np, dims=("site", "chip"), coords={"site": site_ids, "chip": ["a", "b"]})
    # utilisation given in another dimension order
    util = xr.DataArray(util_np.transpose(2, 0, 1), dims=("hour", "site", "chip"),
                        coords={"hour": hours, "site": site_ids, "chip": ["a", "b"]})
    pue = xr.DataArray([1.2, 1.4], dims=("site",), coords={"site": site_ids})
    sites = SiteParams(pue=pue, wue_l_per_kwh=0.5, carbon_g_per_kwh=300.0)
    fp_x = footprint(chips, util, spec, sites)
    fp_n = footprint(chips_np, util_np, spec, SiteParams(pue=np.array([1.2, 1.4]), wue_l_per_kwh=0.5,
                                                           carbon_g_per_kwh=300.0))
    assert np.allclose(fp_x.facility_mw, fp_n.facility_mw)
    assert fp_x.site == ("s1", "s2") and fp_x.hour == (0, 1, 2, 3)
    ds = fp_x.to_xarray()
    assert ds["facility_mw"].dims == ("site", "hour")
    assert list(ds["site"].values) == site_ids
    # the elementwise functions keep DataArrays and align by name
    tdp = xr.DataArray(spec.tdp_w, dims=("chip",), coords={"chip": ["a", "b"]})
    idle = xr.DataArray(spec.idle_fraction, dims=("chip",), coords={"chip": ["a", "b"]})
    p = chip_power_w(util, tdp, idle)
    assert isinstance(p, xr.DataArray)
    assert np.allclose(p.transpose("site", "chip", "hour").values,
                       spec.tdp_w[None, :, None] * (spec.idle_fraction[None, :, None]
                                                    + (1 - spec.idle_fraction[None, :, None]) * util_np))


def test_misaligned_xarray_coordinates_are_rejected() -> None:
    spec = _spec2()
    chips = xr.DataArray(np.ones((2, 2)), dims=("site", "chip"), coords={"site": ["s1", "s2"]})
    util = xr.DataArray(np.full((2, 3), 0.5), dims=("site", "hour"), coords={"site": ["s2", "s1"]})
    with pytest.raises(PhysicsError, match="align"):
        footprint(chips, util, spec, SiteParams(pue=1.2, wue_l_per_kwh=0.5, carbon_g_per_kwh=300.0))


def test_spec_from_catalog_accelerators() -> None:
    acc = Accelerator(id="chip-x", vendor="V", name="X", family="f", origin_country="US",
                      tflops={"bf16": 100.0}, memory_gb=80, mem_bw_tbps=2.0, interconnect_gbps=100,
                      tdp_w=500, idle_power_fraction=0.25, unit_price_usd=1000, server_chips=4,
                      server_overhead_w=800, server_price_usd=1000)
    spec = ChipPowerSpec.from_accelerators([acc])
    assert spec.ids == ("chip-x",)
    assert spec.tdp_w.tolist() == [500.0] and spec.idle_fraction.tolist() == [0.25]
    assert spec.server_chips.tolist() == [4.0] and spec.server_overhead_w.tolist() == [800.0]


def test_site_params_from_site_records() -> None:
    class _Site:
        def __init__(self, pue: float, wue: float, ci: float) -> None:
            self.pue, self.wue_l_per_kwh, self.carbon_g_per_kwh = pue, wue, ci

    p = SiteParams.from_sites([_Site(1.2, 0.3, 500.0), _Site(1.5, 1.8, 20.0)])
    assert np.asarray(p.pue).tolist() == [1.2, 1.5]
    assert np.asarray(p.wue_l_per_kwh).tolist() == [0.3, 1.8]
    assert np.asarray(p.carbon_g_per_kwh).tolist() == [500.0, 20.0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: load_fraction(1.5, 0.3), "utilization"),
        (lambda: load_fraction(-0.1, 0.3), "utilization"),
        (lambda: load_fraction(0.5, 1.2), "idle_fraction"),
        (lambda: it_power_mw(-1.0, 0.5, 700.0, 0.3), "chips"),
        (lambda: it_power_mw(1.0, 0.5, 700.0, 0.3, server_chips=0.0), "server_chips"),
        (lambda: facility_power_mw(1.0, 0.9), "pue"),
        (lambda: energy_mwh(1.0, 0.0), "dt_h"),
        (lambda: water_m3(1.0, -0.1), "wue"),
        (lambda: carbon_t(1.0, np.nan), "carbon_g_per_kwh"),
        (lambda: carbon_t(1.0, 300.0, -5.0), "renewable"),
        (lambda: facility_power_mw(np.ones(3), np.ones(2) * 1.2), "broadcast"),
    ],
)
def test_bad_physics_input_raises(call: object, match: str) -> None:
    with pytest.raises(PhysicsError, match=match):
        call()  # type: ignore[operator]


def test_footprint_rejects_bad_layouts() -> None:
    spec = _spec2()
    sites = SiteParams(pue=1.2, wue_l_per_kwh=0.5, carbon_g_per_kwh=300.0)
    with pytest.raises(PhysicsError, match="chip"):
        footprint(np.ones((2, 3)), 0.5, spec, sites)
    with pytest.raises(PhysicsError, match="layout"):
        footprint(np.ones((2, 2)), np.full(2, 0.5), spec, sites)
    with pytest.raises(PhysicsError, match="sites"):
        footprint(np.ones((2, 2)), 0.5, spec, SiteParams(pue=np.array([1.2, 1.3, 1.4]), wue_l_per_kwh=0.5,
                                                           carbon_g_per_kwh=300.0))


_pos = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
_u = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(chips=_pos, u1=_u, u2=_u, tdp=st.floats(1.0, 2000.0), idle=_u, per_server=st.integers(1, 16),
       overhead=st.floats(0.0, 10000.0), pue=st.floats(1.0, 3.0), ci=st.floats(0.0, 1200.0),
       renewable=st.floats(0.0, 1e3))
def test_energy_is_non_negative_and_monotone_in_utilization(
    chips: float, u1: float, u2: float, tdp: float, idle: float, per_server: int, overhead: float,
    pue: float, ci: float, renewable: float,
) -> None:
    lo, hi = min(u1, u2), max(u1, u2)
    p_lo = float(it_power_mw(chips, lo, tdp, idle, per_server, overhead))
    p_hi = float(it_power_mw(chips, hi, tdp, idle, per_server, overhead))
    assert 0.0 <= p_lo <= p_hi
    f_lo, f_hi = float(facility_power_mw(p_lo, pue)), float(facility_power_mw(p_hi, pue))
    assert p_lo <= f_lo <= f_hi
    c_lo, c_hi = float(carbon_t(f_lo * 8760, ci, renewable)), float(carbon_t(f_hi * 8760, ci, renewable))
    assert 0.0 <= c_lo <= c_hi
