"""``spyglass notify`` without services: alerts as Alertmanager sees them, the decoder, and the stage's rules
(what is committed, what is retried, what is skipped) over an in-memory consumer and router."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from schemas.alerts import Alert, Evidence, Feature, encode_alert
from schemas.errors import EventError
from streams.notify.alertmanager import LABEL_MAX, labels, payload
from streams.notify.base import DeliveryError
from streams.notify.stage import Notifier, decode_alert
from streams.settings import Settings


def alert(aid: str = "ab" * 12, *, severity: str = "critical", entity: str = "k1", detector: str = "api.rate_burst",
          last_seen: str | None = None, tags: tuple[str, ...] = ("atlas:AML.T0034", "owasp-llm:LLM10")) -> Alert:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return Alert(alert_id=aid, tenant="t1", detector=detector, kind="api_usage", entity_type="api_key",
                 entity=entity, severity=severity, score=0.95, first_seen=now, last_seen=last_seen or now,  # type: ignore[arg-type]
                 title="Rate burst", explanation="k1 made 300 calls.",
                 evidence=Evidence(features=[Feature(name="calls", value=300.0, baseline=10.0, contribution=0.9)],
                                   event_ids=["e1"]), tags=list(tags))


def test_the_investigation_link_names_the_dashboard_grafana_builds():
    from grafana.dashboards_src.dashboards import INVESTIGATION_UID
    from streams.notify import alertmanager

    assert alertmanager.INVESTIGATION_UID == INVESTIGATION_UID
    p = payload(alert(), "ana", grafana_url="https://g.example/", ends_ms=0)
    assert p["annotations"]["dashboard"].startswith(f"https://g.example/d/{INVESTIGATION_UID}/alert-investigation?")
    assert "var-alert=" + "ab" * 12 in p["generatorURL"] and p["endsAt"] == "1970-01-01T00:00:00.000Z"


def test_labels_are_cut_and_carry_what_routing_needs():
    hostile = "x" * 5000 + '"}\n{{ .Secret }}'
    got = labels(alert(entity=hostile), "ana")
    assert len(got["entity"]) == LABEL_MAX and got["principal"] == "ana"
    assert got["techniques"] == "AML.T0034" and got["severity"] == "critical" and got["alert_id"] == "ab" * 12
    assert all(isinstance(v, str) and v for v in got.values())


@pytest.mark.parametrize(("raw", "field"), [
    (b"not json", "$"),
    (None, "$"),
    (encode_alert(alert()).replace(b'"critical"', b'"urgent"'), "$.severity"),
    (encode_alert(alert(aid="'; DROP TABLE alerts --")), "$.alert_id"),
    (encode_alert(alert(last_seen="yesterday")), "$.last_seen"),
])
def test_a_record_that_is_not_an_alert_names_its_field(raw, field):
    with pytest.raises(EventError) as err:
        decode_alert(raw)
    assert err.value.field == field


@dataclass
class Rec:
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class Consumer:
    """An in-memory stand-in for kafka-python's consumer: hands out queued records, records commits."""

    def __init__(self) -> None:
        self.queue: list[tuple[TP, Rec]] = []
        self.commits: list[dict[int, int]] = []
        self.paused_: set[TP] = set()

    def poll(self, timeout_ms: int = 0) -> dict[TP, list[Rec]]:
        out: dict[TP, list[Rec]] = {}
        for tp, r in self.queue:
            if tp not in self.paused_:
                out.setdefault(tp, []).append(r)
        self.queue = [(tp, r) for tp, r in self.queue if tp in self.paused_]
        return out

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append({tp.partition: om.offset for tp, om in offsets.items()})

    def assignment(self) -> set[TP]:
        return {TP("a", 0), TP("a", 1)}

    def pause(self, *tps: TP) -> None:
        self.paused_ |= set(tps)

    def paused(self) -> set[TP]:
        return set(self.paused_)

    def resume(self, *tps: TP) -> None:
        self.paused_ -= set(tps)


class Router:
    name = "test"

    def __init__(self) -> None:
        self.posted: list[list[dict[str, Any]]] = []
        self.down = False
        self.refuse: set[str] = set()

    def post(self, payloads: list[dict[str, Any]]) -> None:
        if self.down:
            raise DeliveryError("away")
        if any(p["labels"]["alert_id"] in self.refuse for p in payloads):
            raise DeliveryError("bad label", permanent=True)
        self.posted.append(payloads)


def stage(statuses: dict[str, str] | None = None) -> tuple[Notifier, Consumer, Router, list[float]]:
    now = [time.time()]
    consumer, router = Consumer(), Router()
    n = Notifier(Settings(notify_refresh_s=10), router, consumer=consumer, clock=lambda: now[0],
                 statuses=(lambda ids: statuses) if statuses is not None else None)
    return n, consumer, router, now


def ids(router: Router) -> list[str]:
    return [p["labels"]["alert_id"] for batch in router.posted for p in batch]


def test_the_commit_never_passes_a_firing_alert_and_moves_once_it_is_resolved():
    statuses: dict[str, str] = {}
    n, consumer, router, now = stage(statuses)
    a, b = alert("a1" * 12), alert("b2" * 12, severity="info")
    consumer.queue = [(TP("a", 0), Rec(5, encode_alert(a))), (TP("a", 0), Rec(6, encode_alert(b))),
                      (TP("a", 1), Rec(3, b"garbage"))]
    n.step()
    assert ids(router) == [a.alert_id] and n.counts.below == 1 and n.counts.bad == 1
    assert consumer.commits[-1] == {0: 5, 1: 4}  # a fires: held at its offset; the bad record is past
    statuses[a.alert_id] = "false_positive"
    now[0] += 11
    n.step()
    assert router.posted[-1][0]["endsAt"] <= payload(a, None, grafana_url="", ends_ms=int(now[0] * 1000))["endsAt"]
    assert consumer.commits[-1] == {0: 7} and n.held() == [] and n.counts.by_status == {"false_positive": 1}


def test_an_unreachable_router_pauses_reading_and_is_retried_with_backoff():
    n, consumer, router, now = stage()
    router.down = True
    a = alert("a1" * 12)
    consumer.queue = [(TP("a", 0), Rec(0, encode_alert(a)))]
    n.step()
    assert n.counts.failures == 1 and consumer.paused_ and all(c.get(0, 0) <= 0 for c in consumer.commits)
    consumer.queue = [(TP("a", 1), Rec(0, encode_alert(alert("c3" * 12))))]
    n.step()  # paused and within the backoff: nothing read, nothing tried
    assert n.counts.failures == 1 and len(n.held()) == 1
    router.down = False
    now[0] += 1
    n.step()
    assert ids(router) == [a.alert_id] and not consumer.paused_
    n.step()
    assert "c3" * 12 in ids(router)


def test_an_alert_the_router_refuses_is_skipped_and_the_others_go_through():
    n, consumer, router, _ = stage()
    good, bad = alert("a1" * 12), alert("d4" * 12)
    router.refuse = {bad.alert_id}
    consumer.queue = [(TP("a", 0), Rec(0, encode_alert(bad))), (TP("a", 0), Rec(1, encode_alert(good)))]
    n.step()
    assert ids(router) == [good.alert_id] and n.counts.refused == 1
    assert [a.alert_id for a in n.held()] == [good.alert_id] and consumer.commits[-1] == {0: 1}


def test_an_episode_that_ended_before_the_alert_was_read_is_posted_resolved():
    n, consumer, router, now = stage()
    old = alert("e5" * 12, last_seen="2020-01-01T00:00:00.000Z")
    consumer.queue = [(TP("a", 0), Rec(0, encode_alert(old), [("principal", b"ana")]))]
    n.step()
    [[p]] = router.posted
    assert p["endsAt"] == "2020-01-01T01:00:00.000Z" and p["labels"]["principal"] == "ana" and n.held() == []


def test_a_rebalance_keeps_what_is_held_of_the_partitions_this_stage_still_owns():
    n, consumer, router, now = stage()
    a, b = alert("a1" * 12), alert("b2" * 12)
    consumer.queue = [(TP("a", 0), Rec(4, encode_alert(a))), (TP("a", 1), Rec(9, encode_alert(b)))]
    n.step()
    n.revoked()
    n.assigned({0, 1})  # the same partitions again: their positions are kept, so nothing is read twice
    assert {h.alert_id for h in n.held()} == {a.alert_id, b.alert_id}
    n.revoked()
    n.assigned({0})  # partition 1 moved to another stage, which reads it again from the commit
    assert [h.alert_id for h in n.held()] == [a.alert_id]
    now[0] += 11
    n.step()
    assert ids(router)[-1:] == [a.alert_id] and consumer.commits[-1].get(0) == 4


def test_an_alert_dated_ahead_of_this_clock_still_starts_before_it_ends():
    ahead = alert(last_seen="2999-01-01T00:00:00.000Z")
    ahead.first_seen = "2999-01-01T00:00:00.000Z"
    p = payload(ahead, None, grafana_url="", ends_ms=1_000)
    assert p["startsAt"] == p["endsAt"] == "1970-01-01T00:00:01.000Z"


def test_the_stage_counts_are_prometheus_metrics():
    from prometheus_client import CollectorRegistry, generate_latest

    from streams.notify.stage import CountsCollector

    n, consumer, router, _ = stage()
    consumer.queue = [(TP("a", 0), Rec(0, encode_alert(alert("a1" * 12)))), (TP("a", 0), Rec(1, b"x"))]
    n.step()
    registry = CollectorRegistry()
    registry.register(CountsCollector(n))
    text = generate_latest(registry).decode()
    assert "spyglass_notify_posts_total 1.0" in text and "spyglass_notify_bad_records_total 1.0" in text
    assert "spyglass_notify_firing 1.0" in text
