"""The report page in real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright).

The page must open offline: every request that is not ``file://`` is aborted and
counted, and none may happen. No console error, every chart drawn (plotly's
``.js-plotly-plot`` with its SVG), and the HTML and script injected through a tag, a
model name and an error text shown as text without running. A screenshot is kept in
the test's tmp directory. Chromium missing is a failure, never a skip: CI installs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import costkit
from tests.report_helpers import IMG, SCRIPT, day, fill, row

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_page_opens_offline_draws_every_chart_and_runs_no_injected_code(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    rows = [
        row(day(f"2026-11-{d:02d}", h), output=50 * h, tags={"team": [IMG, SCRIPT, "search"][h % 3]})
        for d in range(1, 8)
        for h in range(1, 9)
    ]
    rows.append(
        row(day("2026-11-03", 10), model=IMG, price_id=None, cost_nanousd=0, status="error", error=SCRIPT)
    )
    fill(url, rows)
    report = costkit.report(
        url,
        since="2026-11-01",
        until="2026-11-08",
        by=["tag:team"],
        budgets=[costkit.Budget("monthly <b>x</b>", "1.00", period="month")],
    )
    page_file = report.write(tmp_path / "out", ["html"])[0]
    html = page_file.read_text()
    import plotly.offline

    bundle = plotly.offline.get_plotlyjs()
    assert html.count(bundle[:500]) == 1  # plotly.js inlined once, not once per chart
    assert len(html) < len(bundle) + 1_000_000

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None
            )
            page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
            page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))

            def route(route_: object) -> None:
                request = route_.request  # type: ignore[attr-defined]
                if request.url.startswith("file://"):
                    route_.continue_()  # type: ignore[attr-defined]
                else:
                    requests.append(request.url)
                    route_.abort()  # type: ignore[attr-defined]

            page.route("**/*", route)
            page.goto(page_file.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(report.figures)}",
                timeout=30_000,
            )
            charts = page.locator(".js-plotly-plot")
            assert charts.count() == len(report.figures) == 5  # daily spend and tokens, model, team, budgets
            for index in range(charts.count()):
                assert charts.nth(index).locator("svg.main-svg").count() >= 1
                assert (charts.nth(index).locator(".gtitle").text_content() or "").strip() != ""
            ticks = page.locator("#chart-by_tag_team .ytick text").all_text_contents()
            assert IMG in ticks and SCRIPT in ticks  # the chart shows the tag as the text it is
            budget_ticks = page.locator("#chart-budgets .xtick text").all_text_contents()
            assert budget_ticks == ["monthly <b>x</b>"]  # not a bold "x"
            assert page.evaluate("window.__pwned") is None
            assert page.locator("img").count() == 0
            team_table = page.locator('table[data-table="by_tag_team"]')
            assert IMG in team_table.inner_text()
            assert SCRIPT in team_table.inner_text()
            assert SCRIPT in page.locator('table[data-table="problems"]').inner_text()
            assert "monthly <b>x</b>" in page.locator('table[data-table="budgets"]').inner_text()
            assert "$" in page.locator('[data-path="totals.cost_usd"]').inner_text()
            embedded = page.evaluate("JSON.parse(document.getElementById('costkit-report').textContent)")
            assert embedded["totals"] == report.data["totals"]
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            page.emulate_media(media="print")  # the print stylesheet must not break the page either
            page.screenshot(path=str(tmp_path / "report-print.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requests == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
