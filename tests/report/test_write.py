"""The HTML report: sections and numbers, bad inputs, the simulation section, and a real browser.

Plans are solved once per session from the tiny scenarios (tests/data/tiny_*.yaml). The browser test
drives Debian's chromium (``/usr/bin/chromium``) with Playwright for Python, never a downloaded
browser, and fails when chromium is missing.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import sync_playwright
from typer.testing import CliRunner

from sovcloud.cli import app
from sovcloud.errors import PlanFileError
from sovcloud.plan.io import write_plan
from sovcloud.plan.make import PlanOptions, make_plan
from sovcloud.report.sources import citation_parts, source_rows
from sovcloud.report.write import build_report, write_report
from sovcloud.scenario.loader import load_scenario
from sovcloud.scenario.shocks import parse_shock

DATA = Path(__file__).parents[1] / "data"
SIM = DATA / "sim_summary"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ("summary", "map", "costs", "fleet", "resources", "served", "latency", "shortfalls", "solver", "shocks",
            "simulation", "sources")
runner = CliRunner()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def plan_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_a: one period, a candidate site, two residency groups, with the greedy baseline."""
    out = tmp_path_factory.mktemp("plan-a")
    src = DATA / "tiny_a.yaml"
    sc = load_scenario(src)
    write_plan(make_plan(sc), out, make_plan(sc, PlanOptions(solver="greedy")), source=str(src.resolve()))
    return out


@pytest.fixture(scope="session")
def plan_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_c: two periods, with a shock given on the command line."""
    out = tmp_path_factory.mktemp("plan-c")
    src = DATA / "tiny_c.yaml"
    plan = make_plan(load_scenario(src), PlanOptions(shocks=[parse_shock("power-cut:de-fra:0.5@2026")]))
    write_plan(plan, out, source=str(src.resolve()))
    return out


@pytest.fixture(scope="session")
def html_a(plan_a: Path) -> str:
    return build_report(plan_a)


def doc(plan_dir: Path) -> dict[str, Any]:
    return json.loads((plan_dir / "plan.json").read_text())  # type: ignore[no-any-return]


def figure(page: str, fig_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" data-plot="{fig_id}">(.*?)</script>', page, re.S)
    assert m is not None, f"no figure {fig_id}"
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def values(v: Any) -> list[float]:
    """Plotly JSON arrays are lists or base64 typed arrays."""
    if isinstance(v, dict) and "bdata" in v:
        return [float(x) for x in np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))]
    return [float(x) for x in v]


def copy_plan(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


# ------------------------------------------------------------------------------------------ content


def test_sections_and_self_contained(html_a: str) -> None:
    for section in SECTIONS:
        assert f'id="{section}"' in html_a, section
    parser = Tags()
    parser.feed(html_a)
    for tag, attrs in parser.tags:
        assert "src" not in attrs, f"<{tag}> loads {attrs['src']}"
        assert tag != "link", "no stylesheet or font links"
        if "href" in attrs:
            assert tag == "a", f"<{tag} href=...>"
    assert html_a.count("* plotly.js v") == 1, "plotly.js is inlined once"
    assert html_a.count('<script type="application/json" data-plot=') == 7 and html_a.count('"world_110m"') == 1
    assert "cdn.plot.ly/plotly" not in html_a.split("<script>", 1)[0]
    assert "Content-Security-Policy" in html_a and "connect-src 'none'" in html_a


def test_numbers_match_plan_json(plan_a: Path, html_a: str) -> None:
    d = doc(plan_a)
    solver = d["solver"]
    assert f"US${solver['objective_musd']:,.2f}M" in html_a
    assert f"{solver['gap'] * 100:.2f}%" in html_a and solver["status"] in html_a
    assert f"US${d['discounted_cost_musd']:,.2f}M" in html_a
    assert f"US${d['greedy_baseline']['discounted_cost_musd']:,.2f}M" in html_a
    for text in d["shortfalls"]:
        assert html.escape(text) in html_a
    table = html_a.split('id="latency-table"', 1)[1].split("</table>", 1)[0]
    for w, (p50, p95) in d["latency_ms_p50_p95"].items():
        assert f"<td>{w}</td><td class=\"num\">{p50:,.0f} ms</td><td class=\"num\">{p95:,.0f} ms</td>" in table
    costs = figure(html_a, "fig-costs")
    by_name = {t["name"]: t for t in costs["data"]}
    period = str(d["periods"][0])
    assert values(by_name["servers (capex)"]["y"])[0] == pytest.approx(d["costs_musd"][period]["capex_servers_musd"])
    assert values(by_name["energy"]["y"])[0] == pytest.approx(d["costs_musd"][period]["energy_musd"])
    served = figure(html_a, "fig-served")
    chat = next(t for t in served["data"] if t["name"] == "chat")
    assert values(chat["y"]) == pytest.approx([v * 100 for v in d["served_share"]["by_workload"]["chat"]])
    fleet = pd.read_parquet(plan_a / "fleet.parquet")
    chips = figure(html_a, "fig-fleet-chip")
    assert sum(sum(values(t["y"])) for t in chips["data"]) == pytest.approx(float(fleet["fleet_chips"].sum()))


def test_map_shows_sites_zones_flows_and_residency(plan_a: Path, html_a: str) -> None:
    fig = figure(html_a, "fig-map")
    names = [t.get("name", "") for t in fig["data"]]
    hover = " ".join(" ".join(t["text"]) if isinstance(t.get("text"), list) else str(t.get("text", ""))
                     for t in fig["data"])
    for site in doc(plan_a)["sites"]:
        assert site["name"] in hover
    assert any(n.startswith("zones: eu") for n in names) and any(n.startswith("zones: default") for n in names)
    assert any(t.get("name", "").startswith("flows (top") and t.get("showlegend") and t.get("visible")
               for t in fig["data"]), "the flows have a legend entry in the period shown"
    flows = pd.read_parquet(plan_a / "flows.parquet")
    top = flows.groupby(["zone", "site"])["served_mtok_day"].sum().reset_index().sort_values(
        "served_mtok_day", ascending=False)
    assert f"{top['zone'].iloc[0]} → {top['site'].iloc[0]}" in hover
    opened = pd.read_parquet(plan_a / "sites.parquet").query("site == 'fr-par'")["opened"].max() > 0.5
    assert any(n.endswith("· built") for n in names) == bool(opened)
    assert fig["layout"]["geo"]["resolution"] == 110 and fig["layout"]["geo"]["scope"] == "world"


def test_shocks_reapplied_and_periods(plan_c: Path) -> None:
    page = build_report(plan_c)
    assert "power-cut:de-fra:0.5@2026" in page
    assert "data-warning" not in page, "the reloaded, re-shocked scenario has the plan's SHA-256"
    lat = figure(page, "fig-latency")
    assert len(lat["layout"]["updatemenus"][0]["buttons"]) == 2


def test_scenario_change_is_a_warning(plan_a: Path, tmp_path: Path) -> None:
    folder = copy_plan(plan_a, tmp_path / "p")
    d = doc(folder)
    d["scenario"]["sha256"] = "f" * 64
    (folder / "plan.json").write_text(json.dumps(d))
    assert "has changed since the plan was made" in build_report(folder / "plan.json")


def test_sources_link_and_group() -> None:
    rows = source_rows(load_scenario())
    linked = [r for r in rows if r.has_link]
    assert len(linked) > 20
    for r in rows:  # every URL in a citation becomes a link
        text = "".join(t for t, _ in r.parts)
        assert r.has_link == ("http://" in text or "https://" in text), text
        assert all(not t.startswith("http") or is_url for t, is_url in r.parts)
    zones = [r for r in rows if r.entity == "DemandZone"]
    assert len(zones) == 1 and len(zones[0].ids) > 200
    assert citation_parts("see https://example.org/a (x)") == (("see ", False), ("https://example.org/a", True),
                                                              (" (x)", False))


def test_template_and_basemap_are_package_data() -> None:
    folder = resources.files("sovcloud.report") / "templates"
    assert (folder / "report.html.j2").is_file()
    topo = json.loads((folder / "world-110m.json").read_text(encoding="utf-8"))
    assert {"land", "countries"} <= set(topo["objects"])


# ------------------------------------------------------------------------------------------ simulation


def test_sim_section(plan_a: Path, tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    shutil.copytree(SIM, sim)
    pd.DataFrame({"hour": [0, 0, 1, 1], "site": ["de-fra", "us-ash"] * 2, "served": [10, 4, 12, 5],
                  "rejected": [0, 1, 2, 0], "utilization": [0.8, 0.1, 0.9, 0.2]}).to_parquet(sim / "timeline.parquet")
    page = build_report(plan_a, sim)
    assert "Tail latencies and SLO attainment" in page and "No simulation given" not in page
    assert "917 ms" in page and "17,250 ms" in page and "97.3%" in page  # chat TTFT p99, e2e p99, SLO
    assert "12,345 arrived" in page and "outage:de-fra@2025" in page
    assert "was run on another scenario" in page
    for fig_id in ("fig-sim-slo", "fig-sim-util", "fig-sim-timeline"):
        figure(page, fig_id)
    slo = figure(page, "fig-sim-slo")["data"][0]
    assert values(slo["x"]) == pytest.approx([97.31, 99.87, 98.12])


def test_without_sim_says_how(html_a: str) -> None:
    assert "No simulation given" in html_a and "fig-sim-slo" not in html_a


# ------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.update(schema="sovcloud.plan/0"), "schema: expected 'sovcloud.plan/1'"),
    (lambda d: d.pop("solver"), "solver: Field required"),
    (lambda d: d["checks"].update(residency_violations="many"), "checks.residency_violations"),
    (lambda d: d["scenario"].update(source=str(DATA / "nope.yaml")), "scenario.source: cannot load"),
])
def test_malformed_plan_json(plan_a: Path, tmp_path: Path, edit: Any, needle: str) -> None:
    folder = copy_plan(plan_a, tmp_path / "p")
    d = doc(folder)
    edit(d)
    (folder / "plan.json").write_text(json.dumps(d))
    with pytest.raises(PlanFileError, match=re.escape(needle)) as info:
        build_report(folder)
    assert str(folder / "plan.json") in str(info.value) and "fix:" in str(info.value)


def test_missing_and_broken_files(plan_a: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match="no such plan file"):
        build_report(tmp_path / "nowhere" / "plan.json")
    folder = copy_plan(plan_a, tmp_path / "p")
    (folder / "plan.json").write_text("{not json")
    with pytest.raises(PlanFileError, match="not valid JSON"):
        build_report(folder)
    folder = copy_plan(plan_a, tmp_path / "q")
    (folder / "flows.parquet").unlink()
    with pytest.raises(PlanFileError, match=r"flows\.parquet: no such file"):
        build_report(folder)
    pd.DataFrame({"zone": ["z"]}).to_parquet(folder / "flows.parquet")
    with pytest.raises(PlanFileError, match=r"flows\.parquet: column\(s\) site, model"):
        build_report(folder)
    (folder / "flows.parquet").write_text("not parquet")
    with pytest.raises(PlanFileError, match="not a readable Parquet table"):
        build_report(folder)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.update(schema="sovcloud.sim/9"), "schema: expected 'sovcloud.sim/1' (got 'sovcloud.sim/9')"),
    (lambda d: d["requests"].update(served="lots"), "requests.served"),
    (lambda d: d["latency_s"]["chat"].pop("tpot"), "latency_s.chat.tpot: Field required"),
    (lambda d: d["slo_attainment"].update(chat=1.5), "slo_attainment.chat: a share must be between 0 and 1 (got 1.5)"),
    (lambda d: d.pop("period"), "period: Field required"),
])
def test_malformed_sim(plan_a: Path, tmp_path: Path, edit: Any, needle: str) -> None:
    sim = tmp_path / "sim"
    sim.mkdir()
    d = json.loads((SIM / "summary.json").read_text())
    edit(d)
    (sim / "summary.json").write_text(json.dumps(d))
    with pytest.raises(PlanFileError, match=re.escape(needle)) as info:
        build_report(plan_a, sim)
    assert str(sim / "summary.json") in str(info.value) and "fix:" in str(info.value)
    with pytest.raises(PlanFileError, match="no such file"):
        build_report(plan_a, tmp_path / "empty")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_report(plan_a: Path, tmp_path: Path) -> None:
    folder = copy_plan(plan_a, tmp_path / "p")
    result = runner.invoke(app, ["report", "--plan", str(folder / "plan.json")])
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").stat().st_size > 1_000_000 and "wrote" in result.output
    out = tmp_path / "x" / "r.html"
    result = runner.invoke(app, ["report", "--plan", str(folder), "--sim", str(SIM), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Tail latencies" in out.read_text()


def test_cli_bad_inputs_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--plan", str(tmp_path / "plan.json")])
    assert result.exit_code == 2
    assert "error:" in result.output and "no such plan file" in result.output and "Traceback" not in result.output
    (tmp_path / "plan.json").write_text(json.dumps({"schema": "other"}))
    result = runner.invoke(app, ["report", "--plan", str(tmp_path / "plan.json")])
    assert result.exit_code == 2 and "schema" in result.output


# ------------------------------------------------------------------------------------------ browser


def render_in_browser(page_path: Path, screenshot: Path) -> dict[str, Any]:
    """Open the report from disk in headless chromium; console errors, requests and what rendered."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    url = page_path.resolve().as_uri()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url == url or r.url.startswith(("data:", "blob:"))
                    else requests.append(r.url))
            page.goto(url)
            page.wait_for_function("document.body.getAttribute('data-rendered') !== null", timeout=30_000)
            state = page.evaluate("""() => ({
                rendered: document.body.getAttribute('data-rendered'),
                plots: Array.from(document.querySelectorAll('[data-plot-div]')).map(d => ({
                    id: d.id, svg: d.querySelectorAll('.main-svg').length,
                    marks: d.querySelectorAll('.trace, .point, .bars path, .hm image, .heatmaplayer image').length})),
                countries: (document.querySelector('#fig-map .layer.countries path') || {getAttribute: () => ''})
                    .getAttribute('d') || '',
                land: (document.querySelector('#fig-map .layer.land path') || {getAttribute: () => ''})
                    .getAttribute('d') || '',
                sitePoints: document.querySelectorAll('#fig-map .scattergeo .point').length,
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, **state}


@pytest.mark.slow
@pytest.mark.parametrize("with_sim", [False, True])
def test_report_in_real_browser(plan_a: Path, plan_c: Path, tmp_path: Path, with_sim: bool) -> None:
    plan = plan_c if with_sim else plan_a
    out = write_report(plan / "plan.json", tmp_path / "report.html", SIM if with_sim else None)
    shot = tmp_path / "report.png"
    state = render_in_browser(out, shot)
    assert state["errors"] == []
    assert state["requests"] == []
    plots = state["plots"]
    expected = 7 + (2 if with_sim else 0)
    assert len(plots) == expected and state["rendered"] == str(expected)
    for p in plots:
        assert p["svg"] >= 1 and p["marks"] >= 1, p
    assert len(state["countries"]) > 10_000 and len(state["land"]) > 10_000, "the base map was drawn"
    assert state["sitePoints"] >= 3
    assert shot.stat().st_size > 50_000
