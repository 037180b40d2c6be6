"""Fault tests: real workers (subprocesses) against the real local stack, killed and starved.

They reuse the integration tests' stack fixtures (a running ``spyglass stack up`` named by
``SPYGLASS_TEST_STACK_DIR``, or a fresh stack on free ports). Nothing is mocked: the broker is
Kafka, the store is the ClickHouse server, the workers are ``spyglass worker`` processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings
from tests.fault.harness import Run
from tests.integration.conftest import ch_server_url, mark_stack_tests, stack_settings  # noqa: F401

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/fault with ``fault``."""
    mark_stack_tests(items, HERE, pytest.mark.fault)


@pytest.fixture
def run(stack_settings: Settings, tmp_path: Path):  # noqa: F811 - the fixture imported above
    """The test's own topics, database and group, deleted afterwards."""
    r = Run.create(stack_settings, tmp_path)
    yield r
    r.cleanup()
