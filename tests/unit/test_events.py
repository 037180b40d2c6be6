from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.errors import EventError
from schemas.events import EVENT_TYPES, KINDS, ApiUsage, decode, decode_batch, encode
from schemas.publish import render, schema_path
from schemas.samples import SAMPLES
from tests.unit.samples import MISTYPED, REQUIRED


def raw(d: dict) -> bytes:
    return json.dumps(d).encode()


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path(kind).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("kind", KINDS)
def test_valid_sample_decodes_to_its_kind(kind):
    ev = decode(raw(SAMPLES[kind]))
    assert isinstance(ev, EVENT_TYPES[kind])
    assert ev.event_id == SAMPLES[kind]["event_id"]
    assert ev.ts.utcoffset() is not None


def test_tenant_defaults_to_the_configured_default():
    d = dict(SAMPLES["data_access"])
    d.pop("tenant", None)
    assert decode(raw(d)).tenant == "default"
    assert decode(raw(d), default_tenant="blue").tenant == "blue"
    assert decode(raw(SAMPLES["api_usage"]), default_tenant="blue").tenant == "acme"


def test_unknown_fields_are_ignored():
    d = dict(SAMPLES["api_usage"], future_field={"nested": [1, 2]}, another="x")
    ev = decode(raw(d))
    assert isinstance(ev, ApiUsage)
    assert not hasattr(ev, "future_field")


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fs in REQUIRED.items() for f in fs])
def test_missing_required_field_is_named(kind, field):
    d = dict(SAMPLES[kind])
    del d[field]
    err = decode(raw(d))
    assert isinstance(err, EventError)
    assert err.field == f"$.{field}"


@pytest.mark.parametrize(("kind", "field", "value"), MISTYPED)
def test_mistyped_field_is_named(kind, field, value):
    err = decode(raw(dict(SAMPLES[kind], **{field: value})))
    assert isinstance(err, EventError), err
    assert err.field == f"$.{field}"
    assert str(err).startswith(f"$.{field}: ")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"kind": "api_usage", "event_id": "\xff\xfe"}', "UTF-8"),
        (b"[1, 2]", "Expected `object`"),
        (b'{"kind": "api_usage", "a":' + b'{"b":' * 3000 + b"1" + b"}" * 3001, "nested too deeply"),
        (b'{"kind": "api_usage", "pad": "' + b"x" * 70_000 + b'"}', "byte limit"),
        (b'{"kind": "nope", "event_id": "e"}', "Invalid value"),
    ],
)
def test_bad_records_are_errors_not_exceptions(data, reason):
    err = decode(data)
    assert isinstance(err, EventError)
    assert reason in err.reason


def test_decode_batch_keeps_good_records_and_indexes_bad_ones():
    good = [raw(SAMPLES[k]) for k in KINDS]
    batch = [good[0], b"{", good[1], raw(dict(SAMPLES["api_usage"], status="x")), good[2]]
    oks, errs = decode_batch(batch)
    assert [e.event_id for e in oks] == [SAMPLES[k]["event_id"] for k in KINDS]
    assert [i for i, _ in errs] == [1, 3]
    assert errs[1][1].field == "$.status"


@pytest.mark.parametrize("kind", KINDS)
def test_encode_round_trips(kind):
    ev = decode(raw(SAMPLES[kind]))
    again = decode(encode(ev))
    assert again == ev


@pytest.mark.parametrize("kind", KINDS)
def test_committed_json_schema_matches_the_contract(kind):
    assert schema_path(kind).read_text() == render(kind), "run `spyglass schemas export` and commit"


@pytest.mark.parametrize("kind", KINDS)
def test_published_schema_accepts_valid_samples(kind):
    validator(kind).validate(SAMPLES[kind])


@pytest.mark.parametrize(("kind", "field", "value"), MISTYPED)
def test_published_schema_and_decoder_agree_on_bad_values(kind, field, value):
    errors = list(validator(kind).iter_errors(dict(SAMPLES[kind], **{field: value})))
    assert errors, f"schema accepted {field}={value!r} that the decoder rejects"


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fs in REQUIRED.items() for f in fs])
def test_published_schema_requires_what_the_decoder_requires(kind, field):
    d = dict(SAMPLES[kind])
    del d[field]
    assert list(validator(kind).iter_errors(d))

