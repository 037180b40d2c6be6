"""clickhouse-driver's client, able to send columns that are already in ClickHouse's Native wire form.

clickhouse-driver serializes an insert's columns in Python, value by value (a string is encoded, a
``DateTime`` checked, one at a time). The worker's ``events`` insert is its biggest: tens of thousands
of rows a few times a second. :func:`schemas.rows.block_packed` builds those columns as whole byte
strings instead, and :class:`PackedClient` writes them into the insert's Data packet as they are.
Everything else (connecting, the query, the server's sample block, the end-of-data block, errors)
is the driver's own code path; only the column bytes are not its writers'.
"""

from __future__ import annotations

from typing import Any

from clickhouse_driver import Client, defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

from schemas.rows import Packed


class PackedClient(Client):  # type: ignore[misc]
    """A ``clickhouse_driver.Client`` whose inserts also take a :class:`~schemas.rows.Packed` as their data."""

    def send_data(self, sample_block: Any, data: Any, types_check: bool = False, columnar: bool = False) -> int:
        if not isinstance(data, Packed):
            return int(super().send_data(sample_block, data, types_check=types_check, columnar=columnar))
        conn = self.connection
        if conn.compression:  # the packed bytes go to the socket as they are: no compressed stream
            raise ValueError("packed columns need a connection without compression")
        want = [(name, ty) for name, ty, _ in data.columns]
        have = [tuple(c) for c in sample_block.columns_with_types]
        if have != want:
            wrong = next(((w, h) for w, h in zip(want, have, strict=False) if w != h), (want, have))
            raise ValueError(f"packed columns do not match the table's: {wrong[0]} packed, the server expects "
                             f"{wrong[1]}")
        # the Data packet as Connection.send_data and BlockOutputStream.write make it, with our column bytes
        rev, out = conn.server_info.used_revision, conn.fout
        write_varint(ClientPacketTypes.DATA, out)
        if rev >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
            write_binary_str("", out)
        if rev >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
            BlockInfo().write(out)
        write_varint(len(data.columns), out)
        write_varint(data.rows, out)
        for name, ty, payload in data.columns:
            write_binary_str(name, out)
            write_binary_str(ty, out)
            if rev >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
                write_binary_uint8(0, out)
            out.write(payload)
        out.flush()
        self.receive_profile_events()
        conn.send_data(ColumnOrientedBlock())  # an empty block: the end of the data
        self.receive_profile_events()
        return data.rows
