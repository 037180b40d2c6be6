"""The checkpoint key (required for a server, whole when generated, long enough) and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

from detectors.correlation import Correlator
from detectors.engine import Engine
from schemas.errors import ConfigError
from schemas.events import decode
from schemas.samples import sample_stream
from streams.checkpoints import MIN_KEY_BYTES, CheckpointError, CheckpointStore, check_state, checkpoint_key
from streams.settings import Settings
from streams.sinks.clickhouse import ChdbStore, apply_ddl
from streams.worker import worker_checkpoint_key

KEY = b"k" * MIN_KEY_BYTES


def sample_events(per_kind: int = 100) -> list:
    import msgspec

    enc = msgspec.json.Encoder()
    return [decode(enc.encode(row)) for row in sample_stream(per_kind=per_kind)]


def test_a_server_store_without_a_key_is_refused_naming_the_variable(tmp_path: Path):
    settings = Settings(clickhouse_url="clickhouse://w@127.0.0.1:9000/spyglass", stack_dir=tmp_path)
    with pytest.raises(ConfigError, match="SPYGLASS_CHECKPOINT_KEY is required"):
        worker_checkpoint_key(settings)
    assert not (tmp_path / "checkpoint.key").exists(), "no host-local key is made for a server"
    ok = Settings(clickhouse_url="clickhouse://w@127.0.0.1:9000/spyglass", stack_dir=tmp_path, checkpoint_key="s" * 32)
    assert worker_checkpoint_key(ok) == b"s" * 32


@pytest.mark.parametrize("server", [True, False])
def test_a_short_key_is_refused(tmp_path: Path, server: bool):
    with pytest.raises(ConfigError, match="at least 32"):
        checkpoint_key("x" * 31, tmp_path, server=server)


def test_the_embedded_stores_key_is_generated_once_whole_and_private(tmp_path: Path):
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(checkpoint_key(None, tmp_path / "stack")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = tmp_path / "stack" / "checkpoint.key"
    assert len(set(keys)) == 1 and len(keys[0]) >= MIN_KEY_BYTES, "racing workers keep one key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["checkpoint.key"], "no temporary file is left behind"
    assert checkpoint_key(None, tmp_path / "stack") == keys[0]


class _Boom:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


def test_a_state_naming_os_system_is_refused_without_running_it():
    evil = pickle.dumps({"config": {}, "state": _Boom()}, protocol=5)
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        check_state(evil)


def test_the_engines_and_correlators_own_states_pass_the_check():
    eng = Engine()
    eng.process(sample_events()[:500])
    check_state(eng.state())
    check_state(Correlator(6, 7).state())


def test_a_signed_checkpoint_with_a_foreign_global_is_refused_by_load(tmp_path: Path):
    from streams.settings import StoreURL

    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"))
    try:
        apply_ddl(store)
        cps = CheckpointStore(store, "g", KEY)
        ran: list[bool] = []
        cps.save_state("t", 0, 10, pickle.dumps({"x": _Boom()}, protocol=5), 0)
        with pytest.raises(CheckpointError, match="not part of an engine state"):
            cps.load("t", 0, lambda blob: ran.append(True))
        assert ran == [], "the state was never restored"
        eng = Engine()
        eng.process(sample_events()[:200])
        cps.save("t", 1, 5, eng)
        cp = cps.load("t", 1)
        assert cp is not None and cp.offset == 5 and cp.engine.events_seen == 200
    finally:
        store.close()
