"""The worker's scorer without services: what it does when a rebalance cannot wait."""

from __future__ import annotations

import asyncio

from streams.checkpoints import CheckpointStore
from streams.scoring import Scorer
from streams.settings import Settings


class _NoStore:
    """Never reached by these tests: any call is a failure."""

    database = "spyglass"

    def __getattr__(self, name: str):
        raise AssertionError(f"the store was used: {name}")


def test_revoke_gives_up_when_a_batch_holds_the_scorer_past_half_the_session_timeout(tmp_path):
    settings = Settings(worker_session_timeout_s=6, stack_dir=tmp_path)
    failures: list[BaseException] = []

    async def publish(*_a):  # pragma: no cover - not reached
        raise AssertionError("published")

    async def run() -> Scorer:
        store = _NoStore()
        scorer = Scorer(settings, store, CheckpointStore(store, "g", b"k"), publish, ack=lambda *_a: None,
                        on_failure=failures.append)
        await scorer._lock.acquire()  # a batch stuck in a store retry holds it
        t0 = asyncio.get_running_loop().time()
        # half the session timeout (3 s), not until the batch lets go (a regression fails here, never hangs)
        await asyncio.wait_for(scorer.revoke([("spyglass.api-usage", 0)]), timeout=60)
        assert asyncio.get_running_loop().time() - t0 >= 2.5
        return scorer

    scorer = asyncio.run(run())
    assert isinstance(scorer._failed, TimeoutError)
    assert failures and failures[0] is scorer._failed  # the worker is crashed: the group moves on
    assert scorer.health.failed
    scorer.close()


def test_a_worker_starting_while_the_store_is_away_retries_then_gives_up(monkeypatch):
    from streams import worker
    from streams.sinks.clickhouse import StoreError

    monkeypatch.setattr("time.sleep", lambda s: None)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreError("connection refused")
        return "migrated"

    assert worker._with_store_retries(flaky, "migrations") == "migrated"
    assert len(calls) == 3

    def down() -> None:
        raise StoreError("connection refused")

    try:
        worker._with_store_retries(down, "migrations", give_up_after_s=0.0)
    except StoreError as exc:
        assert "refused" in str(exc)
    else:
        raise AssertionError("a store that never comes back must end the worker")
