"""Fault tests: real workers (subprocesses) against the real local stack, killed and starved.

They reuse the integration tests' stack fixtures (a running ``spyglass stack up`` named by
``SPYGLASS_TEST_STACK_DIR``, or a fresh stack on free ports). Nothing is mocked: the broker is
Kafka, the store is the ClickHouse server, the workers are ``spyglass worker`` processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import KAFKA_DEPRECATIONS, ch_server_url, stack_settings  # noqa: F401

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.fault)
            for mark in KAFKA_DEPRECATIONS:
                item.add_marker(mark)
