"""The ``events`` insert in ClickHouse's Native wire form (``schemas.rows.block_packed``, ``pack_strings``).

Each packed column is held, byte for byte, to an independent serializer of :func:`block_columns`' lists (the
form clickhouse-driver's writers take): a varint length and the UTF-8 bytes per string, little-endian
fixed-width numbers. The server side (that 18.16 stores the same rows from either) is in
tests/integration/test_storage.py.
"""

from __future__ import annotations

import json
import struct
from itertools import accumulate, chain

import pytest

from schemas.block import decode_block, native_available
from schemas.rows import EVENT_TYPES, MEASURES, block_columns, block_packed
from tests.unit.storage_contract import CREATED, odd_events, sample_events

pytestmark = pytest.mark.skipif(not native_available(), reason="the native module is not built")
FORMATS = {"DateTime": "<I", "UInt8": "<B", "UInt16": "<H", "UInt64": "<Q", "Float32": "<f"}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def reference(name: str, values: list) -> bytes:
    """A column as clickhouse-driver writes ``values`` (the lists of ``block_columns``), written here by hand."""
    ty = EVENT_TYPES[name]
    if ty == "String":
        return b"".join(varint(len(v)) + v for v in (x if isinstance(x, bytes) else x.encode() for x in values))
    if ty == "Array(String)":  # each row's end offset (UInt64) into the items, then the items as a String column
        ends = list(accumulate(map(len, values)))
        return struct.pack(f"<{len(ends)}Q", *ends) + reference("event_id", [x for v in values for x in v])
    return b"".join(struct.pack(FORMATS[ty], v) for v in values)


def test_pack_strings_writes_varint_lengths_and_utf8():
    from spyglass_native import pack_strings

    items = ["", "a", "zoë-例え", b"raw \xff bytes", "x" * 127, "y" * 128, b"z" * 16_383, "w" * 16_384, "v" * 2**21]
    assert pack_strings(items) == reference("event_id", items)
    assert pack_strings([]) == b""
    with pytest.raises(TypeError, match="item 1: expected str or bytes, got int"):
        pack_strings(["a", 3])
    with pytest.raises(ValueError, match="item 2: not encodable as UTF-8"):
        pack_strings(["a", "b", "\ud800"])


def _blocks(native: bool) -> list:
    """The contract's sample and odd events (with a non-ASCII principal), decoded by kind, with some scores."""
    raws = [raw for _e, raw in sample_events(n=1500) + odd_events()]
    first = json.loads(raws[0])
    raws.append(json.dumps({**first, "event_id": "evt-unicode", "principal": "zoë@例え.jp"}, ensure_ascii=False)
                .encode())
    blocks = []
    for kind in ("api_usage", "data_access", "agent_execution"):
        mine = [r for r in raws if json.loads(r)["kind"] == kind]
        block, ok, bad = decode_block(mine, kind, "default", native=native)
        assert not bad and len(block) == len(mine)
        # zero, ordinary, a half at the 5th place (Python's and numpy's rounding differ), and NaN
        block.scores = [(0.0, 0.7312345678, 0.00005, 0.12345, 1.0, float("nan"))[i % 6] for i in range(len(block))]
        blocks.append(block)
    return blocks


@pytest.mark.parametrize("native", [True, False], ids=["native blocks", "msgspec blocks"])
@pytest.mark.parametrize("measures", [True, False], ids=["measures", "no measures"])
def test_packed_columns_are_the_driver_form_of_block_columns(native: bool, measures: bool):
    blocks = _blocks(native)
    lists = block_columns(blocks, CREATED, measures=measures)
    packed = block_packed(blocks, CREATED, measures=measures)
    assert packed is not None and packed.rows == sum(map(len, blocks)) == len(lists["event_id"])
    assert [name for name, _, _ in packed.columns] == list(lists)
    assert measures == all(m in lists for m in MEASURES)
    scores = list(chain.from_iterable(b.scores for b in blocks))  # stored as Python rounds them, 0 and NaN kept
    assert struct.pack(f"<{len(scores)}d", *lists["score"]) == struct.pack(
        f"<{len(scores)}d", *(round(x, 4) if x else 0.0 for x in scores))
    for name, ty, data in packed.columns:
        assert ty == EVENT_TYPES[name]
        if name == "score":  # NaN: compare the bytes struct writes for the same float32
            assert data == b"".join(struct.pack("<f", v) for v in lists[name]), name
        else:
            assert data == reference(name, lists[name]), name
    assert "zoë@例え.jp".encode() in dict((n, d) for n, _, d in packed.columns)["principal"]


def test_a_window_of_blocks_packs_as_its_lists():
    """The worker stores blocks cut by take/slice (events an earlier owner stored are left out)."""
    blocks = _blocks(True)
    cut = [blocks[0].take(list(range(0, len(blocks[0]), 3))), blocks[1].slice(5, 40), blocks[2]]
    lists = block_columns(cut, CREATED)
    packed = block_packed(cut, CREATED)
    assert packed is not None
    for name, _ty, data in packed.columns:
        if name != "score":
            assert data == reference(name, lists[name]), name
    assert packed.rows == len(list(chain.from_iterable(b.cols["event_id"] for b in cut)))
