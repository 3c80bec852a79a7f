"""Backends of a plan: plan.json validation, deployments -> replicas and physics, and the route table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sovcloud.errors import PlanFileError
from sovcloud.routing.backends import backends_for, load_plan
from sovcloud.routing.router import LoadState, RouteTable, route_many
from sovcloud.scenario.loader import load_scenario
from sovcloud.world.compiled import compile as compile_world

DATA = Path(__file__).parents[1] / "data"


def test_backends_follow_the_deployments(plan_dir: Path) -> None:
    doc = load_plan(plan_dir)
    world = compile_world(load_scenario(doc.scenario.source))
    b = backends_for(doc, world)
    assert b.period == doc.periods[-1] and len(b) > 0
    deps = {(d.site, d.model, d.chip): d for d in doc.decisions.deployments if d.period == b.period}
    for i, bid in enumerate(b.ids):
        site, model, chip = bid.split("/")
        d = deps[(site, model, chip)]
        assert b.replicas[i] == int(d.chips // d.tp) and b.tp[i] == d.tp
        assert b.sites[b.site[i]] == site and b.models[b.model[i]] == model
    # physics: TPOT grows with the batch, service time is positive, slots = replicas x max batch
    assert np.all(b.tpot_s(b.max_batch.astype(float)) >= b.tpot_s(1.0))
    assert np.all(b.service_s(1.0) > 0) and np.all(b.slots == b.replicas * b.max_batch)


def test_route_table_never_offers_a_forbidden_site(plan_dir: Path) -> None:
    doc = load_plan(plan_dir / "plan.json")
    world = compile_world(load_scenario(doc.scenario.source))
    b = backends_for(doc, world)
    t = RouteTable.build(world, b)
    Z = len(t.zones)
    zones = np.repeat(np.arange(Z), len(t.models))
    models = np.tile(np.arange(len(t.models)), Z)
    d = route_many(t, LoadState.initial(b), zones, zones, models)
    res = world.ds.residency
    for z, m, bi in zip(zones, models, d.backend, strict=True):
        if bi >= 0:
            assert bool(res.sel(zone=t.zones[z], site=t.backend_site[bi]))
            assert t.models[m] == b.models[b.model[bi]]


def test_bad_plan_files_are_named_with_a_fix(tmp_path: Path, plan_dir: Path) -> None:
    with pytest.raises(PlanFileError, match="no such plan file; run `sovcloud plan"):
        load_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PlanFileError, match=r"bad.json:1: not valid JSON"):
        load_plan(bad)
    bad.write_text(json.dumps({"schema": "other/9"}), encoding="utf-8")
    with pytest.raises(PlanFileError, match=r"schema: expected 'sovcloud.plan/1' \(got 'other/9'\)"):
        load_plan(bad)
    data = json.loads((plan_dir / "plan.json").read_text(encoding="utf-8"))
    data["decisions"]["deployments"][0]["chips"] = -3
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PlanFileError, match=r"decisions.deployments.0.chips: .* \(got -3\)"):
        load_plan(bad)
    doc = load_plan(plan_dir)
    with pytest.raises(PlanFileError, match="period 1999 is not in the plan"):
        backends_for(doc, compile_world(load_scenario(doc.scenario.source)), 1999)
