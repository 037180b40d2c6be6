"""Both Kafka clients decode every codec a producer may use, and the worker refuses to start without them."""

from __future__ import annotations

import pytest
from aiokafka import codec as aiokafka_codec
from kafka import codec as kafka_codec

from schemas.errors import ConfigError
from streams.worker import require_codecs

PAYLOAD = b'{"kind": "api_usage", "event_id": "e1"}' * 50


@pytest.mark.parametrize("name", ["snappy", "lz4", "zstd"])
def test_each_client_decodes_what_the_other_encodes(name):
    a_enc, a_dec = getattr(aiokafka_codec, f"{name}_encode"), getattr(aiokafka_codec, f"{name}_decode")
    k_enc, k_dec = getattr(kafka_codec, f"{name}_encode"), getattr(kafka_codec, f"{name}_decode")
    assert bytes(k_dec(a_enc(PAYLOAD))) == PAYLOAD
    assert bytes(a_dec(k_enc(PAYLOAD))) == PAYLOAD


def test_the_worker_refuses_to_start_without_the_codecs_and_names_them(monkeypatch):
    require_codecs()  # installed: passes
    monkeypatch.setattr(aiokafka_codec, "cramjam", None)
    monkeypatch.setattr(kafka_codec, "zstd", None)
    with pytest.raises(ConfigError, match="no aiokafka snappy, aiokafka lz4, aiokafka zstd, kafka-python zstd codec"):
        require_codecs()
