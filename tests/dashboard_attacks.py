"""Hostile dashboard inputs shared by the unit (chDB) and integration (ClickHouse 18.16) dashboard security tests.

Two tenants each have one failed API request. Tenant :data:`TENANT`'s event carries an unknown nested object
(the contract ignores unknown fields) that repeats ``client_ip`` and ``auth_result`` with other values before
the real ones, the way an emitter-controlled field would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from grafana.dashboards_src import boards
from grafana.dashboards_src.kit import PanelSpec

START = datetime(2026, 11, 21, 10, tzinfo=UTC)
TENANT, OTHER_TENANT = "acme", "globex"
REAL_IP, DECOY_IP, OTHER_IP = "10.0.0.1", "203.0.113.66", "10.9.9.9"
# Tenant values that close the string literal under Grafana's ``sqlstring`` format (which doubles ' and
# leaves \): the backslash escapes the first quote of a doubled pair, the second one ends the literal, and
# the rest of the value is SQL. A newline (``%0A`` in a URL) lets ``--`` comment out the leftovers.
TENANT_ESCAPES = ("\\' = '' OR (1 --\n) --", "\\' = '' OR tenant != '' OR (1 --\n) --")


def _event(event_id: str, tenant: str, ip: str, *, decoy: bool) -> bytes:
    head = {"event_id": event_id, "kind": "api_usage", "ts": (START + timedelta(minutes=5)).isoformat(),
            "tenant": tenant, "source": "gw"}
    if decoy:  # first in the object, so a reader that takes the first "client_ip" anywhere finds it
        head["extra"] = {"client_ip": DECOY_IP, "auth_result": "ok"}
    body = {"api_key_id": f"key-{tenant}", "principal": f"svc@{tenant}", "client_ip": ip, "method": "GET",
            "endpoint": "/v1/files", "status": 403, "auth_result": "forbidden"}
    return json.dumps({**head, **body}, separators=(",", ":")).encode()


def hostile_events() -> list[tuple[Any, bytes]]:
    """(decoded event, raw JSON) of the two tenants' failed requests, the first with the nested decoy."""
    from schemas.events import decode

    raws = [_event("evt-decoy", TENANT, REAL_IP, decoy=True), _event("evt-other", OTHER_TENANT, OTHER_IP, decoy=False)]
    return [(decode(r), r) for r in raws]


def write_hostile_events(store: Any) -> None:
    """Store :func:`hostile_events` as the worker's events sink does."""
    from streams.sinks.clickhouse import EventsSink

    EventsSink(store).write(hostile_events())


def panel(title: str) -> PanelSpec:
    """The panel of that title (on any board)."""
    return next(s for b in boards() for s in b.specs if s.title == title)
