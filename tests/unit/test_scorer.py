"""The worker's scorer without services: what it does when a rebalance cannot wait."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streams.checkpoints import CheckpointStore
from streams.scoring import Scorer
from streams.settings import Settings


class _NoStore:
    """Never reached by these tests: any call is a failure."""

    database = "spyglass"

    def __getattr__(self, name: str):
        raise AssertionError(f"the store was used: {name}")


async def _unreached(*_a):  # pragma: no cover - a publish these tests must not make
    raise AssertionError("published")


async def _acked(*_a):
    """A publish Kafka acknowledged at once: a future already resolved."""
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


def _raws(kind: str, n: int) -> list[bytes]:
    """The first ``n`` records of ``kind`` of a small simulated run (seed 5), as JSON."""
    import msgspec

    from schemas.events import decode
    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    raws = (enc.encode(row) for ch in Simulation(seed=5, events=6000, days=1).chunks() for row in ch.rows)
    return [r for r in raws if decode(r).__struct_config__.tag == kind][:n]


def _fails_then(result: str, failures: int, error: str) -> tuple[list[int], object]:
    """(calls, fn): ``fn`` raises ``StoreError(error)`` on its first ``failures`` calls, then returns ``result``."""
    from streams.sinks.base import StoreError

    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise StoreError(error)
        return result

    return calls, fn


def test_revoke_gives_up_when_a_batch_holds_the_scorer_past_half_the_session_timeout(tmp_path):
    settings = Settings(event_max_age_days=0, worker_session_timeout_s=6, stack_dir=tmp_path)
    failures: list[BaseException] = []

    async def run() -> Scorer:
        store = _NoStore()
        scorer = Scorer(settings, store, CheckpointStore(store, "g", b"k"), _unreached, ack=lambda *_a: None,
                        on_failure=failures.append)
        await scorer._lock.acquire()  # a batch stuck in a store retry holds it
        t0 = asyncio.get_running_loop().time()
        # half the session timeout (3 s), not until the batch lets go (a regression fails here, never hangs)
        await asyncio.wait_for(scorer.revoke([("spyglass.api-usage", 0)]), timeout=60)
        assert asyncio.get_running_loop().time() - t0 >= 2.5
        return scorer

    scorer = asyncio.run(run())
    assert isinstance(scorer.failed, TimeoutError)
    assert failures and failures[0] is scorer.failed  # the worker is crashed: the group moves on
    assert scorer.health.failed
    scorer.close()


def test_a_worker_starting_while_the_store_is_away_retries_then_gives_up(monkeypatch):
    from streams import worker
    from streams.sinks.base import StoreError

    monkeypatch.setattr("time.sleep", lambda s: None)
    calls, flaky = _fails_then("migrated", 2, "connection refused")

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


@dataclass
class _Rec:
    """A Kafka record as the scorer reads it (topic, partition, offset, key, value)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_events_are_held_for_one_bigger_insert_and_stored_before_any_checkpoint(tmp_path):
    """Scored events wait for ``worker_insert_min_rows`` (or the linger time, or a checkpoint, or a flush) and go in
    one insert; a checkpoint is never stored before the events it covers (chDB, the embedded store)."""
    from schemas.migrate import migrate
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    raws = _raws("api_usage", 1500)
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1000,
                        worker_insert_linger_s=0.3, worker_checkpoint_s=3600)
    topic = settings.topics()["api_usage"]
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="held")
    acked: list[int] = []

    def stored() -> tuple[int, int]:
        return (store.query("SELECT count() FROM held.events")[0][0],
                store.query("SELECT count() FROM held.engine_checkpoints")[0][0])

    at_checkpoint: list[int] = []

    class Watched(CheckpointStore):  # the real checkpoint store, noting what events held when it was called
        def save_states(self, states, marks=None, **kwargs):
            at_checkpoint.append(stored()[0])
            return super().save_states(states, marks, **kwargs)

    async def run() -> list[tuple[int, int]]:
        scorer = Scorer(settings, store, Watched(store, "g", b"k"), _acked,
                        ack=lambda _t, _p, offsets: acked.extend(offsets))
        seen = []
        recs = [_Rec(topic, 0, i, None, raw) for i, raw in enumerate(raws)]
        try:
            for lo, hi in ((0, 400), (400, 800)):
                await scorer.handle({(topic, 0): recs[lo:hi]})
                await asyncio.sleep(0.05)  # the writer has taken the batch
                seen.append(stored())
            await scorer.handle({(topic, 0): recs[800:1200]})  # 1200 held >= 1000: one insert
            await asyncio.sleep(0.5)
            seen.append(stored())
            await scorer.handle({(topic, 0): recs[1200:1300]})
            await asyncio.sleep(0.05)
            seen.append(stored())
            await asyncio.sleep(0.6)  # past the linger time: stored without more records
            seen.append(stored())
            await scorer.handle({(topic, 0): recs[1300:1500]})
            await scorer.checkpoint_due(min_age_s=0.0)  # a checkpoint stores the held events first
            await asyncio.sleep(0.5)
            seen.append(stored())
            await scorer.checkpoint_all()  # nothing pending: nothing more
        finally:
            scorer.close()
        return seen

    try:
        migrate(store)
        seen = asyncio.run(run())
        assert seen == [(0, 0), (0, 0), (1200, 0), (1200, 0), (1300, 0), (1500, 1)], seen
        assert at_checkpoint == [1500]  # every event the checkpoint covers was stored before it
        assert sorted(acked) == list(range(1500))  # acked only once the checkpoint covering them was stored
        assert store.query("SELECT uniqExact(event_id) FROM held.events")[0][0] == 1500
    finally:
        store.close()


def test_alerts_are_stored_while_an_events_insert_runs_and_no_checkpoint_passes_it(tmp_path):
    """With a connection of its own for the events (the events lane), a slow events insert holds back neither
    the next batch's alerts nor anything that must come after it: the checkpoint and the acks wait for it."""
    import threading

    from schemas.migrate import migrate
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    raws = _raws("agent_execution", 300)
    # no learning period: the run is one simulated day, and the test counts the risk incident among its alerts
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1, worker_checkpoint_s=3600,
                        engine_learning_hours=0)
    topic = settings.topics()["agent_execution"]
    chdb = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="lane")
    lock = threading.Lock()  # one chDB session: the two threads take turns (a server has two connections)
    release, entered = threading.Event(), threading.Event()

    class Shared:
        database = "lane"

        def insert(self, table, columns):
            with lock:
                return chdb.insert(table, columns)

        def query(self, sql):
            with lock:
                return chdb.query(sql)

    class SlowEvents(Shared):  # the events lane's connection: its insert waits until the test lets it go
        def insert(self, table, columns):
            entered.set()
            assert release.wait(60)
            return super().insert(table, columns)

    store = Shared()
    acked: list[int] = []
    at_checkpoint: list[int] = []

    def stored() -> tuple[int, int, int]:
        return tuple(store.query(f"SELECT count() FROM lane.{t}")[0][0]  # type: ignore[return-value]
                     for t in ("events", "alerts", "engine_checkpoints"))

    class Watched(CheckpointStore):
        def save_states(self, states, marks=None, **kwargs):
            at_checkpoint.append(stored()[0])
            return super().save_states(states, marks, **kwargs)

    async def run() -> list[tuple[int, int, int]]:
        scorer = Scorer(settings, store, Watched(store, "g", b"k"), _acked, events_store=SlowEvents(),
                        ack=lambda _t, _p, offsets: acked.extend(offsets))
        recs = [_Rec(topic, 0, i, None, raw) for i, raw in enumerate(raws)]
        seen = []
        loop = asyncio.get_running_loop()
        try:
            await scorer.handle({(topic, 0): recs[:100]})  # its alerts stored, its events insert stuck
            assert await loop.run_in_executor(None, entered.wait, 60)
            await scorer.handle({(topic, 0): recs[100:300]})  # one more alert
            for _ in range(200):
                if stored()[1] == 4:
                    break
                await asyncio.sleep(0.05)
            seen.append(stored())
            await scorer.checkpoint_due(min_age_s=0.0)
            await asyncio.sleep(0.3)
            seen.append(stored())
            assert acked == []
            release.set()
            await scorer.flush()
            seen.append(stored())
        finally:
            release.set()
            scorer.close()
        return seen

    try:
        migrate(chdb)
        seen = asyncio.run(run())
        assert seen == [(0, 4, 0), (0, 4, 0), (300, 4, 1)], seen
        assert at_checkpoint == [300]  # the checkpoint waited for every event it covers
        assert sorted(acked) == list(range(300))
    finally:
        chdb.close()


def test_a_failed_events_insert_stops_the_worker_before_any_checkpoint_or_ack(tmp_path):
    """An events insert that fails for good in the events lane fails the writer: flush() raises, no checkpoint
    is stored and nothing is acked (the next owner re-scores), and the worker is told to crash."""
    from schemas.migrate import migrate
    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore

    raws = _raws("api_usage", 200)
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1, worker_checkpoint_s=3600)
    topic = settings.topics()["api_usage"]
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="broken")
    acked: list[int] = []
    failures: list[BaseException] = []

    class Broken:  # the events lane's connection: refuses every events insert (not a retried StoreError)
        database = "broken"

        def insert(self, table, columns):
            raise RuntimeError(f"{table}: refused")

    async def run() -> BaseException | None:
        scorer = Scorer(settings, store, CheckpointStore(store, "g", b"k"), _acked, events_store=Broken(),
                        ack=lambda _t, _p, offsets: acked.extend(offsets), on_failure=failures.append)
        recs = [_Rec(topic, 0, i, None, raw) for i, raw in enumerate(raws)]
        try:
            await scorer.handle({(topic, 0): recs})
            await scorer.checkpoint_due(min_age_s=0.0)
            try:
                await scorer.flush()
            except RuntimeError as exc:
                return exc
            return None
        finally:
            scorer.close()

    try:
        migrate(store)
        err = asyncio.run(run())
        assert err is not None and "refused" in str(err)
        assert failures and failures[0] is err
        assert acked == []
        assert store.query("SELECT count() FROM broken.engine_checkpoints")[0][0] == 0
        assert store.query("SELECT count() FROM broken.events")[0][0] == 0
    finally:
        store.close()


def test_the_store_is_reported_up_only_when_both_connections_are(tmp_path):
    """A working alerts connection does not hide an events lane that keeps failing (health stays degraded)."""

    settings = Settings(event_max_age_days=0, stack_dir=tmp_path)
    tries, flaky = _fails_then("stored", 2, "events: too many parts")

    async def run() -> list[str | None]:
        store = _NoStore()
        scorer = Scorer(settings, store, CheckpointStore(store, "g", b"k"), _unreached, ack=lambda *_a: None,
                        events_store=_NoStore())
        seen = []
        try:
            lane = asyncio.create_task(scorer.io.call(flaky, "events.insert", events=True))
            await asyncio.sleep(0.1)  # the first try failed; retried after 0.2 s
            seen.append(scorer.health.store_error)
            assert await scorer.io.call(lambda: "ok", "alerts.insert") == "ok"  # the other connection works
            seen.append(scorer.health.store_error)
            assert await lane == "stored"
            seen.append(scorer.health.store_error)
        finally:
            scorer.close()
        return seen

    seen = asyncio.run(run())
    assert seen[0] == seen[1] == "events.insert: events: too many parts", seen
    assert seen[2] is None
    assert len(tries) == 3
