"""Regenerate the default scenario's sites and grid data from the project's public facts.

    python tools/build_global_2025.py ../shared/facts

reads regions.yaml and grid.yaml from the facts folder and writes
src/sovcloud/data/global-2025/sites.yaml, carrying each number's source. Values the facts leave
null are filled from the ASSUMED tables below and labelled as assumptions in the output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sovcloud.geo import find_city
from sovcloud.scenario.yamlio import dump_yaml, read_yaml

PERIODS = [2025, 2026, 2027]
OUT = Path(__file__).resolve().parents[1] / "src/sovcloud/data/global-2025/sites.yaml"

# --- labelled assumptions (not in the facts) -------------------------------------------------
MW_PER_AZ = 8.0  # IT power usable for AI serving per availability zone today
EXPAND_CAPEX_PER_MW = 10.0e6  # industry rule of thumb for hyperscale build cost per MW of IT load
BUILD_CAPEX_PER_MW = 11.0e6
BUILD_FIXED_CAPEX = 40.0e6  # land, grid connection and campus works of a new site
OPEX_PER_MW_YEAR = 0.4e6
HOT_HUMID = {"SG", "MY", "ID", "PH", "TH", "AE", "SA", "HK"}
PRICE_ASSUMED = {"HK": 0.15, "ID": 0.09, "PH": 0.17, "JP": 0.17, "BR": 0.10, "MX": 0.10}
# announced expansions (Apsara 2025-09-24) and national compute hubs get larger expansion caps
EXPAND_CAP = {
    "ap-northeast-1": [10, 40, 80], "ap-northeast-2": [10, 40, 80], "ap-southeast-3": [10, 40, 80],
    "ap-southeast-8": [10, 40, 80], "me-east-1": [10, 30, 60], "na-south-1": [10, 30, 60],
    "ap-southeast-6": [5, 20, 40], "cn-wulanchabu": [50, 150, 300], "cn-zhangjiakou": [50, 150, 300],
    "cn-huhehaote": [50, 150, 300], "cn-zhongwei": [0, 100, 200],
}
DEFAULT_EXPAND_CAP = [5, 20, 40]
RENEWABLE = {"EU": (0.9, 20.0), "CN": (0.6, 10.0), "OTHER": (0.5, 30.0)}
EU = {"DE", "FR", "NL", "GB"}


def _price(grid: dict[str, Any], country: str, region_id: str) -> tuple[float, str]:
    g = grid["countries"].get(country, {})
    v = g.get("electricity_price_usd_per_kwh")
    src = g.get("price_source", "")
    if isinstance(v, (int, float)):
        return float(v), f"{g.get('price_basis', '')} ({src})"
    if isinstance(v, dict):
        if "low" in v:
            return round((v["low"] + v["high"]) / 2, 4), f"midpoint of {v['low']}-{v['high']} ({src})"
        key = next((k for k in v if k.startswith(region_id)), None)
        if key:
            return float(v[key]), f"{key} ({src})"
    return PRICE_ASSUMED[country], ""


def site_from_region(r: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
    country = r["country"]
    g = grid["countries"][country]
    price, price_src = _price(grid, country, r["id"])
    cap = EXPAND_CAP.get(r["id"], DEFAULT_EXPAND_CAP)
    status = r["status"]
    retire = 2026 if status == "shutting_down" else None
    avail = 2026 if r.get("as_of") == 2026 and r.get("founded") in (None, 2026) else None
    installed = {p: r["zones"] * MW_PER_AZ for p in PERIODS if (avail is None or p >= avail)
                 and (retire is None or p < retire)}
    region_block = "CN" if country == "CN" else ("EU" if country in EU else "OTHER")
    ren_share, ren_price = RENEWABLE[region_block]
    site: dict[str, Any] = {
        "id": r["id"], "name": r["name"], "city": r["city"], "country": country,
        "lat": r["lat"], "lon": r["lon"], "kind": "existing", "status": status,
        "operated_by": "partner" if status == "active_partner_operated" else "own",
        "availability_zones": r["zones"], "founded": r.get("founded"),
        "available_from": avail, "retire_from": retire,
        "installed_power_mw": installed,
        "options": [] if retire else [{
            "id": "expand", "kind": "expand", "capex_usd_per_mw": EXPAND_CAPEX_PER_MW,
            "opex_usd_per_mw_year": OPEX_PER_MW_YEAR, "lead_time_months": 12,
            "power_cap_mw": dict(zip(PERIODS, map(float, cap), strict=True)),
        }],
        "pue": 1.3 if country in HOT_HUMID else 1.2,
        "wue_l_per_kwh": 0.3,
        "carbon_g_per_kwh": g["ember_owid"]["gco2_per_kwh"],
        "electricity_usd_per_kwh": price,
        "renewable": {"max_share": ren_share, "price_usd_per_mwh": ren_price},
        "sources": {
            "*": f"regions.yaml: {r['source']} (confidence {r['confidence']})",
            "carbon_g_per_kwh": f"Ember via OWID, {g['ember_owid']['year']}: {grid['meta']['ember_owid_source']}",
            "pue": "Alibaba Cloud self-built DCs FY2024 average PUE 1.200 (Alibaba 2024 ESG report)",
        },
        "assumptions": {
            "installed_power_mw": f"not public: {MW_PER_AZ:g} MW of AI-usable IT power per availability zone",
            "options": f"expansion at US${EXPAND_CAPEX_PER_MW / 1e6:g}M per MW (industry rule of thumb), "
                       f"US${OPEX_PER_MW_YEAR / 1e6:g}M per MW-year; caps larger for announced expansions",
            "wue_l_per_kwh": "not published by the operator; 0.3 L/kWh (rounded up from Microsoft FY25 0.27)",
            "renewable": "PPA/green-certificate availability and premium by region: assumption",
        },
    }
    if country in HOT_HUMID:
        site["assumptions"]["pue"] = "hot/humid climate: 1.3 instead of the fleet average 1.2"
    if price_src:
        site["sources"]["electricity_usd_per_kwh"] = price_src
    else:
        site["assumptions"]["electricity_usd_per_kwh"] = "no price in the facts; indicative industrial price"
    if avail:
        site["assumptions"]["available_from"] = "appears in 2026 documents only; serves from 2026"
    if retire:
        site["sources"]["retire_from"] = "OSS endpoint table marks the region as shutting down"
    return {k: v for k, v in site.items() if v is not None}


def _build_option(power_cap_mw: dict[int, float]) -> dict[str, Any]:
    """A greenfield build: 18 months to power, opening cost plus cost per MW (assumptions above)."""
    return {"id": "build", "kind": "build", "fixed_capex_usd": BUILD_FIXED_CAPEX,
            "capex_usd_per_mw": BUILD_CAPEX_PER_MW, "opex_usd_per_mw_year": OPEX_PER_MW_YEAR,
            "lead_time_months": 18, "power_cap_mw": power_cap_mw}


def candidates(grid: dict[str, Any]) -> list[dict[str, Any]]:
    ams = find_city("Amsterdam", "NL")
    fra_price, fra_src = _price(grid, "DE", "")
    nl_price, nl_src = _price(grid, "NL", "")
    common_ass = {
        "wue_l_per_kwh": "0.3 L/kWh assumed (not published)",
        "renewable": "assumption",
    }
    return [
        {
            "id": "sa-brazil-sao-paulo", "name": "Brazil (Sao Paulo) - announced", "city": "Sao Paulo",
            "country": "BR", "lat": -23.551, "lon": -46.633, "kind": "candidate", "status": "announced",
            "options": [_build_option({2026: 30.0, 2027: 60.0})],
            "pue": 1.3, "wue_l_per_kwh": 0.3,
            "carbon_g_per_kwh": grid["countries"]["BR"]["ember_owid"]["gco2_per_kwh"],
            "electricity_usd_per_kwh": PRICE_ASSUMED["BR"],
            "renewable": {"max_share": 0.9, "price_usd_per_mwh": 10.0},
            "sources": {"*": "Apsara 2025-09-24: first datacentre in Brazil (news.az; investnews.com.br); "
                             "Sao Paulo reported hub (news.hanna-ai.com)",
                        "carbon_g_per_kwh": grid["meta"]["ember_owid_source"]},
            "assumptions": {**common_ass, "options": "18-month build, 30 MW by 2026 and 60 MW by 2027; US$40M to open "
                                                     "(land, grid connection), US$11M per MW",
                            "electricity_usd_per_kwh": "no reliable price in the facts"},
        },
        {
            "id": "eu-netherlands", "name": "Netherlands - announced", "city": "Amsterdam (assumed)",
            "country": "NL", "lat": round(ams.lat, 4), "lon": round(ams.lon, 4),
            "kind": "candidate", "status": "announced",
            "options": [_build_option({2026: 20.0, 2027: 50.0})],
            "pue": 1.2, "wue_l_per_kwh": 0.3,
            "carbon_g_per_kwh": grid["countries"]["NL"]["ember_owid"]["gco2_per_kwh"],
            "electricity_usd_per_kwh": nl_price,
            "renewable": {"max_share": 0.9, "price_usd_per_mwh": 20.0},
            "sources": {"*": "Apsara 2025-09-24: first datacentre in the Netherlands (Reuters/The Register)",
                        "electricity_usd_per_kwh": nl_src,
                        "carbon_g_per_kwh": grid["meta"]["ember_owid_source"]},
            "assumptions": {**common_ass, "lat": "no city published: Amsterdam (GeoNames) assumed",
                            "lon": "as lat", "options": "18-month build; 20 MW by 2026, 50 MW by 2027; US$40M to open, "
                                                        "US$11M per MW"},
        },
        {
            "id": "eu-frankfurt-colo", "name": "Germany (Frankfurt) - partner colocation", "city": "Frankfurt",
            "country": "DE", "lat": 50.111, "lon": 8.682, "kind": "candidate", "status": "candidate",
            "operated_by": "partner",
            "options": [{"id": "lease", "kind": "lease", "partner": "partner colocation operator",
                         "lease_usd_per_kw_month": 180.0, "lead_time_months": 6,
                         "power_cap_mw": {2025: 10.0, 2026: 30.0, 2027: 50.0}, "lifetime_years": 10}],
            "pue": 1.35, "wue_l_per_kwh": 0.3,
            "carbon_g_per_kwh": grid["countries"]["DE"]["ember_owid"]["gco2_per_kwh"],
            "electricity_usd_per_kwh": fra_price,
            "renewable": {"max_share": 0.9, "price_usd_per_mwh": 20.0},
            "sources": {"electricity_usd_per_kwh": fra_src,
                        "carbon_g_per_kwh": grid["meta"]["ember_owid_source"]},
            "assumptions": {**common_ass, "options": "wholesale colocation in Frankfurt ~US$180/kW-month, "
                                                     "6 months to power, 10-year term",
                            "pue": "colocation facility 1.35"},
        },
    ]


def read_facts(path: Path) -> dict[str, Any]:
    """One facts file as plain data; exits with every problem (file:line) when it is not valid YAML."""
    doc, problems = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if doc is None:
        raise SystemExit("\n".join(p.render() for p in problems))
    data: dict[str, Any] = doc.data
    return data


def main(facts: Path) -> None:
    regions = read_facts(facts / "regions.yaml")
    grid = read_facts(facts / "grid.yaml")
    sites = [site_from_region(r, grid) for r in regions["regions"]] + candidates(grid)
    header = (
        "# Sites of the default scenario global-2025: GENERATED by tools/build_global_2025.py from the\n"
        "# public facts (regions.yaml, grid.yaml). Each site carries its sources; values the facts do not\n"
        "# give are labelled under `assumptions`. Override any of them with `extends: global-2025`.\n"
    )
    OUT.write_text(header + dump_yaml({"sites": sites}, width=110), encoding="utf-8")
    print(f"wrote {len(sites)} sites to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/facts"))
