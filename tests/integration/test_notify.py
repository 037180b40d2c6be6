"""``spyglass notify`` end to end on a real Kafka broker, a real Alertmanager and the ClickHouse server.

Alertmanager runs the shipped routing config (streams/stack/alertmanager.yml) with its receivers pointed at a
webhook receiver in this test and short group timings; alerts go onto a fresh alerts topic as the worker
writes them. Nothing here is mocked: what the webhook receives is what Alertmanager decided to send.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from pydantic import SecretStr

from detectors.catalog import CATALOG
from schemas.alerts import Alert, Evidence, Feature, alert_id, encode_alert
from schemas.migrate import migrate
from streams.cli.alerts import cmd_set_status
from streams.notify.alertmanager import AlertmanagerRouter
from streams.notify.stage import Notifier, StoreStatuses
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import NativeStore
from streams.stack.alertmanager import EXAMPLE_CONFIG, AlertmanagerService
from streams.stack.base import LOOPBACK, free_port
from streams.stack.kafka import delete_topics

WAIT_S = 60.0  # generous: the machine is shared, and a consumer group can take seconds to settle


class Webhook:
    """A tiny HTTP server that records every notification Alertmanager posts (path, body)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.got.append((self.path.strip("/"), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def seen(self, receiver: str | None = None, status: str | None = None) -> list[tuple[str, str, str]]:
        """(receiver, alert id, alert status) of every alert in every notification so far."""
        with self.lock:
            got = list(self.got)
        return [(path, a["labels"]["alert_id"], a["status"]) for path, body in got for a in body["alerts"]
                if (receiver is None or path == receiver) and (status is None or a["status"] == status)]

    def notifications(self, receiver: str) -> list[set[str]]:
        """The alert ids of each notification ``receiver`` got."""
        with self.lock:
            return [{a["labels"]["alert_id"] for a in body["alerts"]} for path, body in self.got if path == receiver]

    def alerts(self, receiver: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {a["labels"]["alert_id"]: a for path, body in self.got if path == receiver for a in body["alerts"]}


def wait_for(what: Callable[[], bool], message: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {message}")


def test_config(example: Path, out: Path, webhook_port: int) -> Path:
    """The shipped routing config with its receivers on the test's webhook and second-scale timings."""
    cfg = yaml.safe_load(example.read_text())
    cfg["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for r in cfg["receivers"]:
        for hook in r.get("webhook_configs", []):
            hook["url"] = f"http://{LOOPBACK}:{webhook_port}/{r['name']}"
    out.write_text(yaml.safe_dump(cfg))
    return out


test_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


class Rig:
    """A real Alertmanager, a fresh alerts topic, a store with ``alert_status``, and the notify stage."""

    def __init__(self, base: Settings, tmp: Path) -> None:
        self.webhook = Webhook()
        tag = uuid.uuid4().hex[:10]
        self.store_url = StoreURL.parse(f"clickhouse://default@127.0.0.1:{base.clickhouse_tcp_port}/nt_{tag}")
        self.settings = base.model_copy(update={
            "stack_dir": tmp / "stack", "alertmanager_port": free_port(),
            "alertmanager_config": test_config(EXAMPLE_CONFIG, tmp / "alertmanager.yml", self.webhook.port),
            "topic_alerts": f"test-alerts-{tag}", "notify_group": f"test-notify-{tag}", "notify_refresh_s": 1.0,
            "clickhouse_url": SecretStr(self.store_url.secret_url()), "grafana_url": "https://grafana.example",
        })
        self.am = AlertmanagerService(self.settings)
        self.am.provision()
        self.am.start()
        self.am.wait_ready()
        admin = KafkaAdminClient(bootstrap_servers=base.kafka_bootstrap, client_id="spyglass-test")
        try:
            admin.create_topics({self.settings.topic_alerts: {"num_partitions": 2, "replication_factor": 1}},
                                wait_for_metadata=True)
        finally:
            admin.close()
        self.store = NativeStore(self.store_url)
        migrate(self.store)
        self.producer = KafkaProducer(bootstrap_servers=base.kafka_bootstrap, acks="all")
        self.notifier: Notifier | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.offsets: dict[str, tuple[int, int]] = {}

    def start_notify(self) -> Notifier:
        self.stop = threading.Event()
        self.notifier = Notifier(self.settings, AlertmanagerRouter(self.settings.alertmanager_base()),
                                 statuses=StoreStatuses(self.settings))
        self.thread = threading.Thread(target=self.notifier.run, args=(self.stop,), daemon=True)
        self.thread.start()
        return self.notifier

    def stop_notify(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive()

    def send(self, *alerts: tuple[Alert, str | None]) -> None:
        """Put alerts on the topic as the worker does (key tenant/entity, the principal header when known)."""
        futures = [(a.alert_id, self.producer.send(
            self.settings.topic_alerts, key=f"{a.tenant}/{a.entity}".encode(), value=encode_alert(a),
            headers=[("principal", principal.encode())] if principal else None)) for a, principal in alerts]
        self.producer.flush(30)
        for aid, fut in futures:
            md = fut.get(10)
            self.offsets[aid] = (md.partition, md.offset)

    def am_alerts(self, **match: str) -> list[dict[str, Any]]:
        """Alertmanager's own view (``GET /api/v2/alerts``) of the alerts whose labels match."""
        filters = "&".join(f"filter={urllib.request.quote(f'{k}={json.dumps(v)}')}" for k, v in match.items())
        with urllib.request.urlopen(f"{self.am.endpoint}/api/v2/alerts?{filters}", timeout=5) as r:  # noqa: S310
            return list(json.loads(r.read()))

    def committed(self) -> dict[int, int | None]:
        c = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.settings.notify_group,
                          enable_auto_commit=False)
        try:
            return {p: c.committed(TopicPartition(self.settings.topic_alerts, p)) for p in (0, 1)}
        finally:
            c.close()

    def close(self) -> None:
        self.stop_notify()
        self.producer.close(5)
        self.am.stop()
        self.webhook.close()
        delete_topics(self.settings, [self.settings.topic_alerts])
        self.store.execute(f"DROP DATABASE IF EXISTS {self.store.database}")
        self.store.close()


@pytest.fixture
def rig(stack_settings: Settings, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(stack_settings, tmp_path)
    try:
        yield r
    finally:
        r.close()


def make_alert(detector: str, severity: str, entity: str, *, tenant: str = "t1", last_seen_ms: int | None = None,
               tag: str = "") -> Alert:
    spec = CATALOG[detector]
    now = int(time.time() * 1000)
    last = last_seen_ms if last_seen_ms is not None else now
    iso = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")  # noqa: E731
    first_event = f"ev-{entity}-{detector}-{tag}-{uuid.uuid4().hex[:6]}"
    return Alert(alert_id=alert_id(detector, tenant, entity, first_event), tenant=tenant, detector=detector,
                 kind=spec.kind, entity_type=spec.entity_type, entity=entity, severity=severity,  # type: ignore[arg-type]
                 score={"critical": 0.95, "high": 0.8, "medium": 0.6, "low": 0.3}[severity],
                 first_seen=iso(last - 1000), last_seen=iso(last), title=spec.title,
                 explanation=f"{entity} did something unusual for {detector}.",
                 evidence=Evidence(features=[Feature(name="calls", value=300.0, baseline=12.0, contribution=0.7),
                                             Feature(name="tokens", value=9.0, baseline=8.0, contribution=0.3)],
                                   event_ids=[first_event]),
                 tags=list(spec.tags))


def test_routing_grouping_inhibition_silence_and_resolution(rig: Rig) -> None:
    notifier = rig.start_notify()
    # routing and grouping: two critical alerts on one key page together; high goes to chat; a tenant with
    # its own route pages its own on-call; medium goes to the ticket queue
    a1 = make_alert("api.rate_burst", "critical", "key-1")
    a2 = make_alert("api.denial_of_wallet", "critical", "key-1")
    a3 = make_alert("api.new_scope", "high", "key-2")
    a4 = make_alert("api.rate_burst", "critical", "key-7", tenant="acme")
    cooldown_ms = CATALOG["api.new_client"].cooldown_s * 1000
    a5 = make_alert("api.new_client", "medium", "key-3", last_seen_ms=int(time.time() * 1000) - cooldown_ms + 6000)
    info = make_alert("api.new_client", "low", "key-4")
    info.severity = "info"
    rig.send((a1, "ana"), (a2, "ana"), (a3, "bea"), (a4, None), (a5, None), (info, None))

    hook = rig.webhook
    wait_for(lambda: {a1.alert_id, a2.alert_id} <= {i for _, i, _ in hook.seen("pager")}, "a1 and a2 paged")
    wait_for(lambda: a3.alert_id in {i for _, i, _ in hook.seen("chat")}, "a3 in chat")
    wait_for(lambda: a4.alert_id in {i for _, i, _ in hook.seen("acme-pager")}, "a4 paged acme's on-call")
    wait_for(lambda: a5.alert_id in {i for _, i, _ in hook.seen("tickets", "firing")}, "a5 ticketed")
    assert {a1.alert_id, a2.alert_id} in hook.notifications("pager")  # one notification for the entity
    assert {i for _, i, _ in hook.seen("pager")} == {a1.alert_id, a2.alert_id}
    assert a4.alert_id not in {i for _, i, _ in hook.seen("pager")}  # acme's route comes first
    assert info.alert_id not in {i for _, i, _ in hook.seen()} and notifier.counts.below == 1
    paged = hook.alerts("pager")[a1.alert_id]
    assert paged["labels"].items() >= {"tenant": "t1", "detector": "api.rate_burst", "severity": "critical",
                                    "entity_type": "api_key", "entity": "key-1", "principal": "ana",
                                    "techniques": "AML.T0034"}.items()
    assert paged["annotations"]["description"] == a1.explanation
    assert "calls 300 (usually 12, 70% of the finding)" in paged["annotations"]["evidence"]
    link = paged["annotations"]["dashboard"]
    assert link.startswith("https://grafana.example/d/spyglass-alert-investigation/") and a1.alert_id in link

    # Grafana's on-call rule sends its own copy of each open critical or high alert (labels from its query,
    # grafana/dashboards_src/alerting.py): where notify delivered the alert, the copy is inhibited
    from grafana.dashboards_src.alerting import RULES, rule

    copy_labels = {**rule(RULES[0])["labels"], "alertname": RULES[0].title, "grafana_folder": "Spyglass",
                   **{c: str(getattr(a1, c)) for c in RULES[0].columns if c not in ("explanation", "open_alert")}}
    AlertmanagerRouter(rig.settings.alertmanager_base()).post([{"labels": copy_labels, "annotations": {}}])
    wait_for(lambda: bool(rig.am_alerts(alertname=RULES[0].title)), "Grafana's copy reached Alertmanager")
    [copy] = rig.am_alerts(alertname=RULES[0].title)
    assert copy["status"]["state"] == "suppressed" and copy["status"]["inhibitedBy"]

    # inhibition: an incident on a principal mutes that principal's member alerts (and only theirs)
    # (Alertmanager applies inhibition when it notifies: a member that reached it a group_wait before the
    # incident would have notified already, so the incident goes first here)
    m1 = make_alert("api.new_scope", "high", "key-5")
    m2 = make_alert("api.new_scope", "high", "key-6")
    inc = make_alert("risk.incident", "critical", "bob")
    rig.send((inc, None))
    wait_for(lambda: inc.alert_id in {i for _, i, _ in hook.seen("pager")}, "the incident paged")
    rig.send((m1, "bob"), (m2, "cyd"))
    wait_for(lambda: m2.alert_id in {i for _, i, _ in hook.seen("chat")}, "another principal's alert in chat")
    wait_for(lambda: bool(rig.am_alerts(alert_id=m1.alert_id)), "the member reached Alertmanager")
    [muted] = rig.am_alerts(alert_id=m1.alert_id)
    assert muted["status"]["state"] == "suppressed" and muted["status"]["inhibitedBy"]
    assert muted["labels"]["principal"] == "bob"

    # a silence made through Alertmanager's API keeps a new alert on its entity from paging
    end = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    silence = {"matchers": [{"name": "entity", "value": "key-9", "isRegex": False, "isEqual": True},
                            {"name": "tenant", "value": "t1", "isRegex": False, "isEqual": True}],
               "startsAt": datetime.now(UTC).isoformat(), "endsAt": end, "createdBy": "test",
               "comment": "maintenance on key-9"}
    req = urllib.request.Request(f"{rig.am.endpoint}/api/v2/silences", data=json.dumps(silence).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - the test's Alertmanager
        silence_id = json.loads(r.read())["silenceID"]
    s1 = make_alert("api.rate_burst", "critical", "key-9")
    rig.send((s1, None))
    wait_for(lambda: bool(rig.am_alerts(alert_id=s1.alert_id)), "s1 reached Alertmanager")
    [silenced] = rig.am_alerts(alert_id=s1.alert_id)
    assert silenced["status"]["silencedBy"] == [silence_id]

    # resolution: an analyst's status in the store resolves a3; a5's episode ends by itself
    rig_args = argparse.Namespace(alert_id=a3.alert_id, status="resolved", tenant="t1", by="analyst", note="ok",
                                  suppress=None)
    assert cmd_set_status(rig_args, rig.settings) == 0
    wait_for(lambda: a3.alert_id in {i for _, i, _ in hook.seen("chat", "resolved")}, "a3 resolved in chat")
    wait_for(lambda: a5.alert_id in {i for _, i, _ in hook.seen("tickets", "resolved")}, "a5's episode ended")
    assert notifier.counts.by_status == {"resolved": 1}
    # the rest fire on (re-posted past Alertmanager's resolve_timeout) and were never paged twice or resolved
    time.sleep(3)
    assert {a["labels"]["alert_id"] for a in rig.am_alerts(detector="api.rate_burst", tenant="t1")} == {
        a1.alert_id, s1.alert_id}
    assert all(a["status"]["state"] != "unprocessed" for a in rig.am_alerts(alert_id=a1.alert_id))
    assert m1.alert_id not in {i for _, i, _ in hook.seen()} and s1.alert_id not in {i for _, i, _ in hook.seen()}
    assert a1.alert_id not in {i for _, i, _ in hook.seen(status="resolved")}
    assert {i for _, i, _ in hook.seen("pager")} == {a1.alert_id, a2.alert_id, inc.alert_id}
    assert notifier.counts.bad == notifier.counts.refused == 0


def test_alertmanager_restart_loses_no_alert(rig: Rig) -> None:
    notifier = rig.start_notify()
    hook = rig.webhook
    r1 = make_alert("api.rate_burst", "critical", "key-r1")
    rig.send((r1, "ana"))
    wait_for(lambda: r1.alert_id in {i for _, i, _ in hook.seen("pager")}, "r1 paged")

    rig.am.stop()
    failures = notifier.counts.failures
    r2 = make_alert("api.rate_burst", "critical", "key-r2")
    r3 = make_alert("api.model_extraction", "high", "key-r3")
    rig.send((r2, None), (r3, None))
    wait_for(lambda: notifier.counts.failures >= failures + 2, "posts failed and were retried")
    # nothing past an alert that did not get through is committed
    committed = rig.committed()
    for aid in (r2.alert_id, r3.alert_id):
        partition, offset = rig.offsets[aid]
        assert (committed[partition] or 0) <= offset

    rig.am.start()
    rig.am.wait_ready()
    wait_for(lambda: r2.alert_id in {i for _, i, _ in hook.seen("pager")}, "r2 paged after the restart")
    wait_for(lambda: r3.alert_id in {i for _, i, _ in hook.seen("chat")}, "r3 in chat after the restart")
    # r1 was in the old process's memory only: the re-posts brought it back, still firing, not paged again
    wait_for(lambda: bool(rig.am_alerts(alert_id=r1.alert_id)), "r1 firing again")
    assert [i for _, i, _ in hook.seen("pager")].count(r1.alert_id) == 1

    # the stage itself restarts: the committed offsets still hold the firing alerts, which it takes up again
    rig.stop_notify()
    again = rig.start_notify()
    wait_for(lambda: {a.alert_id for a in again.held()} == {r1.alert_id, r2.alert_id, r3.alert_id},
             "the new stage holds every firing alert")
    wait_for(lambda: again.counts.posts >= 1, "the new stage posted")
    assert not {i for _, i, _ in hook.seen(status="resolved")}
