"""Size and render time of the HTML report in a real headless browser (Debian's chromium).

    python benchmarks/report_render.py                      # solves the default plan first (~1 min)
    python benchmarks/report_render.py --plan out/plan.json [--sim DIR] [--runs 5]

Prints the time to build the page, its size in MB, and the render time: from navigation to every
plot drawn, as the page measures it (``performance.now()`` when the last plot resolves) and as
seen from Playwright (``goto`` to the page's rendered flag); median and range of ``--runs`` fresh
pages. Also prints console errors and network requests (there should be none). Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from sovcloud.report.write import build_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def solve_default(folder: Path) -> Path:
    """Run ``sovcloud plan`` (default scenario) into ``folder``; returns its plan.json."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sovcloud.cli", "plan", "--out", str(folder)], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"solved the default plan in {time.perf_counter() - t:.1f} s")
    return folder / "plan.json"


def render(page_path: Path, runs: int) -> None:
    url = page_path.resolve().as_uri()
    in_page: list[float] = []
    outside: list[float] = []
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url == url or r.url.startswith(("data:", "blob:"))
                    else requests.append(r.url))
            t = time.perf_counter()
            page.goto(url)
            page.wait_for_function("document.body.getAttribute('data-rendered') !== null", timeout=60_000)
            outside.append(time.perf_counter() - t)
            in_page.append(float(page.evaluate("document.body.getAttribute('data-render-ms')")) / 1000)
            rendered = page.evaluate("document.body.getAttribute('data-rendered')")
            context.close()
        browser.close()
    print(f"plots rendered: {rendered}")
    print(f"render, in page (navigation -> all plots): median {statistics.median(in_page):.2f} s "
          f"(min {min(in_page):.2f}, max {max(in_page):.2f}, {runs} runs)")
    print(f"render, from Playwright (goto -> flag):    median {statistics.median(outside):.2f} s "
          f"(min {min(outside):.2f}, max {max(outside):.2f})")
    print(f"console errors: {len(errors)}{': ' + errors[0][:200] if errors else ''}")
    print(f"network requests: {len(requests)}{': ' + requests[0] if requests else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, help="plan.json or its folder (default: solve the default scenario)")
    parser.add_argument("--sim", type=Path, help="simulation folder (summary.json)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="where to write the page (default: a temporary file)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = opts.plan if opts.plan is not None else solve_default(Path(tmp) / "plan")
        t = time.perf_counter()
        page = build_report(plan, opts.sim)
        built = time.perf_counter() - t
        out = opts.out if opts.out is not None else Path(tmp) / "report.html"
        out.write_text(page, encoding="utf-8")
        size = out.stat().st_size
        print(f"plan: {plan}")
        print(f"built the page in {built:.2f} s; size {size / 1e6:.2f} MB ({size / 2**20:.2f} MiB)")
        render(out, opts.runs)


if __name__ == "__main__":
    main()
