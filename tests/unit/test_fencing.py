"""Owner epochs on the embedded store (chDB): a worker whose partition another worker claimed since writes
nothing more for it, and a restore takes the newest owner's checkpoint (streams.fencing)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from schemas.migrate import migrate
from streams.checkpoints import CheckpointStore
from streams.fencing import Fenced, OwnerEpochs
from streams.scoring import Scorer
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.unit.test_scorer import _raws, _Rec


@pytest.fixture
def store(tmp_path):
    st = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"), database="fence")
    migrate(st)
    yield st
    st.close()


def _counts(store) -> tuple[int, int, int]:
    return tuple(store.query(f"SELECT count() FROM fence.{t}")[0][0]  # noqa: S608
                 for t in ("events", "alerts", "engine_checkpoints"))


def test_claims_take_the_next_epoch_and_a_check_sees_a_newer_claim_once_its_lease_ran_out(store):
    now = [0.0]
    a = OwnerEpochs(store, "g", "a", lease_s=1.5, clock=lambda: now[0])
    b = OwnerEpochs(store, "g", "b", lease_s=1.5, clock=lambda: now[0])
    tp = ("t", 0)
    assert a.claim(tp) == 1
    a.check([tp])  # the owner: passes (and is trusted for the lease)
    assert b.claim(tp) == 2
    a.check([tp])  # within the lease the store is not asked again: the window the lease leaves
    now[0] = 2.0  # a was paused past the lease: it asks again, and is fenced
    with pytest.raises(Fenced):
        a.check([tp])
    assert a.is_fenced(tp) and a.epoch(tp) == 0
    b.check([tp])
    a.release([tp])  # revoked: a later assignment claims anew, above b
    assert a.claim(tp) == 3
    now[0] = 4.0
    with pytest.raises(Fenced):
        b.check([tp])


def test_a_worker_whose_partition_was_claimed_by_another_writes_and_acks_nothing_more(store, tmp_path, caplog):
    settings = Settings(event_max_age_days=0, stack_dir=tmp_path, worker_insert_min_rows=1, worker_checkpoint_s=3600,
                        worker_session_timeout_s=6, engine_learning_hours=0)
    topic = settings.topics()["api_usage"]
    recs = [_Rec(topic, 0, i, None, raw) for i, raw in enumerate(_raws("api_usage", 1200))]
    now = [time.monotonic() + 1_000]  # the parts' own times are monotonic (their creation: before now)
    published: list[bytes] = []
    acked: dict[str, list[int]] = {"a": [], "b": []}

    async def publish(topic_, key, value, headers):
        published.append(value)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def scorer(name: str) -> Scorer:
        return Scorer(settings, store, CheckpointStore(store, "g", b"k" * 32, worker=name), publish,
                      ack=lambda _t, _p, offsets: acked[name].extend(offsets), worker=name, clock=lambda: now[0])

    async def run() -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
        a, b = scorer("a"), scorer("b")
        try:
            await a.handle({(topic, 0): recs[:400]})
            await a.checkpoint_all()
            # a is paused; the group gives the partition to b, which claims it, restores a's checkpoint and scores on
            await b.handle({(topic, 0): recs[400:800]})
            await b.checkpoint_all()
            before, n_published = _counts(store), len(published)
            now[0] += 10.0  # a wakes up, past its lease: what it scored or still had queued goes nowhere
            await a.handle({(topic, 0): recs[400:1200]})
            await a.checkpoint_all()
            after, by_a = _counts(store), len(published) - n_published
            await b.handle({(topic, 0): recs[800:1200]})  # the owner goes on
            await b.checkpoint_all()
            return before, after, by_a
        finally:
            a.close()
            b.close()

    with caplog.at_level(logging.ERROR, logger="spyglass.worker"):
        before, after, published_by_a = asyncio.run(run())
    assert before[0] == 800 and before[2] == 2  # 800 events stored, one checkpoint of each
    assert after == before and published_by_a == 0, "the fenced worker wrote after the new owner's claim"
    assert sorted(acked["a"]) == list(range(400)) and sorted(acked["b"]) == list(range(400, 1200))
    assert any("partition fenced" in r.getMessage() for r in caplog.records)
    assert store.query("SELECT uniqExact(event_id), count() FROM fence.events")[0] == (1200, 1200)
    rows = store.query("SELECT worker, epoch, offset FROM fence.engine_checkpoints ORDER BY written_at, offset")
    assert [(w, e) for w, e, _ in rows] == [("a", 1), ("b", 2), ("b", 2)]
    # a late checkpoint of the older owner (written in the window the lease leaves) never shadows the newer one's
    CheckpointStore(store, "g", b"k" * 32, worker="a").save_states([(topic, 0, 1200, b"x", 0)], epochs=[1])
    assert CheckpointStore(store, "g", b"k" * 32).load(topic, 0).offset == 1200
    assert store.query("SELECT argMax(worker, (epoch, written_at, offset)) FROM fence.engine_checkpoints")[0][0] == "b"
