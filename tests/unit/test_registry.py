"""The detector registry: a new detector is one family entry, and every registered one is complete.

The toy family below lives in this test, not in detectors/: registered on a registry of its own,
it alerts on an engine run, survives a checkpoint, has its state evicted with its entities, and
appears in the generated reference. The conformance tests then hold every registered family to
the same rules: a doc for each detector and option, an eviction policy for all its state, and a
pattern with a benign twin in the detector tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from detectors.alerting import Finding
from detectors.catalog import CATALOG
from detectors.columns import ApiColumns
from detectors.compaction import FIELDS, SEEN, fields_of
from detectors.engine import Engine, EngineConfig, EngineLimits
from detectors.families import REGISTRY
from detectors.families.common import rank_in_batch
from detectors.reference import DOC, render
from detectors.registry import Column, Context, Detector, Family, Registry, option
from detectors.state import CORE_FIELDS, NAMESPACES, State
from schemas.alerts import Feature
from schemas.events import decode
from schemas.samples import SAMPLES
from tests.unit import test_behaviour, test_detectors

T0 = datetime(2026, 11, 2, tzinfo=UTC)


# -- the toy family: one detector, one option, one per-key column ----------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    toy_requests: int = option(5, "a key's request count that raises toy.busy_key")


def toy_stage(ctx: Context, c: ApiColumns) -> list[Finding]:
    """Count each key's requests; the request that brings a key to ``toy_requests`` is a finding."""
    ctx.tables.key.fit(len(ctx.tables.vocabs.key))  # rows for the keys this batch added
    counts = ctx.tables.key["toy_requests"]
    before = counts[c.key] + rank_in_batch(c.key)
    np.add.at(counts, c.key, 1.0)
    out = []
    for i in np.flatnonzero(before + 1 == ctx.config.toy_requests):
        e = c.events[i]
        out.append(ctx.finding("toy.busy_key", c, i, e.api_key_id, e.principal, 0.4,
                               [Feature(name="requests", value=float(before[i] + 1))],
                               f"API key {e.api_key_id} made its {int(before[i]) + 1}th request."))
    return out


TOY = Family(
    name="toy",
    kind="api_usage",
    doc="A toy family for the registry's tests.",
    config=ToyConfig,
    stage=toy_stage,
    detectors=(Detector("toy.busy_key", "API key reached a request count", "api_key", ("atlas:AML.T0034",),
                        "Counts each key's requests; the one that reaches `toy_requests` is raised.", cooldown_s=60),),
    columns=(Column("key", "toy_requests", 0, "requests of the key"),),
)


def api(i: int, t: datetime, key: str) -> object:
    row = dict(SAMPLES["api_usage"], event_id=f"e{i}", ts=t.isoformat().replace("+00:00", "Z"), api_key_id=key)
    return decode(json.dumps(row).encode())


@pytest.fixture
def toy() -> Registry:
    return REGISTRY.with_families(TOY)


def toy_alerts(alerts) -> list:
    return [a for a in alerts if a.detector == "toy.busy_key"]


def test_the_toy_family_alerts_on_an_engine_run(toy):
    config = toy.config_class(EngineLimits)(toy_requests=4)
    eng = Engine(config, toy)
    events = [api(i, T0 + timedelta(minutes=i), "k1") for i in range(10)]
    alerts = eng.process(events[:2]) + eng.process(events[2:])
    hits = toy_alerts(alerts)
    assert [(a.entity, a.evidence.event_ids[0], a.kind, a.entity_type) for a in hits] == \
        [("k1", "e3", "api_usage", "api_key")]
    assert eng.scores["e3"] == pytest.approx(0.4)
    assert "toy.busy_key" not in CATALOG and "toy.busy_key" not in REGISTRY.catalog()  # nothing leaked
    assert not hasattr(EngineConfig(), "toy_requests")


def test_the_toy_familys_state_survives_a_checkpoint(toy):
    events = [api(i, T0 + timedelta(minutes=i), f"k{i % 2}") for i in range(30)]
    straight = Engine(registry=toy)
    want = straight.process(events[:7])
    want += straight.process(events[7:])
    eng = Engine(registry=toy)
    got = eng.process(events[:7])
    restored = Engine.from_state(eng.state(), toy)
    got += restored.process(events[7:])
    assert [a.alert_id for a in toy_alerts(got)] == [a.alert_id for a in toy_alerts(want)]
    assert len(toy_alerts(got)) == 2  # k0 and k1, each on its 5th request: the counts were restored
    assert restored.scores == straight.scores
    assert (restored.tables.key["toy_requests"] == straight.tables.key["toy_requests"]).all()


def test_the_toy_familys_state_goes_with_an_evicted_key(toy):
    config = toy.config_class(EngineLimits)(idle_evict_days=1.0)
    eng = Engine(config, toy)
    first = eng.process([api(i, T0 + timedelta(minutes=i), "k1") for i in range(5)])
    assert len(toy_alerts(first)) == 1
    eng.process([api(100, T0 + timedelta(days=3), "k2")])  # a new day three days on: k1 has gone idle
    assert "acme\x1fk1" not in eng.tables.vocabs.key.ids and eng.evicted["idle"] >= 1
    assert eng.tables.key["toy_requests"][eng.tables.vocabs.key.ids["acme\x1fk2"]] == 1
    back = eng.process([api(200 + i, T0 + timedelta(days=3, minutes=i + 1), "k1") for i in range(5)])
    hits = toy_alerts(back)
    assert [a.evidence.event_ids[0] for a in hits] == ["e204"], "k1 came back with a fresh count"


def test_the_toy_family_appears_in_the_reference_and_the_derived_tables(toy):
    text = render(toy)
    assert "### `toy.busy_key`" in text and "| `toy_requests` | `5` |" in text
    assert "column `key.toy_requests`" in text and "taken with their key ids" in text
    assert "toy.busy_key" not in render()
    assert toy.catalog()["toy.busy_key"].cooldown_s == 60
    assert fields_of(toy) == FIELDS  # a column needs no State field of its own


def test_names_must_be_unique(toy):
    with pytest.raises(ValueError, match="registered already"):
        toy.register(TOY)
    clash = dataclasses.replace(TOY, name="toy2", detectors=(dataclasses.replace(TOY.detectors[0], name="toy.x"),),
                                columns=())
    with pytest.raises(ValueError, match="declared twice"):
        toy.with_families(clash).config_class(EngineLimits)
    again = dataclasses.replace(clash, config=None, columns=TOY.columns)
    with pytest.raises(ValueError, match="declared twice"):
        toy.with_families(again)


# -- conformance: every registered family ----------------------------------------------------------------
DETECTORS = [(f, d) for f in REGISTRY.families for d in f.detectors]


@pytest.mark.parametrize(("family", "detector"), DETECTORS, ids=lambda x: getattr(x, "name", ""))
def test_every_detector_is_documented(family, detector):
    assert len(detector.decides.split()) >= 15, "how it decides: a paragraph an analyst can follow"
    assert detector.title and detector.tags and detector.entity_type
    assert all(t.split(":")[0] in ("atlas", "owasp-llm", "owasp-agentic") for t in detector.tags)
    assert detector.default_on == (family.switch is None)


@pytest.mark.parametrize(("family", "detector"), DETECTORS, ids=lambda x: getattr(x, "name", ""))
def test_every_engine_detector_has_a_pattern_and_a_benign_twin(family, detector):
    patterns = {**test_detectors.PATTERNS, **test_behaviour.PATTERNS}
    benign = {**test_detectors.BENIGN, **test_behaviour.BENIGN}
    if detector.engine:
        assert detector.name in patterns and detector.name in benign
    else:  # the correlator's: tested with it (tests/unit/test_correlation.py)
        assert detector.name not in patterns


@pytest.mark.parametrize("family", REGISTRY.families, ids=lambda f: f.name)
def test_every_option_and_every_piece_of_state_says_what_it_is_and_how_it_is_bounded(family):
    if family.config is not None:
        for fl in dataclasses.fields(family.config):
            assert fl.metadata.get("doc"), f"{family.name}: option {fl.name} has no doc"
    for c in family.columns:
        assert c.doc and c.eviction, c
    for s in family.novelty:
        assert s.doc and s.eviction and all(ns is None or ns in NAMESPACES for ns in s.halves), s
    state_fields = {f.name for f in dataclasses.fields(State)}
    for t in family.tables:
        assert t.doc and t.eviction, t
        assert t.name not in CORE_FIELDS, t.name
        assert (t.name in state_fields) == (t.factory is None), t.name  # a factory table lives in State.family
    if family.switch:
        assert isinstance(getattr(EngineConfig(), family.switch), bool)


def test_the_derived_tables_follow_the_registry():
    assert set(CATALOG) == {d.name for _, d in DETECTORS}
    assert REGISTRY.seen() == SEEN
    assert len(REGISTRY.tables()) == sum(len(f.tables) for f in REGISTRY.families)  # no table owned twice
    configs = [EngineLimits, *(f.config for f in REGISTRY.families if f.config)]
    merged = [f.name for c in configs for f in dataclasses.fields(c)]
    assert [f.name for f in dataclasses.fields(EngineConfig)] == merged


def test_the_committed_reference_is_the_generated_one():
    assert DOC.read_text() == render(), "docs/detectors.md is out of date: run python -m detectors.reference"
