"""Decoding into blocks: the native decoder (schemas/native) against msgspec, field by field.

The rule the native decoder keeps: a record it accepts is one msgspec accepts, with the same values; it
may leave a valid record to msgspec (which then decodes it). Every test compares the whole
``decode_block`` result with the native decoder and without it: the records decoded, the errors, and
every column.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.block import SPECS, EventBlock, block_from_events, decode_block, first_appearance, native_available
from schemas.events import decode
from schemas.samples import SAMPLES

KINDS = list(SAMPLES)


def test_the_native_decoder_is_built():
    """``make deps`` builds it (cargo, maturin); without it the worker falls back to msgspec, slower."""
    if os.environ.get("SPYGLASS_NATIVE") == "off":
        pytest.skip("SPYGLASS_NATIVE=off: the msgspec fallback is what is under test")
    assert native_available(), "schemas/native is not built: run `make deps` (it needs cargo)"


native = pytest.mark.skipif(not native_available(), reason="the native decoder is not built")


def same(a: EventBlock, b: EventBlock) -> None:
    assert a.kind == b.kind and len(a) == len(b)
    assert list(a.raws) == list(b.raws)
    for name in a.cols:
        x, y = a.cols[name], b.cols[name]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype, name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (name, x, y)
        else:
            assert x == y, name
            assert [type(v) for v in x] == [type(v) for v in y], name
    for name in set(a.factors) | set(b.factors):  # the native decoder's codes, against ones built in Python
        (ca, na), (cb, nb) = a.factor(name), b.factor(name)
        assert na == nb and np.array_equal(ca.astype(np.int64), cb.astype(np.int64)), name
        assert [None if k < 0 else na[k] for k in ca.tolist()] == a.cols[name], name


def both(values: list[bytes | None], kind: str, tenant: str = "dflt"):
    fast = decode_block(values, kind, tenant)
    slow = decode_block(values, kind, tenant, native=False)
    assert fast[1] == slow[1], "decoded different records"
    assert [(i, e.field, e.reason) for i, e in fast[2]] == [(i, e.field, e.reason) for i, e in slow[2]]
    same(fast[0], slow[0])
    return fast


def _sim(n: int = 6000) -> dict[str, list[bytes]]:
    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    by: dict[str, list[bytes]] = {k: [] for k in KINDS}
    for chunk in Simulation(seed=3, events=n, days=2).chunks():
        for r in chunk.rows:
            by[r["kind"]].append(enc.encode(r))
    return by


@native
@pytest.mark.parametrize("kind", KINDS)
def test_simulated_traffic_is_decoded_natively_and_equals_msgspec(kind):
    from schemas.block import native_decoder

    values = _sim()[kind]
    _, factored, ok, rest = native_decoder(kind).decode(values, "dflt")
    assert rest == [] and len(ok) == len(values)  # the fast path takes all of them
    assert set(factored) == {s.name for s in SPECS[kind] if s.type in ("str", "ostr", "dstr", "strs")} - {
        "event_id", "parent_event_id"}  # every string (or string-list) field but the ids comes factorized
    block, ok, errors = both(values, kind)
    assert len(block) == len(values) and not errors
    # and the structs the engine asks for are the ones msgspec decodes
    assert [block.events[i] for i in (0, len(block) // 2, len(block) - 1)] == [
        decode(values[i], default_tenant="dflt") for i in (0, len(block) // 2, len(block) - 1)]


def test_a_block_from_structs_holds_every_field_in_its_column_type():
    kind = "agent_execution"
    raw = json.dumps({**SAMPLES[kind], "risk_level": None, "untrusted_input": None}).encode()
    b = block_from_events(kind, [decode(raw)], [raw])
    c = b.cols
    assert c["risk_level"].tolist() == [-1] and c["untrusted_input"].tolist() == [False]
    assert c["privilege"].tolist() == [0] and c["tokens_in"].tolist() == [1] and c["duration_ms"].tolist() == [5.0]
    assert c["ts"].tolist() == [int(datetime(2026, 11, 21, 13, 45, tzinfo=UTC).timestamp()) * 1_000_000]
    assert c["tenant"] == ["default"] and c["source"] == [""]


def _mixed_batch() -> list[bytes | None]:
    s = SAMPLES["api_usage"]
    good = json.dumps(s).encode()
    return [
        good,
        None,  # a tombstone
        b"not json",
        json.dumps({**s, "status": "200"}).encode(),  # wrong type
        json.dumps({**s, "ts": "2026-11-21 13:45:00Z"}).encode(),  # valid; a form only msgspec takes
        json.dumps({**s, "kind": "data_access"}).encode(),  # another kind on this topic
        json.dumps(s, ensure_ascii=True).replace('"ok"', '"\\u006fk"').encode(),  # escapes
        b'\xff' + good,  # invalid UTF-8
        good[:-1] + b', "kind": "api_usage"}',  # duplicate key
        json.dumps({**s, "tokens_in": 2**63}).encode(),  # past int64
        json.dumps({**s, "scopes_granted": ["a"] * 257}).encode(),  # too many scopes
        json.dumps({**s, "user_agent": "é" * 1024}).encode(),  # at the limit in characters, not in bytes
        json.dumps({**s, "user_agent": "é" * 1025}).encode(),  # past it
        json.dumps({**s, "latency_ms": -0.0, "tenant": None}).encode(),  # a null tenant is refused
        good,
    ]


def test_a_mixed_batch_keeps_arrival_order_and_every_error():
    block, ok, errors = both(_mixed_batch(), "api_usage")
    assert ok == [0, 4, 6, 8, 11, 14]
    assert [i for i, _ in errors] == [1, 2, 3, 5, 7, 9, 10, 12, 13]
    assert dict((i, e.field) for i, e in errors)[3] == "$.status"


# -- generated input -----------------------------------------------------------------------------------------
def _ts_text(dt: datetime, digits: int, sep: str, zone: str) -> str:
    frac = f"{dt.microsecond:06d}{dt.microsecond % 7}{dt.microsecond % 3}9"[:digits]
    return dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (f".{frac}" if digits else "") + zone


timestamps = st.builds(
    _ts_text,
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(0, 10),
    st.sampled_from(["T", "t", " ", "x"]),
    st.one_of(st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+0100", "+24:00", "-23:59", "+05:30", "+01:60"]),
              st.builds(lambda h, m, s: f"{s}{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59),
                        st.sampled_from("+-"))),
) | st.sampled_from(["2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "0000-01-01T00:00:00Z",
                     "2026-11-21T24:00:00Z", "2026-11-21T13:45:60Z", "2026-11-21T13:45:00.Z",
                     "9999-12-31T23:59:59.9999995Z", "0001-01-01T00:00:00+00:01", "2026-11-21T13:45:00.1234565Z",
                     "２０26-11-21T13:45:00Z"])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-5, 700),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40), st.text(min_size=250, max_size=300),
    st.sampled_from(["ok", "expired", "read", "admin", "public", "restricted", "bypassed", "external_content",
                     "success", "low", "critical", "", "OK", "read ", "\u0000", "\ud7ff", "x" * 1025]),
    timestamps,
    st.lists(st.text(max_size=6), max_size=4), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def records(draw, kind: str) -> bytes | None:
    rec = dict(SAMPLES[kind])
    names = [s.name for s in SPECS[kind]] + ["kind", "extra", "nested"]
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 4)) == 0:
            rec.pop(name, None)
        else:
            rec[name] = draw(scalars)
    if draw(st.integers(0, 2)) == 0:
        rec["ts"] = draw(timestamps)
    if draw(st.integers(0, 3)) == 0:  # keys in another order than the records before (the decoder's order hint)
        rec = dict(draw(st.permutations(list(rec.items()))))
    text = json.dumps(rec, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from([(",", ":"),
                                                                                              (", ", ": ")])))
    raw = text.encode("utf-8", "surrogatepass")
    tweak = draw(st.integers(0, 14))
    if tweak == 0:  # a key twice
        again = json.dumps(draw(scalars)).encode()
        raw = raw[:-1] + b',"' + draw(st.sampled_from(names)).encode() + b'":' + again + b"}"
    elif tweak == 1:  # cut short, or bytes spliced in
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=3))
    elif tweak == 2:  # a key written with escapes
        raw = raw.replace(b'"principal"', b'"princip\\u0061l"')
    elif tweak == 3:  # trailing whitespace or garbage
        raw += draw(st.sampled_from([b" ", b"\n", b" x", b"}"]))
    return raw


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_records_decode_the_same_with_and_without_the_native_decoder(kind, data):
    values = data.draw(st.lists(records(kind), min_size=1, max_size=12))
    both(values, kind)


@settings(max_examples=400, deadline=None)
@given(ts=timestamps)
def test_timestamps_the_native_decoder_takes_are_msgspecs_to_the_microsecond(ts):
    raw = json.dumps({**SAMPLES["data_access"], "ts": ts}).encode()
    block, ok, _ = both([raw], "data_access")
    if ok:
        expect = decode(raw).ts
        assert block.cols["ts"][0] == (expect - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_a_fraction_past_microseconds_rounds_half_up_like_msgspec():
    values = [json.dumps({**SAMPLES["data_access"], "ts": t}).encode() for t in (
        "2026-11-21T13:45:00.1234565Z", "2026-11-21T13:45:00.1234564999Z", "2026-11-21T23:59:59.9999995+01:00")]
    block, ok, _ = both(values, "data_access")
    assert ok == [0, 1, 2]
    us = block.cols["ts"].tolist()
    assert us[0] % 1_000_000 == 123457 and us[1] % 1_000_000 == 123456
    assert datetime.fromtimestamp(us[2] / 1e6, UTC) == datetime(2026, 11, 21, 23, 0, tzinfo=UTC)


def test_hostile_records_are_errors_in_both_decoders():
    from tests.fault.test_faults import BAD

    values = [v for v, _ in BAD]
    for kind in KINDS:
        block, ok, errors = both(values, kind)
        assert ok == [] and len(errors) == len(values) and len(block) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1, 30), max_size=80), st.sampled_from([np.int32, np.int64]))
def test_first_appearance_renumbers_codes_in_order_of_first_appearance(codes, dtype):
    new, used = first_appearance(np.array(codes, dtype=dtype))
    order = list(dict.fromkeys(c for c in codes if c >= 0))
    assert used.tolist() == order
    assert new.tolist() == [-1 if c < 0 else order.index(c) for c in codes]


@native
def test_lists_that_concatenate_alike_stay_distinct_values():
    lists = [["ab"], ["a", "b"], ["a", "b"], [], None, ["1:a"], ["a"], ["1:a", "b"], ["a", "1:b"], ["ab"], "absent"]
    values = [json.dumps({k: v for k, v in {**SAMPLES["api_usage"], "scopes_granted": x}.items()
                          if v != "absent"}).encode() for x in lists]
    block, ok, _ = both(values, "api_usage")
    assert ok == list(range(len(lists)))
    want = [() if x in (None, "absent") else tuple(x) for x in lists]
    assert block.cols["scopes_granted"] == want
    codes, names = block.factor("scopes_granted")
    assert names == list(dict.fromkeys(want)) and [names[k] for k in codes.tolist()] == want


def test_missing_optional_values_fill_their_columns_as_documented():
    s = {k: v for k, v in SAMPLES["api_usage"].items()
         if k not in ("user_agent", "latency_ms", "tokens_in", "scopes_granted", "tenant", "source")}
    block, ok, _ = both([json.dumps(s).encode()], "api_usage", tenant="fallback")
    c = block.cols
    assert c["user_agent"] == [None] and math.isnan(c["latency_ms"][0]) and c["tokens_in"].tolist() == [0]
    assert c["scopes_granted"] == [()] and c["tenant"] == ["fallback"] and c["source"] == [""]


_names = st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d\u00e9", ""])), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), names=_names, known=st.lists(st.sampled_from(["a", "t1\x1fb", "c"]), max_size=3))
def test_interning_distinct_values_gives_the_ids_of_interning_each_event(data, names, known):
    """The engine interns each distinct value once (``interned``), in order of first appearance; the ids, and
    the vocabulary it leaves, are those of interning the column event by event, whatever the tenants, the
    absent values, or the selection (a window of the batch) the codes come through."""
    from detectors.columns import Vocab, interned, scoped

    n = len(names)
    tenants = data.draw(st.lists(st.sampled_from(["t1", "t2"]), min_size=n, max_size=n))
    block = EventBlock("api_usage", {"event_id": [str(i) for i in range(n)], "tenant": tenants, "x": names}, None)
    if data.draw(st.booleans()):  # a window: the codes of a selection index the parent's names
        idx = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n)) if n else []
        block.factor("x"), block.factor("tenant")
        block = block.take(idx)
        names, tenants = block.cols["x"], block.cols["tenant"]
    for by_tenant in (False, True):
        fast, slow = Vocab(known), Vocab(known)
        want = slow.many([None if x is None else y for x, y in zip(names, scoped(tenants, names), strict=True)]
                         if by_tenant else names)
        got = interned(fast, block, "x", by_tenant=by_tenant)
        assert got.tolist() == want.tolist() and fast.names == slow.names


@native
def test_a_window_of_a_natively_decoded_block_interns_as_the_whole_batch_would():
    from detectors.columns import Vocab, interned, scoped

    values = _sim()["api_usage"]
    block = decode_block(values, "api_usage", "dflt")[0]
    assert block.factors["endpoint"].exact and len(set(block.cols["tenant"])) > 1
    part = block.take(np.arange(len(block))[::-3])  # later events first: first appearance changes
    assert not part.factors["endpoint"].exact
    for name, by_tenant in (("endpoint", False), ("user_agent", False), ("api_key_id", True)):
        v1, v2 = Vocab(), Vocab()
        got = interned(v1, part, name, by_tenant=by_tenant)
        want = v2.many(scoped(part.cols["tenant"], part.cols[name]) if by_tenant else part.cols[name])
        assert got.tolist() == want.tolist() and v1.names == v2.names, name
