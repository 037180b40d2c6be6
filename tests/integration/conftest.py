"""Fixtures for the integration tests: a real local stack (Kafka broker + ClickHouse server).

Set ``SPYGLASS_TEST_STACK_DIR`` to the stack directory of a running ``spyglass stack up``
to reuse it; otherwise a fresh stack is started on free ports in a temporary directory
for the session and stopped at the end.  Kafka jars are cached in the default
``SPYGLASS_CACHE_DIR`` (~/.cache/spyglass), so only the first run downloads them.

A secure stack (``spyglass stack up --secure``, or ``SPYGLASS_TEST_SECURE=1`` for a fresh one) is used as
it is: the session's settings connect to Kafka over SASL_SSL as the stack's admin (topic creation, ACLs)
and to ClickHouse over TLS with the stack's CA and password file; the harness's workers connect as the
worker principal (:mod:`tests.fault.harness`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

# kafka-python 3.x calls the deprecated importlib.resources.read_text while importing its protocol
# schemas; with the project's filterwarnings=error that would fail collection, so import it here first.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # noqa: F401

from streams.settings import Settings
from streams.stack import Stack
from streams.stack.base import free_ports
from streams.stack.manager import read_state

HERE = Path(__file__).resolve().parent
# kafka-python 3.x's own deprecation warnings (read_text is attributed to kafka.*, the nested
# open_text call to importlib.resources itself), raised whenever it lazily loads a protocol schema.
KAFKA_DEPRECATIONS = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kafka.*"),
    pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated. Use files\(\) instead:DeprecationWarning"),
]


def mark_stack_tests(items: list[pytest.Item], folder: Path, marker: pytest.MarkDecorator) -> None:
    """Mark every test under ``folder`` with ``marker`` (and tolerate kafka-python's deprecations there)."""
    for item in items:
        if folder in Path(item.path).resolve().parents:
            item.add_marker(marker)
            for mark in KAFKA_DEPRECATIONS:
                item.add_marker(mark)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with ``integration``."""
    mark_stack_tests(items, HERE, pytest.mark.integration)


def stack_test_settings(stack_dir: Path, ports: dict[str, int] | None = None) -> Settings:
    """Settings for a stack in ``stack_dir`` on the given ports (free ports when None)."""
    if ports is None:
        k, c, t, h = free_ports(4)
        ports = {"kafka_port": k, "kafka_controller_port": c, "clickhouse_tcp_port": t, "clickhouse_http_port": h}
    return Settings(
        stack_dir=stack_dir,
        kafka_port=ports["kafka_port"],
        kafka_controller_port=ports["kafka_controller_port"],
        kafka_bootstrap=f"127.0.0.1:{ports['kafka_port']}",
        clickhouse_tcp_port=ports["clickhouse_tcp_port"],
        clickhouse_http_port=ports["clickhouse_http_port"],
        clickhouse_url=f"clickhouse://default@127.0.0.1:{ports['clickhouse_tcp_port']}/default",
        event_max_age_days=0,  # the tests replay the simulator's fixed dates (from 2026-11-02) through the worker
    )


def connect_settings(stack: Stack) -> Settings:
    """How the tests connect to ``stack``: as they are (plain), or SASL_SSL as the admin and TLS to ClickHouse."""
    settings = stack.kafka.admin_settings
    if stack.clickhouse.secure:
        env = stack.clickhouse.client_env()
        settings = settings.model_copy(update={
            "clickhouse_url": SecretStr(env["SPYGLASS_CLICKHOUSE_URL"]),
            "clickhouse_password_file": Path(env["SPYGLASS_CLICKHOUSE_PASSWORD_FILE"])})
    return settings


def _reusable(stack_dir: Path) -> Settings | None:
    state = read_state(stack_dir)
    if state is None or not isinstance(state.get("ports"), dict):
        return None
    try:
        settings = stack_test_settings(stack_dir, {k: int(v) for k, v in state["ports"].items()})
    except (KeyError, TypeError, ValueError):
        return None
    stack = Stack(settings)  # secure or not, as the directory was set up
    running = {st.name: st.running for st in stack.status(("kafka", "clickhouse"))}
    return connect_settings(stack) if all(running.values()) else None


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running local stack (reused or started for this session)."""
    reuse = os.environ.get("SPYGLASS_TEST_STACK_DIR")
    secure = os.environ.get("SPYGLASS_TEST_SECURE", "") not in ("", "0")
    if reuse:
        settings = _reusable(Path(reuse).expanduser().resolve())
        if settings is not None:
            if secure and not (settings.kafka_security_protocol == "SASL_SSL" and settings.store().secure):
                pytest.fail(f"SPYGLASS_TEST_SECURE is set but the stack in {reuse} is not secure")
            yield settings
            return
    settings = stack_test_settings(tmp_path_factory.mktemp("stack"))
    stack = Stack(settings, secure_kafka=secure, secure_clickhouse=secure)
    try:
        stack.up(("kafka", "clickhouse"))
        yield connect_settings(stack)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def make_stack_settings() -> Callable[[Path], Settings]:
    """A factory of Settings for a separate stack in a given directory, on free ports."""
    return stack_test_settings


@pytest.fixture
def fresh_topics(stack_settings: Settings) -> Iterator[Settings]:
    """A fresh set of event/alert/dead-letter topics for one test, deleted afterwards."""
    import uuid

    from streams.stack.kafka import delete_topics, ensure_topics

    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(update=Settings.topic_names(f"t-{tag}"))
    names = ensure_topics(settings, partitions=3)
    yield settings
    delete_topics(settings, names)


@pytest.fixture(scope="session")
def ch_server_url(stack_settings: Settings) -> str:
    """Store URL of the session's ClickHouse server (with its password and TLS parameters on a secure stack)."""
    return stack_settings.store().secret_url()
