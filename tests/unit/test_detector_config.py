"""Detector configuration as code: validation naming the key, modes, floors, budgets and cooldowns in the engine,
and the backtest of a new configuration on stored events (chDB)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from detectors.budget import AlertBudget, BudgetGate
from detectors.engine import Engine, EngineConfig
from schemas.errors import ConfigError
from schemas.rows import event_columns
from streams.backtest import backtest, newest_event_s, stored_events
from streams.detector_config import parse
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore, apply_ddl
from tests.unit.test_feedback import big_reads, events, read, usual_reads


@pytest.mark.parametrize(("text", "key"), [
    ("detectors: {data.volume_spike: {mode: shadw}}", "detectors.data.volume_spike.mode"),
    ("detectors: {data.volume_spike: {tenants: {acme: {cooldown_s: 5}}}}",
     "detectors.data.volume_spike.tenants.acme.cooldown_s"),
    ("detectors: {data.volum_spike: {mode: shadow}}", "detectors.data.volum_spike: unknown detector"),
    ("detectors: {data.volume_spike: {budget_per_100k: -1}}", "detectors.data.volume_spike.budget_per_100k"),
    ("detectors: {data.volume_spike: {min_score: 2}}", "detectors.data.volume_spike.min_score"),
    ("detectors: {data.volume_spike: {treshold: 2}}", "detectors.data.volume_spike.treshold"),
    ("version: 2", "version"),
    ("detectors: [1", "not YAML"),
])
def test_a_bad_configuration_is_refused_with_the_key_named(text: str, key: str):
    with pytest.raises(ConfigError) as err:
        parse(text, "d.yaml")
    assert str(err.value).startswith("d.yaml: ") and key in str(err.value)


def test_a_tenant_entry_wins_over_the_detectors():
    t = parse("detectors:\n  data.volume_spike:\n    mode: off\n    min_score: 0.3\n    tenants:\n"
              "      acme: {mode: shadow}\n")
    assert t.mode("data.volume_spike", "acme") == "shadow" and t.mode("data.volume_spike", "other") == "off"
    assert t.get("data.volume_spike", "acme", "min_score") == 0.3  # inherited from the detector's entry
    assert t.mode("api.new_client", "acme") == "enforce"


def _spikes(engine: Engine, rows: list[dict]) -> list:
    return [a for a in engine.process(events(rows)) if a.detector == "data.volume_spike"]


def _engine(text: str) -> Engine:
    e = Engine(EngineConfig(learning_hours=0), tuning=parse(text))
    e.process(events(usual_reads()))
    return e


def test_off_and_floors_drop_findings_shadow_keeps_them():
    assert len(_spikes(_engine(""), big_reads("x", 3, 10))) == 2
    assert _spikes(_engine("detectors: {data.volume_spike: {tenants: {acme: {mode: off}}}}"), big_reads("x", 3, 10)) \
        == []
    assert _spikes(_engine("detectors: {data.volume_spike: {min_score: 0.95}}"), big_reads("x", 3, 10)) == []
    shadow = _engine("detectors: {data.volume_spike: {mode: shadow}}")
    assert len(_spikes(shadow, big_reads("x", 3, 10))) == 2  # raised; the worker stores them as shadow
    assert shadow.tuning.mode("data.volume_spike", "acme") == "shadow"


def test_a_configured_cooldown_changes_what_makes_one_episode():
    twice = big_reads("x", 3, 10) + [read(w, "x2", 3, 10, 30, 5000) for w in ("mallory", "bob")]
    assert len(_spikes(_engine(""), twice)) == 2  # 30 min apart: one episode each under the 1 h default
    assert len(_spikes(_engine("detectors: {data.volume_spike: {cooldown_s: 600}}"), twice)) == 4
    restored = Engine.from_state(_engine("detectors: {data.volume_spike: {cooldown_s: 600}}").state())
    assert restored.tuning.cooldowns() == {"data.volume_spike": 600}  # checkpointed with the state


def test_the_budget_gate_asks_the_configuration_per_tenant_and_detector():
    asked = []

    def per(tenant: int, detector: str) -> float:
        asked.append((tenant, detector))
        return 0.0 if detector == "free" else 1.0

    budget = AlertBudget()
    gate = BudgetGate(budget, 1.0, 1.0, np.zeros(3, dtype=np.int64), np.arange(3), per)
    for i in range(200):  # a noisy detector teaches its threshold up; the unbudgeted one learns nothing
        gate.judge(0, "noisy", 0, i * 60_000, 2.0, True)
        gate.judge(0, "free", 0, i * 60_000, 2.0, True)
    assert gate.judge(0, "free", 0, 0, 2.0, False) == 0.0
    assert gate.judge(0, "noisy", 0, 0, 2.0, False) > 0.0
    assert (0, "free") in asked and (0, "noisy") in asked


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ChdbStore(StoreURL.parse(f"chdb://{tmp_path_factory.mktemp('chdb-backtest')}"), database="backtest")
    apply_ddl(s)
    rows = usual_reads() + big_reads("x", 3, 10) + big_reads("y", 4, 10)
    evs = events(rows)
    s.insert("events", event_columns(evs, [msgspec.json.encode(r) for r in rows], [0.0] * len(rows),
                                     datetime(2026, 11, 5, tzinfo=UTC)))
    yield s
    s.close()


def test_the_backtest_says_what_a_new_configuration_adds_and_removes(store):
    newest = newest_event_s(store)
    assert newest == int(datetime(2026, 11, 4, 10, tzinfo=UTC).timestamp())
    since = newest - 7 * 86_400
    assert sum(len(b) for b in stored_events(store, since, newest)) == len(usual_reads()) + 4
    current = parse("")
    new = parse("detectors: {data.volume_spike: {tenants: {acme: {mode: shadow}}, cooldown_s: 600}}")
    rows, n = backtest(stored_events(store, since, newest), EngineConfig(learning_hours=0), current, new)
    assert n == len(usual_reads()) + 4
    spike = next(r for r in rows if r.detector == "data.volume_spike")
    assert (spike.tenant, spike.current, spike.new, len(spike.removed), spike.shadow_new) == ("acme", 4, 0, 4, 4)
    rows2, _ = backtest(stored_events(store, since, newest), EngineConfig(learning_hours=0), new, current)
    spike2 = next(r for r in rows2 if r.detector == "data.volume_spike")
    assert (len(spike2.added), len(spike2.removed), spike2.shadow_current) == (4, 0, 4)
