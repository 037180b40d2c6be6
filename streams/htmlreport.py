"""One self-contained HTML page of what the dashboards would show, read from the store: for a newcomer without
Grafana, or to attach to a ticket.

Alerts by severity and by detector over event time, the riskiest entities, and for the top alerts their
explanation, evidence against baseline and the entity's event timeline. The charts are SVG drawn here, inline:
no script library, no CDN, no request of any kind when the file is opened. Every value from the store is
event data, which an attacker may have written, so every one is HTML-escaped and the page's Content Security
Policy allows no source but its own inline style and its one hashed script (which only records what the
browser drew, for the test that opens the page in a real browser).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.alerts import SEVERITIES
from streams.sinks.base import Store

SEVERITY_COLOUR = {"critical": "#b10026", "high": "#e31a1c", "medium": "#fd8d3c", "low": "#41b6c4", "info": "#bdbdbd"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
TOP_ALERTS = 5
TOP_ENTITIES = 10
TOP_DETECTORS = 8
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass
class TopAlert:
    """One of the top alerts, with what its card shows."""

    alert_id: str
    tenant: str
    detector: str
    entity_type: str
    entity: str
    severity: str
    score: float
    first_seen: int  # epoch seconds
    last_seen: int
    title: str
    explanation: str
    features: list[tuple[str, float, float | None]]  # name, value, baseline (None: no baseline)
    event_ids: set[str]
    timeline: list[tuple[float, str, float, str]] = field(default_factory=list)  # ts, kind, score, event_id


@dataclass
class ReportData:
    """What the page shows, read from the store by :func:`gather`."""

    events: int
    alerts: int
    start: int  # event-time range, epoch seconds
    end: int
    bucket_s: int
    by_severity: dict[str, dict[int, int]]  # severity -> bucket start -> alerts
    by_detector: dict[str, dict[int, int]]
    entities: list[tuple[str, str, str, float, int]]  # tenant, entity type, entity, summed score, alerts
    top: list[TopAlert]
    where: str = ""


def _bucket(span_s: int) -> int:
    """A round bucket width giving at most about 60 bars over ``span_s``."""
    for width in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400):
        if span_s / width <= 60:
            return width
    return 30 * 86400


def gather(store: Store, *, where: str = "") -> ReportData:
    """Read the report's numbers from the store (the ``events`` and ``alerts`` tables of its database).

    Only our own identifiers and numbers are put into SQL: the database name, and alert ids checked to be hex.
    """
    db = store.database  # type: ignore[attr-defined]
    q = store.query
    alerts = f"(SELECT * FROM {db}.alerts FINAL)"  # noqa: S608
    n_events, lo, hi = q(f"SELECT count(), toUInt32(min(ts)), toUInt32(max(ts)) FROM {db}.events")[0]  # noqa: S608
    n_alerts = int(q(f"SELECT count() FROM {alerts}")[0][0])  # noqa: S608
    if n_alerts:
        alo, ahi = q(f"SELECT toUInt32(min(first_seen)), toUInt32(max(first_seen)) FROM {alerts}")[0]  # noqa: S608
        lo, hi = (min(int(lo), int(alo)), max(int(hi), int(ahi))) if int(n_events) else (int(alo), int(ahi))
    lo, hi = int(lo or 0), int(hi or 0)
    width = _bucket(max(hi - lo, 1))
    by_sev: dict[str, dict[int, int]] = defaultdict(dict)
    by_det: dict[str, dict[int, int]] = defaultdict(dict)
    rows = q(f"SELECT severity, detector, intDiv(toUInt32(first_seen), {width}) * {width} AS b, count() "  # noqa: S608
             f"FROM {alerts} GROUP BY severity, detector, b")
    for sev, det, b, n in rows:
        by_sev[sev][int(b)] = by_sev[sev].get(int(b), 0) + int(n)
        by_det[det][int(b)] = by_det[det].get(int(b), 0) + int(n)
    entities = [(t, et, e, float(s), int(n)) for t, et, e, s, n in q(
        f"SELECT tenant, entity_type, entity, sum(score) AS risk, count() FROM {alerts} "  # noqa: S608
        f"GROUP BY tenant, entity_type, entity ORDER BY risk DESC, entity LIMIT {TOP_ENTITIES}")]
    top = []
    for r in q(f"SELECT alert_id, tenant, detector, entity_type, entity, severity, score, "  # noqa: S608
               f"toUInt32(first_seen), toUInt32(last_seen), title, explanation, feature_names, feature_values, "
               f"feature_baselines, event_ids FROM {alerts} ORDER BY indexOf({list(SEVERITIES)}, severity) DESC, "
               f"score DESC, alert_id LIMIT {TOP_ALERTS}"):
        features = []
        for name, value, base in zip(r[11], r[12], r[13], strict=False):
            b = _num(base)
            features.append((str(name), _num(value) or 0.0, None if b is None or math.isnan(b) else b))
        top.append(TopAlert(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), float(r[6]),
                            int(r[7]), int(r[8]), str(r[9]), str(r[10]), features, {str(x) for x in r[14]}))
    for a in top:
        if _HEX.match(a.alert_id):  # alert ids are ours (a hash); anything else is not put into SQL
            a.timeline = _timeline(store, db, alerts, a.alert_id)
    return ReportData(int(n_events), n_alerts, lo, hi, width, dict(by_sev), dict(by_det), entities, top, where)


def _timeline(store: Store, db: str, alerts: str, alert_id: str) -> list[tuple[float, str, float, str]]:
    """The alert entity's events (and the alert's own) from a day before it to an hour after, latest 400."""
    this = f"(SELECT tenant, entity, event_ids, first_seen, last_seen FROM {alerts} "  # noqa: S608
    this += f"WHERE alert_id = '{alert_id}')"
    rows = store.query(
        f"SELECT toUInt32(ts), ts_ms, kind, score, event_id FROM {db}.events "  # noqa: S608
        f"WHERE ((tenant, entity) IN (SELECT tenant, entity FROM {this}) "
        f"OR event_id IN (SELECT arrayJoin(event_ids) FROM {this})) "
        f"AND ts >= (SELECT min(first_seen) FROM {this}) - 86400 AND ts <= (SELECT max(last_seen) FROM {this}) + 3600 "
        f"ORDER BY ts DESC, ts_ms DESC LIMIT 400")
    return [(int(ts) + int(ms) / 1000, str(kind), float(score), str(eid))
            for ts, ms, kind, score, eid in reversed(rows)]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):  # JSON output writes NaN and infinities as strings or null
        try:
            return float(v)
        except ValueError:
            return None
    return float(v)


# --- SVG -----------------------------------------------------------------------------------

def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _fmt(v: float | None) -> str:
    if v is None:
        return "no baseline"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _axes(cid: str, w: int, h: int, pad: tuple[int, int, int, int], ymax: float, x0: float, x1: float,
          title: str, ylabel: str) -> list[str]:
    left, right, top, bottom = pad
    out = [f'<svg class="chart" id="{cid}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="{_e(title)}">', f'<title>{_e(title)}</title>']
    for i in range(5):
        y = top + (h - top - bottom) * i / 4
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(ymax * (4 - i) / 4)}</text>')
    out.append(f'<text x="12" y="{top + (h - top - bottom) / 2:.0f}" transform="rotate(-90 12 '
               f'{top + (h - top - bottom) / 2:.0f})" text-anchor="middle">{_e(ylabel)}</text>')
    for i, anchor in enumerate(("start", "middle", "middle", "end")):
        t = x0 + (x1 - x0) * i / 3
        x = left + (w - left - right) * i / 3
        out.append(f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="{anchor}">{_e(_when(t))} UTC</text>')
    return out


def legend(items: list[tuple[str, str]]) -> str:
    """An HTML legend (it wraps where an SVG one would run off the chart)."""
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{colour}"></i>{_e(name)}</span>' for name, colour in items) + "</div>"


def stacked_bars(cid: str, title: str, series: dict[str, dict[int, int]], colours: dict[str, str], start: int,
                 end: int, width_s: int) -> str:
    """Bars per time bucket, one stacked segment per series (in ``colours``' order)."""
    w, h, pad = 900, 240, (56, 16, 10, 44)
    b0 = start // width_s * width_s
    buckets = list(range(b0, end + 1, width_s)) or [b0]
    totals = [sum(series.get(s, {}).get(b, 0) for s in colours) for b in buckets]
    ymax = _nice_max(max(totals or [0]))
    ymax = max(4, math.ceil(ymax / 4) * 4)  # whole alerts at every grid line
    out = _axes(cid, w, h, pad, ymax, buckets[0], buckets[-1] + width_s, title, "alerts")
    plot_w, plot_h = w - pad[0] - pad[1], h - pad[2] - pad[3]
    bw = plot_w / len(buckets)
    for i, b in enumerate(buckets):
        y = h - pad[3]
        for s, colour in colours.items():
            n = series.get(s, {}).get(b, 0)
            if not n:
                continue
            bh = plot_h * n / ymax
            y -= bh
            out.append(f'<rect class="mark" x="{pad[0] + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" '
                       f'height="{bh:.1f}" fill="{colour}"><title>{_e(s)}: {n:,} alerts from {_e(_when(b))} UTC'
                       f'</title></rect>')
    out.append("</svg>")
    return legend([(s, c) for s, c in colours.items() if series.get(s)]) + "\n".join(out)


def hbars(cid: str, title: str, rows: list[tuple[str, float, str]], unit: str) -> str:
    """Horizontal bars: (label, value, caption) each."""
    w, row_h = 900, 24
    h = 30 + row_h * max(len(rows), 1)
    label_w = 330
    vmax = max([v for _, v, _ in rows] or [1.0]) or 1.0
    out = [f'<svg class="chart" id="{cid}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="{_e(title)}">', f"<title>{_e(title)}</title>"]
    for i, (label, v, caption) in enumerate(rows):
        y = 10 + i * row_h
        bw = (w - label_w - 150) * v / vmax
        short = label if len(label) <= 48 else label[:47] + "…"
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(short)}</text>')
        out.append(f'<rect class="mark" x="{label_w}" y="{y + 3}" width="{max(bw, 1):.1f}" height="{row_h - 6}" '
                   f'fill="#d6604d"><title>{_e(label)}: {_e(caption)}</title></rect>')
        out.append(f'<text x="{label_w + bw + 6:.1f}" y="{y + 15}">{_e(caption)}</text>')
    if not rows:
        out.append(f'<text x="10" y="20">no {_e(unit)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def evidence_chart(cid: str, features: list[tuple[str, float, float | None]]) -> str:
    """Each feature's value against its baseline, on the feature's own scale."""
    w, row_h = 900, 34
    h = 4 + row_h * max(len(features), 1)
    label_w = 240
    out = [f'<svg class="chart" id="{cid}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="evidence against baseline">', "<title>evidence against baseline</title>"]
    for i, (name, value, base) in enumerate(features):
        y = 2 + i * row_h
        scale = max(abs(value), abs(base or 0.0)) or 1.0
        span = w - label_w - 260
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(name[:36])}</text>')
        vw = span * abs(value) / scale
        out.append(f'<rect class="mark" x="{label_w}" y="{y + 2}" width="{max(vw, 1):.1f}" height="12" '
                   f'fill="#b2182b"><title>{_e(name)} = {_fmt(value)}</title></rect>')
        if base is not None:
            bw = span * abs(base) / scale
            out.append(f'<rect class="mark" x="{label_w}" y="{y + 16}" width="{max(bw, 1):.1f}" height="12" '
                       f'fill="#4393c3"><title>baseline {_fmt(base)}</title></rect>')
        ratio = f" ({value / base:,.1f}× baseline)" if base not in (None, 0) else ""
        out.append(f'<text x="{label_w + span + 8}" y="{y + 15}">{_fmt(value)} vs {_fmt(base)}{_e(ratio)}</text>')
    if not features:
        out.append('<text x="10" y="20">no evidence features</text>')
    out.append("</svg>")
    return legend([("value", "#b2182b"), ("baseline", "#4393c3")]) + "\n".join(out)


def timeline_chart(cid: str, a: TopAlert) -> str:
    """The entity's events around the alert: event time across, one lane per event kind; the alert's own events
    red and larger, the alert's span shaded."""
    pts = a.timeline
    kinds = sorted({p[1] for p in pts}) or ["events"]
    lane_h = 34
    w, pad = 900, (130, 16, 8, 30)
    h = pad[2] + pad[3] + lane_h * len(kinds)
    x0 = min([p[0] for p in pts] + [a.first_seen]) - 60
    x1 = max([p[0] for p in pts] + [a.last_seen]) + 60
    plot_w = w - pad[0] - pad[1]

    def x(t: float) -> float:
        return pad[0] + plot_w * (t - x0) / (x1 - x0)

    out = [f'<svg class="chart" id="{cid}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           'aria-label="event timeline">', "<title>the entity's events around the alert</title>",
           f'<rect x="{x(a.first_seen):.1f}" y="{pad[2]}" width="{max(x(a.last_seen) - x(a.first_seen), 3):.1f}" '
           f'height="{lane_h * len(kinds)}" class="window"><title>the alert, {_e(_when(a.first_seen))} to '
           f"{_e(_when(a.last_seen))} UTC</title></rect>"]
    lane = {k: pad[2] + lane_h * (i + 0.5) for i, k in enumerate(kinds)}
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(kinds)}
    for k in kinds:
        out.append(f'<line x1="{pad[0]}" x2="{w - pad[1]}" y1="{lane[k]:.1f}" y2="{lane[k]:.1f}" class="grid"/>'
                   f'<text x="{pad[0] - 8}" y="{lane[k] + 4:.1f}" text-anchor="end">{_e(k)}</text>')
    for t, kind, score, eid in pts:
        hit = eid in a.event_ids
        out.append(f'<circle class="mark" cx="{x(t):.1f}" cy="{lane[kind]:.1f}" r="{6 if hit else 2 + 4 * score:.1f}" '
                   f'fill="{"#b10026" if hit else colour[kind]}" fill-opacity="{1 if hit else 0.6}" '
                   f'stroke="{"#000" if hit else "none"}"><title>{_e(kind)} {_e(eid)} at {_e(_when(t))} UTC, '
                   f'score {score:.2f}{" (in the alert)" if hit else ""}</title></circle>')
    for i, anchor in enumerate(("start", "middle", "middle", "end")):
        out.append(f'<text x="{pad[0] + plot_w * i / 3:.1f}" y="{h - 10}" text-anchor="{anchor}">'
                   f"{_e(_when(x0 + (x1 - x0) * i / 3))} UTC</text>")
    if not pts:
        out.append(f'<text x="{pad[0] + 10}" y="{pad[2] + 20}">no stored events of this entity</text>')
    out.append("</svg>")
    items = [(k, colour[k]) for k in kinds if pts] + [("in the alert", "#b10026"), ("the alert's span", "#fddbc7")]
    return legend(items) + "\n".join(out)


# --- the page ------------------------------------------------------------------------------

_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var drawn = 0, marks = svg.querySelectorAll('.mark');
    marks.forEach(function (m) { var b = m.getBBox(); if (b.width > 0 && b.height > 0) { drawn += 1; } });
    var r = svg.getBoundingClientRect();
    out.push({id: svg.id, marks: marks.length, drawn: drawn, width: Math.round(r.width), height: Math.round(r.height)});
  });
  document.getElementById('render-check').textContent = JSON.stringify(out);
});
"""

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px;margin-bottom:2px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:0} .muted{color:#666} .card{border:1px solid #ddd;border-radius:6px;padding:12px;margin:14px 0}
.sev{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;margin-right:6px}
svg.chart{display:block;margin:6px 0;max-width:100%;height:auto} svg text{font-size:11px;fill:#333}
.grid{stroke:#eee} .window{fill:#fddbc7;opacity:.8} #render-check{display:none}
.legend{font-size:12px;margin-top:8px} .legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
table{border-collapse:collapse} td,th{padding:2px 10px;text-align:left}
"""


def render(d: ReportData) -> str:
    """The page as one string: HTML, inline CSS and SVG, and the one hashed script."""
    sev_colours = {s: SEVERITY_COLOUR[s] for s in reversed(SEVERITIES)}
    detectors = sorted(d.by_detector, key=lambda k: -sum(d.by_detector[k].values()))
    det_series = {k: d.by_detector[k] for k in detectors[:TOP_DETECTORS]}
    if len(detectors) > TOP_DETECTORS:
        other: dict[int, int] = defaultdict(int)
        for k in detectors[TOP_DETECTORS:]:
            for b, n in d.by_detector[k].items():
                other[b] += n
        det_series[f"+{len(detectors) - TOP_DETECTORS} more"] = dict(other)
    det_colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(det_series)}
    script_hash = base64.b64encode(hashlib.sha256(_CHECK_SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; img-src 'none'"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        "<title>Spyglass report</title>", f"<style>{_STYLE}</style>",
        f"<script>{_CHECK_SCRIPT}</script>", "</head><body>",
        "<h1>Spyglass report</h1>",
        f'<p class="muted">{d.events:,} events and {d.alerts:,} alerts, '
        + (f"event time {_e(_when(d.start))} to {_e(_when(d.end))} UTC" if d.events or d.alerts
           else "nothing stored yet")
        + f'{", read from " + _e(d.where) if d.where else ""}. Generated '
        f'{_e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M"))} UTC. Grafana\'s dashboards show the same and more.</p>',
        "<h2>Alerts by severity over time</h2>",
        stacked_bars("by-severity", "alerts by severity over event time", d.by_severity, sev_colours, d.start, d.end,
                     d.bucket_s) if d.alerts else '<p class="muted">No alerts.</p>',
        "<h2>Alerts by detector over time</h2>",
        stacked_bars("by-detector", "alerts by detector over event time", det_series, det_colours, d.start, d.end,
                     d.bucket_s) if d.alerts else '<p class="muted">No alerts.</p>',
        "<h2>Riskiest entities</h2>",
        '<p class="muted">Summed score of each entity\'s alerts.</p>',
        hbars("entities", "riskiest entities", [(f"{e} ({et}, {t})", s, f"{s:,.2f} over {n:,} alerts")
                                                for t, et, e, s, n in d.entities], "alerts"),
        f"<h2>Top {len(d.top)} alerts</h2>",
        '<p class="muted">By severity, then score. An info alert is a finding below its detector\'s alerting '
        "threshold, or a control that worked.</p>",
    ]
    if not d.top:
        parts.append('<p class="muted">No alerts.</p>')
    for i, a in enumerate(d.top, start=1):
        parts += [
            '<div class="card">',
            f'<h3><span class="sev" style="background:{SEVERITY_COLOUR.get(a.severity, "#999")}">{_e(a.severity)}'
            f"</span>{_e(a.title)}</h3>",
            f'<p class="muted">{_e(a.detector)} · {_e(a.entity_type)} <b>{_e(a.entity)}</b> · tenant {_e(a.tenant)} · '
            f"score {a.score:.2f} · {_e(_when(a.first_seen))} to {_e(_when(a.last_seen))} UTC · alert {_e(a.alert_id)}"
            "</p>",
            f"<p>{_e(a.explanation)}</p>",
            "<h4>Evidence against baseline</h4>", evidence_chart(f"evidence-{i}", a.features),
            "<h4>Event timeline</h4>", timeline_chart(f"timeline-{i}", a),
            "</div>",
        ]
    parts += ['<pre id="render-check"></pre>', "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(store: Store, path: Path, *, where: str = "") -> Path:
    """Gather from ``store``, render, write ``path`` (its folder made if missing); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gather(store, where=where)), encoding="utf-8")
    return path
