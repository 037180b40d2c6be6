"""api.rate_burst judges clusters of up to 17 requests, each by the exact negative-binomial tail.

Pattern: a key of 40 requests a working day makes 24 requests a minute apart (about nine times its rate at that
hour, judged at its tenant's weekly level: the test's tenant is silent all morning before it): no cluster of 9
requests is unusual enough, the latest 13 or 17 are. Benign twin: the same key makes
24 requests five minutes apart (a busy afternoon at a few times its rate). The kernel: the exact tail agrees with
a direct sum of the negative-binomial probabilities and is never surer than a Poisson's.

api.model_extraction judges a key's latest 2 and 3 requests as clusters too. Pattern: a quiet key's requests 15 s
apart with outputs ten times its usual are extraction by the third request. Benign twin: the same requests with
its usual outputs are not.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from detectors.kernels import nb_tail_surprise, poisson_surprise_nb
from tests.unit.test_detectors import T0, Stream, _hits
from tests.unit.test_family_api import _history
from tests.unit.test_family_api_rate4 import extraction


def sustained(gap_s: float) -> tuple[list, set[str]]:
    """Five keys' four working days (40 requests a day each); then k1 makes 24 requests ``gap_s`` apart from
    13:00 of day 4."""
    rng = np.random.default_rng(6)
    s = Stream()
    _history(s, rng, per_day=40)
    t = T0 + timedelta(days=4, hours=13)
    ids = {s.api(t + timedelta(seconds=gap_s * i + float(rng.uniform(0, 5))), "k1", "inference:chat")
           for i in range(24)}
    return s.run(), ids


def test_a_sustained_burst_is_caught_on_a_cluster_longer_than_nine_requests():
    alerts, ids = sustained(60.0)
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "k1"
    n = int(hits[0].explanation.split(" made ")[1].split(" requests")[0])
    assert n > 9, hits[0].explanation


def test_a_few_times_the_keys_rate_for_two_hours_is_not_a_burst():
    alerts, ids = sustained(300.0)
    assert not _hits(alerts, "api.rate_burst", ids)


def _nb_tail_direct(k: int, mu: float, size: float) -> float:
    """-log10 P(X >= k), X negative binomial of mean ``mu`` and size ``size``: one less the sum below ``k``."""
    q = mu / (size + mu)
    below = sum(math.exp(math.lgamma(x + size) - math.lgamma(size) - math.lgamma(x + 1.0) + size * math.log1p(-q)
                         + x * math.log(q)) for x in range(k))
    return -math.log10(1.0 - below)


@pytest.mark.parametrize(("k", "mu", "size"), [(1, 0.2, 10.0), (3, 0.5, 10.0), (8, 2.0, 10.0), (5, 1.0, 3.0),
                                               (12, 4.0, 50.0)])
def test_nb_tail_agrees_with_a_direct_sum(k, mu, size):
    assert nb_tail_surprise(float(k), mu, size) == pytest.approx(_nb_tail_direct(k, mu, size), rel=1e-9)


@pytest.mark.parametrize(("k", "mu"), [(4, 0.03), (9, 0.45), (13, 1.3), (17, 2.3)])
def test_nb_tail_is_never_surer_than_a_poisson_and_tends_to_it(k, mu):
    nb = nb_tail_surprise(float(k), mu, 10.0)
    assert nb <= poisson_surprise_nb(float(k), mu) + 1e-9
    exact_poisson = -math.log10(1.0 - sum(math.exp(x * math.log(mu) - mu - math.lgamma(x + 1.0)) for x in range(k)))
    assert nb_tail_surprise(float(k), mu, 1e7) == pytest.approx(exact_poisson, rel=1e-4)
    assert nb_tail_surprise(float(k), mu, 3.0) < nb


# -- api.model_extraction: two or three requests close together are rate evidence -----------------------------
def test_long_outputs_at_a_quiet_keys_raised_rate_are_extraction_by_the_third_request():
    alerts, ids = extraction(10.0)
    hits = _hits(alerts, "api.model_extraction", set(ids))
    assert hits and hits[0].entity == "k2"
    assert hits[0].evidence.event_ids[0] in ids[:3], hits[0].explanation


def test_three_requests_close_together_with_usual_outputs_are_not_extraction():
    alerts, ids = extraction(1.0)
    assert not _hits(alerts, "api.model_extraction", set(ids))

