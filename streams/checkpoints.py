"""Per-partition engine checkpoints, kept in ClickHouse where every worker can read them.

A checkpoint is the engine's whole state for one topic partition plus the offset it reflects
(the next offset it has *not* seen). Any worker that is assigned the partition restores it,
skips records below that offset (already learned, already stored) and re-scores the rest;
the engine does not depend on where batches are cut, so the re-scored records give the very
alerts the first run gave, with the same ids.

The state is a pickle of the engine's own arrays; unpickling can run code, so every blob is
signed with HMAC-SHA256 under a key only the workers hold (``SPYGLASS_CHECKPOINT_KEY``, at least
:data:`MIN_KEY_BYTES` bytes; required when the store is a server, generated once in the stack dir
for the embedded demo), and one that fails the check is refused: the partition then starts cold
rather than load it. A signed blob is also read first by a restricted unpickler
(:func:`check_state`) that builds only the engine's own classes, numpy arrays and plain builtins,
so a leaked key is not code execution.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import pickle
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from detectors.correlation import Correlator
from detectors.engine import Engine
from schemas.errors import ConfigError, SpyglassError
from streams.sinks.base import Store
from streams.sinks.clickhouse import sql_string

log = logging.getLogger("spyglass.checkpoints")


class CheckpointError(SpyglassError):
    """A checkpoint was found but cannot be trusted or read."""


@dataclass
class Checkpoint:
    topic: str
    partition: int
    offset: int
    engine: Engine | Correlator  # a correlator for a partition of the risk-evidence topic
    written_at: datetime
    mark: Mark | None = None  # the last record it covers (None: a checkpoint written before marks)
    # when the snapshot was taken (None: a checkpoint written before this was recorded); the save can come much
    # later (it waits for the writes the snapshot covers, a whole store outage at worst)
    taken_at: datetime | None = None


class Mark(NamedTuple):
    """A record a checkpoint covers, by offset and the SHA-256 of its key and value: a restore compares it with
    the record the log holds at that offset, so a deleted and recreated topic is told from the one it saw."""

    offset: int
    sha256: str

    @classmethod
    def of(cls, offset: int, key: bytes | None, value: bytes | None) -> Mark:
        h = hashlib.sha256()
        for part in (key, value):
            h.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
        return cls(offset, h.hexdigest())


_FRAME = b"SGCP\x01"  # a framed state: the meta (JSON: mark, time taken) then the engine's state; or the bare pickle


def _framed(state: bytes, mark: Mark | None, taken_at: datetime | None = None) -> bytes:
    if mark is None and taken_at is None:
        return state
    meta: dict[str, Any] = {} if mark is None else {"offset": mark.offset, "sha256": mark.sha256}
    if taken_at is not None:
        meta["taken_at"] = taken_at.timestamp()
    raw = json.dumps(meta).encode()
    return _FRAME + len(raw).to_bytes(4, "big") + raw + state


def _unframed(data: bytes) -> tuple[bytes, Mark | None, datetime | None]:
    if not data.startswith(_FRAME):
        return data, None, None
    n = int.from_bytes(data[len(_FRAME):len(_FRAME) + 4], "big")
    start = len(_FRAME) + 4
    meta = json.loads(data[start:start + n])
    mark = Mark(int(meta["offset"]), str(meta["sha256"])) if "offset" in meta else None
    taken_at = datetime.fromtimestamp(float(meta["taken_at"]), UTC) if "taken_at" in meta else None
    return data[start + n:], mark, taken_at


MIN_KEY_BYTES = 32  # an HMAC-SHA256 key shorter than its output is weaker than the signature


def checkpoint_key(secret: str | None, stack_dir: Path, *, server: bool = False) -> bytes:
    """The signing key: the configured secret, else (embedded store only) one generated once in the stack dir.

    A server's workers usually run on several hosts, which must share the key (a key of each host's own would
    make every failover start cold), so there it is required. A key shorter than :data:`MIN_KEY_BYTES` is refused.
    """
    if secret:
        key = secret.encode("utf-8")
    elif server:
        raise ConfigError("SPYGLASS_CHECKPOINT_KEY is required when the store is a ClickHouse server (every worker "
                          f"of the group needs the same key, at least {MIN_KEY_BYTES} bytes): e.g. "
                          "`openssl rand -hex 32`")
    else:
        key = _generated_key(stack_dir / "checkpoint.key")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"SPYGLASS_CHECKPOINT_KEY is {len(key)} bytes; at least {MIN_KEY_BYTES} are required "
                          "(e.g. `openssl rand -hex 32`)")
    return key


def _generated_key(path: Path) -> bytes:
    """The key in ``path``, created whole if absent: written to a private (0600) temporary file, synced and
    renamed into place, so no reader ever sees it empty or partial, and two workers racing keep one key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile: theirs is kept
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path.read_text().strip().encode("utf-8")


# globals a checkpoint may name besides the engine's own classes: numpy's array and scalar pickles, and
# plain builtins and containers
_ALLOWED_GLOBALS = frozenset({
    *((mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct",
                                                                                               "scalar")),
    *((mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    *(("builtins", name) for name in ("set", "frozenset", "dict", "list", "tuple", "bytearray", "bytes", "int",
                                      "float", "complex", "str", "bool", "slice", "range")),
    *(("collections", name) for name in ("OrderedDict", "defaultdict", "deque", "Counter")),
})
_OWN_PACKAGES = ("detectors", "schemas")


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.split(".")[0] in _OWN_PACKAGES:
            found = super().find_class(module, name)
            # a class defined in the engine's packages (not one they import, and no function)
            if isinstance(found, type) and found.__module__.split(".")[0] in _OWN_PACKAGES:
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an engine state")


def check_state(state: bytes) -> None:
    """Raise :class:`CheckpointError` unless ``state`` unpickles into nothing but the engine's own classes,
    numpy arrays and builtins (it is read once that way, building nothing else, before it is restored)."""
    try:
        _StateUnpickler(io.BytesIO(state)).load()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the blob is refused
        raise CheckpointError(f"not an engine state ({exc})") from None


class CheckpointStore:
    """Reads and writes the ``engine_checkpoints`` table of a store."""

    def __init__(self, store: Store, group_id: str, key: bytes, worker: str = "") -> None:
        self.store = store
        self.group_id = group_id
        self._key = key
        self.worker = worker

    def _digest(self, topic: str, partition: int, offset: int, blob: bytes) -> str:
        msg = f"{self.group_id}\x1f{topic}\x1f{partition}\x1f{offset}\x1f".encode() + blob
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def save(self, topic: str, partition: int, offset: int, engine: Engine, mark: Mark | None = None) -> int:
        """Store the engine state reflecting every record below ``offset``; returns its size in bytes."""
        return self.save_state(topic, partition, offset, engine.state(), engine.entities(), mark)

    def save_state(self, topic: str, partition: int, offset: int, state: bytes, entities: int,
                   mark: Mark | None = None) -> int:
        """Store a snapshot ``Engine.state()`` taken when the engine had seen every record below ``offset``."""
        return self.save_states([(topic, partition, offset, state, entities)], [mark])[0]

    def save_states(self, snaps: list[tuple[str, int, int, bytes, int]],
                    marks: list[Mark | None] | None = None, taken_at: list[datetime | None] | None = None,
                    epochs: list[int] | None = None) -> list[int]:
        """Store several (topic, partition, offset, state, entities) snapshots in one insert (each insert
        costs the server a new part); returns each blob's size in bytes.

        ``marks[i]``: the last record snapshot i covers (:class:`Mark`), signed with it, so a restore can tell
        that the partition's log still holds that record at that offset. ``taken_at[i]``: when snapshot i was
        taken (a restore scans the alerts topic from then, see ``Partitions.get``), signed with it too.
        ``epochs[i]``: the owner epoch snapshot i is written under (:mod:`streams.fencing`); a restore takes the
        highest epoch first (not signed: it ranks checkpoints, it is not one's content)."""
        cols: dict[str, list] = {k: [] for k in ("group_id", "topic", "partition", "offset", "state", "digest",
                                                 "entities", "bytes", "worker", "written_at", "epoch")}
        now = datetime.now(UTC).replace(microsecond=0)
        for i, (topic, partition, offset, state, entities) in enumerate(snaps):
            mark = marks[i] if marks is not None else None
            blob = zlib.compress(_framed(state, mark, taken_at[i] if taken_at is not None else None), 1)
            for k, v in (("group_id", self.group_id), ("topic", topic), ("partition", partition),
                         ("offset", offset), ("state", base64.b64encode(blob).decode("ascii")),
                         ("digest", self._digest(topic, partition, offset, blob)), ("entities", entities),
                         ("bytes", len(blob)), ("worker", self.worker), ("written_at", now),
                         ("epoch", epochs[i] if epochs is not None else 0)):
                cols[k].append(v)
        if snaps:
            self.store.insert("engine_checkpoints", cols)
        return cols["bytes"]

    def load(self, topic: str, partition: int, restore: Callable[[bytes], Any] = Engine.from_state, *,
             at_most: int | None = None) -> Checkpoint | None:
        """The partition's newest checkpoint (of those at offset ``at_most`` or below, if given), or None.
        Raises CheckpointError if it fails its check.

        ``restore`` turns the state back into its object (``Correlator.from_state`` for risk evidence)."""
        below = "" if at_most is None else f" AND offset <= {int(at_most)}"
        # the highest owner epoch's (an older owner's late checkpoint never shadows it: streams.fencing), then
        # the newest written (the highest offset of those written in the same second): after a topic was
        # recreated, the new log's checkpoints, not the old log's at higher offsets
        rank = "(epoch, written_at, offset)"
        rows = self.store.query(
            f"SELECT argMax(offset, {rank}), argMax(state, {rank}), "  # noqa: S608
            f"argMax(digest, {rank}), count(), toUnixTimestamp(argMax(written_at, {rank})) "
            f"FROM {self.store.database}.engine_checkpoints WHERE group_id = {sql_string(self.group_id)} "
            f"AND topic = {sql_string(topic)} AND partition = {int(partition)}{below}"
        )
        if not rows or int(rows[0][3]) == 0:
            return None
        offset, state, digest = int(rows[0][0]), rows[0][1], rows[0][2]
        try:
            blob = base64.b64decode(state, validate=True)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {topic}[{partition}]@{offset}: not base64 ({exc})") from None
        if not hmac.compare_digest(self._digest(topic, partition, offset, blob), str(digest)):
            raise CheckpointError(f"checkpoint {topic}[{partition}]@{offset}: signature check failed; refusing it")
        try:
            state, mark, snapshot_taken_at = _unframed(zlib.decompress(blob))
        except (zlib.error, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {topic}[{partition}]@{offset}: unreadable ({exc})") from None
        try:
            check_state(state)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {topic}[{partition}]@{offset}: {exc}; refusing it") from None
        try:
            engine = restore(state)
        except Exception as exc:  # a signed blob that does not load: a version change, say
            raise CheckpointError(f"checkpoint {topic}[{partition}]@{offset}: cannot load ({exc})") from None
        return Checkpoint(topic, partition, offset, engine, datetime.fromtimestamp(int(rows[0][4]), UTC), mark,
                          snapshot_taken_at)

    def newest(self, topic: str, partition: int) -> tuple[int, datetime] | None:
        """(offset, written_at) of the partition's checkpoint with the highest offset, or None: nothing is read
        or trusted but where it stands (see ``Partitions.get``: a checkpoint past the log's end)."""
        rows = self.store.query(
            "SELECT max(offset), toUnixTimestamp(argMax(written_at, offset)), count() "  # noqa: S608
            f"FROM {self.store.database}.engine_checkpoints WHERE group_id = {sql_string(self.group_id)} "
            f"AND topic = {sql_string(topic)} AND partition = {int(partition)}"
        )
        if not rows or int(rows[0][2]) == 0:
            return None
        return int(rows[0][0]), datetime.fromtimestamp(int(rows[0][1]), UTC)
