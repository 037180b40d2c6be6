"""The HTML report's page without a store or a browser (tests/integration opens it in Chromium)."""

from __future__ import annotations

import re

from streams.htmlreport import ReportData, TopAlert, render


def _chart(page: str, cid: str) -> str:
    m = re.search(rf'<svg class="chart" id="{cid}".*?</svg>', page, re.S)
    assert m is not None, cid
    return m.group(0)


def test_an_empty_store_says_so():
    page = render(ReportData(0, 0, 0, 0, 60, {}, {}, [], []))
    assert "nothing stored yet" in page and "1970" not in page
    assert "No alerts." in page


def test_each_count_is_one_mark_and_the_page_needs_nothing_from_outside():
    t0 = 1_762_000_200  # a multiple of the 300 s bucket, as the store gives them
    alert = TopAlert("ab12", "acme", "api.rate_burst", "api_key", "key_1", "high", 0.8, t0 + 60, t0 + 120,
                     "Request burst", "key_1 sent 40x its usual rate", [("rate", 40.0, 1.0), ("errors", 2.0, None)],
                     {"e2"}, [(t0, "api_usage", 0.0, "e1"), (t0 + 60, "api_usage", 0.8, "e2")])
    data = ReportData(100, 3, t0, t0 + 3600, 300, {"high": {t0: 1, t0 + 300: 1}, "info": {t0: 1}},
                      {"api.rate_burst": {t0: 2, t0 + 300: 1}}, [("acme", "api_key", "key_1", 1.6, 2)], [alert])
    page = render(data)
    assert _chart(page, "by-severity").count('class="mark"') == 3  # (bucket, severity) segments
    assert _chart(page, "by-detector").count('class="mark"') == 2
    assert _chart(page, "entities").count('class="mark"') == 1
    assert _chart(page, "evidence-1").count('class="mark"') == 3  # two values, one baseline
    timeline = _chart(page, "timeline-1")
    assert timeline.count('class="mark"') == 2 and "(in the alert)" in timeline
    assert "40.0× baseline" in page or "40× baseline" in page
    assert "src=" not in page and "href=" not in page and "@import" not in page  # self-contained
