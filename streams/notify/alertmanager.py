"""Alerts as Prometheus Alertmanager sees them (``POST /api/v2/alerts``), and the router that posts them.

An alert becomes one Alertmanager alert whose labels are what routing, grouping, inhibition and
silences match on (tenant, detector, severity, entity type, entity, principal, ATLAS techniques, and the
alert id, so each Spyglass alert is its own Alertmanager alert), and whose annotations are what a person
reads (title, explanation, evidence, a link to its Grafana investigation page). Label and annotation
values come from events, so from whoever sent them: they are cut to a bounded length and are data to
Alertmanager (its templates never evaluate them).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from schemas.alerts import Alert
from streams.notify.base import DeliveryError

# the Grafana alert-investigation dashboard (grafana/dashboards_src/dashboards.py, a test keeps them equal)
INVESTIGATION_UID = "spyglass-alert-investigation"
LABEL_MAX = 256  # characters of a label value
ANNOTATION_MAX = 4000  # characters of an annotation
LINK_MARGIN_MS = 3_600_000  # the investigation link's time range: an hour either side of the alert
TECHNIQUE_PREFIX = "atlas:"
SOURCE = "spyglass-notify"  # the source label: inhibits Grafana's copy of an alert (streams/stack/alertmanager.yml)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ms_of(iso: str) -> int:
    """An alert time (ISO 8601, ``Z`` or an offset) in epoch milliseconds; naive times are UTC."""
    t = datetime.fromisoformat(iso)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as the RFC 3339 UTC time Alertmanager takes."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def principal_of(alert: Alert, header: str | None) -> str | None:
    """Whose alert it is: the worker's ``principal`` record header, or the entity of a principal's alert."""
    if alert.entity_type == "principal":
        return alert.entity
    return header or None


def labels(alert: Alert, principal: str | None) -> dict[str, str]:
    """The labels Alertmanager routes, groups, inhibits and silences on.

    Examples:
        >>> from schemas.alerts import Evidence
        >>> a = Alert(alert_id="ab12", tenant="acme", detector="api.rate_spike", kind="api", entity_type="api_key",
        ...           entity="k1", severity="high", score=0.8, first_seen="2026-11-02T10:00:00.000Z",
        ...           last_seen="2026-11-02T10:00:00.000Z", title="Rate spike", explanation="",
        ...           evidence=Evidence(features=[], event_ids=[]), tags=["atlas:AML.T0024", "owasp:LLM10"])
        >>> labels(a, "ana")["techniques"], labels(a, None).get("principal")
        ('AML.T0024', None)
    """
    out = {
        "alertname": alert.detector, "source": SOURCE, "alert_id": alert.alert_id, "tenant": alert.tenant,
        "detector": alert.detector,
        "severity": alert.severity, "kind": alert.kind, "entity_type": alert.entity_type, "entity": alert.entity,
        "techniques": ",".join(t[len(TECHNIQUE_PREFIX):] for t in alert.tags if t.startswith(TECHNIQUE_PREFIX)),
        "tags": ",".join(alert.tags),
    }
    if principal:
        out["principal"] = principal
    return {k: _cut(v, LABEL_MAX) for k, v in out.items() if v}


def evidence_summary(alert: Alert, features: int = 6) -> str:
    """The evidence in one paragraph: the strongest features against their baselines, and the events.

    Examples:
        >>> from schemas.alerts import Evidence, Feature
        >>> ev = Evidence(features=[Feature(name="calls", value=300.0, baseline=12.5, contribution=0.8)],
        ...               event_ids=["e1", "e2"])
        >>> a = Alert(alert_id="x", tenant="t", detector="d", kind="api", entity_type="api_key", entity="k",
        ...           severity="high", score=0.8, first_seen="", last_seen="", title="", explanation="",
        ...           evidence=ev, tags=[])
        >>> evidence_summary(a)
        'calls 300 (usually 12.5, 80% of the finding); events: e1, e2'
    """
    ranked = sorted(alert.evidence.features, key=lambda f: -f.contribution)
    parts = []
    for f in ranked[:features]:
        text = f"{f.name} {f.value:g}"
        details = ([f"usually {f.baseline:g}"] if f.baseline is not None else []) + (
            [f"{f.contribution:.0%} of the finding"] if 0 < f.contribution < 1 else [])
        parts.append(text + (f" ({', '.join(details)})" if details else ""))
    if len(ranked) > features:
        parts.append(f"and {len(ranked) - features} more feature(s)")
    ids = alert.evidence.event_ids
    pieces = [", ".join(parts)] if parts else []
    if ids:
        pieces.append("events: " + ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else ""))
    return _cut("; ".join(pieces), ANNOTATION_MAX)


def investigation_url(grafana_url: str, alert: Alert) -> str:
    """The Grafana alert-investigation page of this alert, over the hours around it."""
    try:
        start, end = ms_of(alert.first_seen) - LINK_MARGIN_MS, ms_of(alert.last_seen) + LINK_MARGIN_MS
        span = {"from": str(start), "to": str(end)}
    except ValueError:
        span = {}
    query = urlencode({"var-alert": alert.alert_id, **span}, quote_via=quote)
    return f"{grafana_url.rstrip('/')}/d/{INVESTIGATION_UID}/alert-investigation?{query}"


def payload(alert: Alert, principal: str | None, *, grafana_url: str, ends_ms: int) -> dict[str, Any]:
    """One postable Alertmanager alert: firing until ``ends_ms`` (a time already past resolves it)."""
    link = investigation_url(grafana_url, alert)
    try:  # never after its end: Alertmanager refuses that (an event clock ahead of this one, a resolved alert)
        starts: str | None = rfc3339(min(ms_of(alert.first_seen), ends_ms))
    except ValueError:
        starts = None
    out: dict[str, Any] = {
        "labels": labels(alert, principal),
        "annotations": {
            "summary": _cut(f"{alert.title}: {alert.entity_type} {alert.entity} (tenant {alert.tenant})",
                            ANNOTATION_MAX),
            "description": _cut(alert.explanation, ANNOTATION_MAX),
            "evidence": evidence_summary(alert),
            "score": f"{alert.score:.3f}",
            "dashboard": link,
        },
        "endsAt": rfc3339(ends_ms),
        "generatorURL": link,
    }
    if starts is not None:
        out["startsAt"] = starts
    return out


class AlertmanagerRouter:
    """Posts alerts to one Alertmanager's v2 API."""

    name = "alertmanager"

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s

    def post(self, payloads: list[dict[str, Any]]) -> None:
        """``POST /api/v2/alerts``; a 4xx answer is permanent (these alerts), anything else transient."""
        if not payloads:
            return
        body = json.dumps(payloads).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",  # noqa: S310 - http(s) only (settings)
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310
                r.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace").strip()
            raise DeliveryError(f"Alertmanager answered {exc.code}: {detail}",
                                permanent=400 <= exc.code < 500 and exc.code not in (408, 429)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"Alertmanager is not reachable: {reason}") from None
