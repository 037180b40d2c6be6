"""The interfaces the worker and the engine rely on, checked against their implementations so that
neither side drifts silently: every protocol member exists, and each method takes the same parameters."""

from __future__ import annotations

import inspect
from typing import Generic, Protocol

import pytest

from detectors.base import EventEngine, EvidenceEngine, PartitionEngine
from detectors.correlation import Correlator
from detectors.engine import Engine
from detectors.models.base import AnomalyModel, BatchAnomalyModel
from detectors.models.multivariate import Loda
from detectors.models.univariate import UnivariateDetector


def _parameters(fn: object) -> list[tuple[str, object, bool]]:
    """Name, kind and whether it has a default, of each parameter but the bound ``self``/``cls``."""
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params]


def _methods(protocol: type) -> list[str]:
    """The protocol's methods, its own and inherited ones (not its data members)."""
    return sorted({name for base in protocol.__mro__ if base not in (object, Protocol, Generic)
                   for name, v in vars(base).items()
                   if not name.startswith("_") and (inspect.isfunction(v) or isinstance(v, classmethod))})


def _assert_conforms(obj: object, protocol: type) -> None:
    assert isinstance(obj, protocol), f"{type(obj).__name__} lacks a member of {protocol.__name__}"
    methods = _methods(protocol)
    assert methods, protocol
    for name in methods:
        want, got = _parameters(getattr(protocol, name)), _parameters(getattr(obj, name))
        # the protocol's parameters first, as it declares them; an implementation may add optional ones after
        ok = got[: len(want)] == want and all(has_default for _, _, has_default in got[len(want):])
        assert ok, f"{type(obj).__name__}.{name}{got} does not match {protocol.__name__}.{name}{want}"


@pytest.mark.parametrize(("make", "protocol"), [
    (Engine, EventEngine),
    (Correlator, EvidenceEngine),
    (Engine, PartitionEngine),
    (Correlator, PartitionEngine),
])
def test_engine_and_correlator_are_what_the_scorer_drives(make, protocol):
    _assert_conforms(make(), protocol)


def test_an_engine_is_not_taken_for_a_correlator_nor_the_other_way():
    """The scorer tells a partition's engine from a correlator by these protocols."""
    assert not isinstance(Engine(), EvidenceEngine)
    assert not isinstance(Correlator(), EventEngine)


def test_a_restored_engine_conforms_as_the_fresh_one():
    for make, protocol in ((Engine, EventEngine), (Correlator, EvidenceEngine)):
        _assert_conforms(make.from_state(make().state()), protocol)


@pytest.mark.parametrize("model", [Loda(), UnivariateDetector()], ids=["loda", "univariate"])
def test_the_project_models_follow_rivers_protocol(model):
    _assert_conforms(model, AnomalyModel)


def test_loda_has_the_batch_variants():
    _assert_conforms(Loda(), BatchAnomalyModel)


def test_a_river_anomaly_model_satisfies_the_model_protocol():
    anomaly = pytest.importorskip("river.anomaly")
    _assert_conforms(anomaly.HalfSpaceTrees(seed=1), AnomalyModel)
    assert not isinstance(anomaly.HalfSpaceTrees(seed=1), BatchAnomalyModel)


def test_the_signature_check_catches_a_drifted_method():
    """A method given another required parameter fails the check (the check could be false); an optional
    parameter after the protocol's is a compatible extension."""

    class Drifted(Loda):
        def score_one(self, x: dict[str, float], learn: bool) -> float:  # a required parameter more
            return 0.0

    class Extended(Loda):
        def score_one(self, x: dict[str, float], learn: bool = False) -> float:  # an optional one: callers unaffected
            return 0.0

    with pytest.raises(AssertionError, match="score_one"):
        _assert_conforms(Drifted(), AnomalyModel)
    _assert_conforms(Extended(), AnomalyModel)
