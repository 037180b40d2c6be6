"""api.rate_burst judged by the key's own hour-of-day rhythm, with the requests of the current hour held back.

Pattern: a key used in office hours, in a tenant of round-the-clock service keys, makes a dozen requests in a
quarter of an hour at night (its tenant's rhythm, busy at night, hid it). Benign twin: a service key of the
same tenant makes the same dozen requests at night, as it does at any hour.
The kernel's hold-back: the cluster test's rate does not rise with the requests of its own clock hour.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from detectors.families.api import RATE_WINDOWS_S, ApiConfig
from detectors.families.common import DAY, HOUR
from detectors.kernels import KR_GAP_RATE, KR_RATE_E, KR_RATE_W, TN_COLS, key_level, key_rate_model
from tests.unit.test_detectors import T0, Stream, _hits

SERVICE = ("s0", "s1", "s2", "s3")


def night_pattern(minimal: bool = False, key: str = "o1") -> tuple[list, set[str]]:
    """Four days of four service keys (200 requests a day around the clock) and one office key (150 a working
    day, 09:00-17:00 UTC); then ``key`` makes 12 requests 3 minutes apart from 23:00 of day 4 (about twice the
    service key's average rate, a hundred times the office key's at night)."""
    rng = np.random.default_rng(12)
    s = Stream()
    for day in range(4):
        for k in SERVICE:
            for _ in range(200):
                s.api(T0 + timedelta(days=day, hours=float(rng.uniform(0, 24))), k, "inference:chat")
        for _ in range(150):
            s.api(T0 + timedelta(days=day, hours=float(rng.uniform(9, 17))), "o1", "inference:chat")
    t = T0 + timedelta(days=4, hours=23)
    ids = {s.api(t + timedelta(seconds=180 * i + float(rng.uniform(0, 10))), key, "inference:chat") for i in range(12)}
    return s.run(minimal=minimal), ids


def test_an_office_keys_dozen_requests_at_night_are_a_burst_by_its_own_rhythm():
    alerts, ids = night_pattern()
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "o1"
    level = next(f for f in hits[0].evidence.features if f.name == "hour_level")
    # the tenant's level at 23:00 is about 0.84 (service keys around the clock); the key's own is far below it
    assert level.value < 0.5, "judged at the key's own quiet hour, not at its tenant's (busy) night"


def test_a_service_keys_dozen_requests_at_night_are_not_a_burst():
    alerts, ids = night_pattern(key="s0")
    assert not _hits(alerts, "api.rate_burst", ids)


def _model(ts: np.ndarray, hist: np.ndarray | None = None) -> np.ndarray:
    """``key_rate_model`` over one key of one tenant (default settings), from fresh state; ``hist`` seeds the key's
    and the tenant's hour-of-day counts."""
    cfg = ApiConfig()
    n = ts.size
    key, ten = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    col = [np.zeros(1) for _ in range(14)]  # r1 .. tok_run
    tn, hours = np.zeros((1, TN_COLS)), np.zeros((1, 24))
    key_hours = np.zeros((1, 24))
    if hist is not None:
        key_hours[0], hours[0] = hist, hist
    ok = np.ones(n, dtype=np.bool_)
    return key_rate_model(
        key, ten, ts, ok, np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_), np.zeros(n), *col, tn, hours,
        np.array(RATE_WINDOWS_S) * 1000, cfg.rate_tau_slow_s * 1000, cfg.rate_prior_events, cfg.rate_nb_size,
        cfg.rhythm_tau_days * DAY, cfg.unknown_dormant_days * DAY, HOUR, cfg.rate_floor_per_hour / HOUR,
        cfg.rate_surprise, cfg.token_alpha, cfg.token_min_sd, 1, cfg.token_gate, cfg.token_run_z,
        cfg.stuffing_floor_share, cfg.stuffing_surprise, key_hours, cfg.rhythm_prior_events, cfg.rate_level_floor,
        np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), cfg.rate_min_requests, 0.0)


def test_a_burst_does_not_raise_the_cluster_tests_bar_within_its_clock_hour():
    day0 = 20_000 * DAY
    rng = np.random.default_rng(4)
    history = np.sort(day0 + rng.uniform(0, 2 * DAY, size=120))  # two days at about 2.5 requests an hour
    burst = day0 + 2 * DAY + 10 * HOUR + np.arange(40) * 30_000.0  # 40 requests 30 s apart, within one hour
    after = np.array([day0 + 2 * DAY + 11 * HOUR + 20 * 60_000.0])  # the next clock hour
    ts = np.concatenate([history, burst, after]).astype(np.int64)
    out = _model(ts)
    b = slice(history.size, history.size + burst.size)
    gap_rate = out[b, KR_GAP_RATE]
    # 40 requests on a history of 120: learned at once they would lift the rate by a third, and the hour's level
    assert gap_rate.max() < 1.15 * gap_rate[0], "the cluster test's rate holds still while the burst goes on"
    assert out[-1, KR_GAP_RATE] > 2 * gap_rate[0], "the hour's unalarming requests join the baseline after it"
    minute = out[b, KR_RATE_E] / np.array(RATE_WINDOWS_S)[out[b, KR_RATE_W].astype(np.int64)]
    assert minute[-1] > minute[1], "the windows count the hour's requests in"


def test_key_level_follows_the_keys_own_rhythm_and_its_tenants_while_young():
    office = np.zeros(24)
    office[9:17] = 100.0  # an office key: all of its requests 09:00-17:00
    flat = np.full(24, 30.0)
    hist = np.stack([office, np.zeros(24)])
    tenant = np.stack([flat])
    noon, night = 12 * HOUR + 1, 23 * HOUR + 1
    prior, floor = ApiConfig().rhythm_prior_events, ApiConfig().rate_level_floor
    assert key_level(hist, tenant, 0, 0, noon, prior, floor) > 2.5  # 24 / 8 busy hours
    assert key_level(hist, tenant, 0, 0, night, prior, floor) < 0.1
    young = key_level(hist, tenant, 1, 0, night, prior, floor)  # no history: its tenant's (flat) rhythm
    assert abs(young - 1.0) < 1e-6
    assert key_level(np.zeros((1, 24)), np.zeros((1, 24)), 0, 0, night, prior, floor) == 1.0
    assert key_level(hist * 1e6, tenant, 0, 0, night, prior, floor) == floor


# -- api.model_extraction: a run of long outputs, not one -------------------------------------------------
def one_long_output(minimal: bool = False, longs: int = 1) -> tuple[list, set[str]]:
    """k2 at about 8x its own rate for an hour on one model (a rate that is not a burst on its own), with
    ``longs`` consecutive outputs 5 times its usual in the middle: one is chance, a run is extraction."""
    from tests.unit.test_family_api import _history

    rng = np.random.default_rng(10)
    s = Stream()
    _history(s, rng, per_day=12)
    t = T0 + timedelta(days=4, hours=10)
    ids = set()
    for i in range(60):
        ids.add(s.api(t + timedelta(seconds=60 * i + float(rng.uniform(0, 30))), "k2", "inference:chat"))
        total = 30.0 * float(rng.lognormal(0.0, 0.5))
        row = s.rows[-1][1]
        scale = 5.0 if 30 <= i < 30 + longs else 1.0
        row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(scale * 2 * total / 3) + 1
    return s.run(minimal=minimal), ids


def test_a_run_of_long_outputs_at_a_sustained_rate_is_model_extraction():
    alerts, ids = one_long_output(longs=6)
    hits = _hits(alerts, "api.model_extraction", ids)
    assert hits and hits[0].entity == "k2" and "outputs far longer" in hits[0].explanation


def test_one_long_output_at_a_sustained_rate_is_not_model_extraction():
    alerts, ids = one_long_output(longs=1)
    assert not _hits(alerts, "api.model_extraction", ids)


# -- api.rate_burst: a key's history starts with its first successful request ------------------------------
def joiner_pattern(minimal: bool = False, guessed: bool = True) -> tuple[list, set[str]]:
    """Key j1 makes a request every 2 minutes from 09:00 of day 3 (a new joiner's first hours, about six times
    its tenant's typical key). ``guessed``: before that its id only showed in two failed authentications a day
    (someone guessing keys), so it has no usage history and is judged by its tenant's keys; else it had a real,
    quiet one (two requests a day) and the same hours are a burst."""
    from tests.unit.test_family_api import _history

    rng = np.random.default_rng(14)
    s = Stream()
    _history(s, rng, per_day=40)
    for day in range(3):
        for j in range(2):
            t = T0 + timedelta(days=day, hours=2 + 8 * j, minutes=float(rng.uniform(0, 30)))
            s.api(t, "j1", "inference:chat", auth_result="invalid_credentials" if guessed else "ok")
    t = T0 + timedelta(days=3, hours=9)
    ids = {s.api(t + timedelta(seconds=120 * i + float(rng.uniform(0, 30))), "j1", "inference:chat")
           for i in range(60)}
    return s.run(minimal=minimal), ids


def test_a_new_joiners_first_hours_are_not_a_burst_after_failed_guesses_at_its_key():
    alerts, ids = joiner_pattern(guessed=True)
    assert not _hits(alerts, "api.rate_burst", ids)


def test_a_quiet_keys_same_hours_are_a_burst():
    alerts, ids = joiner_pattern(guessed=False)
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "j1"
