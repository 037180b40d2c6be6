"""``Stack``: bring the local services up and down together and record them in state.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.errors import StackError
from streams.settings import Settings
from streams.stack.alertmanager import AlertmanagerService
from streams.stack.base import LOOPBACK, Service, ServiceStatus, port_open, wait_port_closed
from streams.stack.clickhouse import ChdbService, ClickHouseServerService
from streams.stack.kafka import KafkaService, ensure_topics
from streams.stack.kafka_secure import grant_pipeline_acls

SERVICE_NAMES = ("kafka", "clickhouse", "chdb", "alertmanager")
STATE_FILE = "state.json"


class Stack:
    """The local stack: a KRaft Kafka broker, a ClickHouse server and the chDB directory.

    ``secure_kafka``: run the broker with SASL_SSL, SCRAM users and ACLs (``stack up --secure``); None: as
    the stack directory was set up. ``secure_clickhouse``: the ClickHouse server serves TLS only, with a password
    for its ``default`` user; None: as the stack directory was set up.
    """

    def __init__(self, settings: Settings, *, secure_kafka: bool | None = None,
                 secure_clickhouse: bool | None = None) -> None:
        self.settings = settings
        self.stack_dir = settings.stack_dir.expanduser().resolve()
        self.kafka = KafkaService(settings, secure=secure_kafka)
        self.clickhouse = ClickHouseServerService(settings, secure=secure_clickhouse)
        self.chdb = ChdbService(settings)
        self.services: dict[str, Service] = {"kafka": self.kafka, "clickhouse": self.clickhouse, "chdb": self.chdb}
        self.alertmanager = AlertmanagerService(settings)
        self.services["alertmanager"] = self.alertmanager
        self.topics: list[str] = []

    @property
    def state_file(self) -> Path:
        return self.stack_dir / STATE_FILE

    def _select(self, names: Iterable[str] | None) -> list[Service]:
        if names is None:
            return list(self.services.values())
        chosen = list(dict.fromkeys(names))
        unknown = [n for n in chosen if n not in self.services]
        if unknown:
            raise StackError(f"unknown stack service(s) {', '.join(unknown)}; known: {', '.join(SERVICE_NAMES)}")
        return [self.services[n] for n in SERVICE_NAMES if n in chosen]

    def provision(self, services: Sequence[str] = ("kafka", "clickhouse")) -> None:
        """Download/check what the services need, without starting anything."""
        for svc in self._select(services):
            svc.provision()

    def _check_ports(self, svc: Service) -> None:
        for env, port in svc.ports().items():
            if port_open(LOOPBACK, port):
                raise StackError(
                    f"port {port} on {LOOPBACK} is already in use by another process, so {svc.name} cannot "
                    f"start there; stop that process or set {env} to a free port"
                )
        ports = list(svc.ports().values())
        if len(set(ports)) != len(ports):
            raise StackError(f"{svc.name}: {', '.join(svc.ports())} must all be different ports")

    def up(self, services: Sequence[str] = ("kafka", "clickhouse"), fresh: bool = False) -> dict[str, float]:
        """Provision, start (or reuse) and wait for the services; create the topics; return ready seconds per service.

        A service whose pid file names a live process of ours with its port open is reused
        as is.  ``fresh=True`` stops it and wipes its data first.
        """
        chosen = self._select(services)
        for svc in chosen:
            svc.provision()
        started: dict[str, float] = {}
        try:
            for svc in chosen:
                if fresh:
                    svc.stop()
                    for port in svc.ports().values():
                        wait_port_closed(LOOPBACK, port)
                    svc.reset()
                    svc.provision()
                elif svc.status().pid is not None:
                    continue  # ours and alive: reuse it
                self._check_ports(svc)
                started[svc.name] = time.monotonic()
                svc.start()
            ready = self._wait_all(chosen, started)
            if any(svc.name == "kafka" for svc in chosen):
                self.topics = ensure_topics(self.kafka.admin_settings, bootstrap=self.kafka.bootstrap)
                if self.kafka.secure:
                    grant_pipeline_acls(self.kafka.admin_settings, bootstrap=self.kafka.bootstrap)
        except BaseException:
            for name in reversed(list(started)):  # do not leave half a stack behind
                self.services[name].stop()
            self.write_state()
            raise
        self.write_state()
        return ready

    @staticmethod
    def _wait_all(chosen: list[Service], started: dict[str, float]) -> dict[str, float]:
        """Wait for all services at once; a service's time runs from its start (or the wait, if reused)."""

        def wait(svc: Service) -> float:
            waited = svc.wait_ready()
            t0 = started.get(svc.name)
            return time.monotonic() - t0 if t0 is not None else waited

        with ThreadPoolExecutor(max_workers=len(chosen) or 1, thread_name_prefix="stack-wait") as pool:
            futures = {svc.name: pool.submit(wait, svc) for svc in chosen}
        return {name: fut.result() for name, fut in futures.items()}

    def down(self, services: Sequence[str] | None = None, timeout: float = 20.0) -> list[str]:
        """Stop the services (all by default) in reverse start order; return the names that were running."""
        stopped = []
        for svc in reversed(self._select(services)):
            if svc.status().pid is not None:
                stopped.append(svc.name)
            svc.stop(timeout)
        self.write_state()
        return stopped

    def status(self, services: Sequence[str] | None = None) -> list[ServiceStatus]:
        """The status of every service (or the named ones)."""
        return [svc.status() for svc in self._select(services)]

    def state(self) -> dict[str, Any]:
        """What state.json records: ports, pids and endpoints; never credentials."""
        s = self.settings
        return {
            "updated_at": datetime.now(UTC).isoformat(),
            "stack_dir": str(self.stack_dir),
            "ports": {
                "kafka_port": s.kafka_port,
                "kafka_controller_port": s.kafka_controller_port,
                "clickhouse_tcp_port": s.clickhouse_tcp_port,
                "clickhouse_http_port": s.clickhouse_http_port,
                "alertmanager_port": s.alertmanager_port,
            },
            "kafka_version": s.kafka_version,
            "kafka_secure": self.kafka.secure,
            "clickhouse_secure": self.clickhouse.secure,
            "topics": self.topics,
            "services": {
                st.name: {"running": st.running, "pid": st.pid, "endpoint": st.endpoint, "detail": st.detail}
                for st in self.status()
            },
        }

    def write_state(self) -> Path:
        """Write ``stack_dir/state.json`` atomically; return its path."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        os.replace(tmp, self.state_file)
        return self.state_file


def read_state(stack_dir: Path) -> dict[str, Any] | None:
    """The state.json of a stack directory, or None if absent or unreadable."""
    try:
        data = json.loads((stack_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
