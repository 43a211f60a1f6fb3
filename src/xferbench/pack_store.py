"""Append-only pack files of content-addressed vectors: the bottleneck cache's storage.

One namespace folder holds ``packs/``. Every writer (one cache object in one process) appends
to a pack of its own, named ``<host>-<pid>-<random>.pack``, so no two writers ever share a file,
on one machine or across nodes on a shared filesystem, and no lock is needed to write. When the
writer closes, it writes that pack's index, ``<same name>.idx``, atomically. Readers merge the
indexes of all packs into one sorted table in memory; a pack without an index (its writer is
running or was killed) is scanned record by record instead: the index can always be rebuilt.

A pack starts with ``PACK_MAGIC``; each record is framed with its length and a checksum::

    "XFR1" | u32 body length | body: sha256 key (32 bytes), u32 width, u32 unix time, float32[width] | u32 crc32

The crc32 covers the length and the body. A record cut short by a crash (a torn tail) fails
its framing and is dropped; a damaged one fails its checksum. Every record is checked on read,
including that it holds the key asked for. ``time`` is when the entry was written or, after a
compaction, last used (see ``usage/`` and :func:`compact`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACK_MAGIC = b"XFBPACK1"
RECORD_MAGIC = b"XFR1"
#: magic, body length, key, width, time
RECORD_HEADER = struct.Struct("<4sI32sII")
_CRC = struct.Struct("<I")
#: the part of the header the checksum covers starts after the magic
_CRC_FROM = 4
INDEX_MAGIC = b"XFBIDX1\0"
_INDEX_HEADER = struct.Struct("<8sQQ")  # magic, pack bytes covered, record count
INDEX_DTYPE = np.dtype([("key", "V32"), ("offset", "<u8"), ("dim", "<u4"), ("time", "<u4")])
USAGE_MAGIC = b"XFBUSE1\0"
_USAGE_HEADER = struct.Struct("<8sQ")  # magic, unix time of use
#: bytes of a key that a usage log keeps (128 bits: collisions are not a concern)
USAGE_KEY_BYTES = 16
PACKS = "packs"
USAGE = "usage"
#: an entry written less than this long ago is not logged as used (like relatime): it is recent anyway
USAGE_GRANULARITY = 86400
#: a pack without an index that has not changed for this long has no live writer (it was killed)
STALE_SECONDS = 3600
#: reads of neighbouring records are merged up to this many bytes
_READ_SPAN = 4 << 20


def record_size(dim: int) -> int:
    return RECORD_HEADER.size + 4 * dim + _CRC.size


def encode_record(key: bytes, vector: np.ndarray, when: int) -> bytes:
    payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    dim = len(payload) // 4
    header = RECORD_HEADER.pack(RECORD_MAGIC, 32 + 8 + len(payload), key, dim, when)
    crc = zlib.crc32(payload, zlib.crc32(header[_CRC_FROM:]))
    return header + payload + _CRC.pack(crc)


def decode_record(blob: bytes | memoryview, key: bytes | None = None) -> np.ndarray | None:
    """The record's vector, or None when its framing or checksum is wrong or it holds another key."""
    vector, _ = check_record(blob, key)
    return vector


def check_record(blob: bytes | memoryview, key: bytes | None = None) -> tuple[np.ndarray | None, bool]:
    """``(vector, damaged)``: a sound record of another key is not damaged (keys share index prefixes)."""
    if len(blob) < RECORD_HEADER.size + _CRC.size:
        return None, True
    magic, length, stored_key, dim, _ = RECORD_HEADER.unpack_from(blob)
    if magic != RECORD_MAGIC or length != 40 + 4 * dim or len(blob) != record_size(dim):
        return None, True
    view = memoryview(blob)
    end = RECORD_HEADER.size + 4 * dim
    if zlib.crc32(view[_CRC_FROM:end]) != _CRC.unpack_from(blob, end)[0]:
        return None, True
    if key is not None and stored_key != key:
        return None, False
    return np.frombuffer(view[RECORD_HEADER.size:end], dtype="<f4"), False


def writer_name() -> str:
    """``<host>-<pid>-<random>``: unique per writer across the nodes that share a filesystem."""
    host = "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


# -- scanning --------------------------------------------------------------------------------
@dataclass
class PackScan:
    """What a pass over one pack found."""

    path: Path
    entries: np.ndarray  # INDEX_DTYPE, the records whose framing holds (and checksum, with check=True)
    size: int = 0
    corrupt: int = 0  # framed records whose checksum failed (only with check=True)
    #: bytes after the last whole record: a torn tail (a killed writer) or a record still being written
    tail_bytes: int = 0
    bad_header: bool = False


def scan_pack(path: Path, start: int = 0, check: bool = False) -> PackScan:
    """Records of ``path`` from byte ``start`` (a record boundary; 0: the beginning).

    ``check=False`` reads only the headers (enough to index); ``check=True`` reads every record
    and verifies its checksum. The scan stops at the first record whose framing does not hold.
    """
    rows: list[tuple[bytes, int, int, int]] = []
    result = PackScan(path, np.empty(0, INDEX_DTYPE))
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        result.size = size
        if start == 0:
            if fh.read(len(PACK_MAGIC)) != PACK_MAGIC:
                result.bad_header = True
                result.tail_bytes = size
                return result
            start = len(PACK_MAGIC)
        offset = start
        fh.seek(offset)
        while offset < size:
            header = fh.read(RECORD_HEADER.size)
            if len(header) < RECORD_HEADER.size:
                break
            magic, length, key, dim, when = RECORD_HEADER.unpack(header)
            total = record_size(dim)
            if magic != RECORD_MAGIC or length != 40 + 4 * dim or offset + total > size:
                break
            if check:
                rest = fh.read(total - RECORD_HEADER.size)
                if decode_record(header + rest) is None:
                    result.corrupt += 1
                    offset += total
                    continue
            else:
                fh.seek(offset + total)
            rows.append((key, offset, dim, when))
            offset += total
        result.tail_bytes = size - offset
    result.entries = np.array(rows, dtype=INDEX_DTYPE)
    return result


def read_index(path: Path) -> tuple[int, np.ndarray] | None:
    """``(pack bytes covered, entries)`` of an index file, or None when it is absent or damaged."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    if len(blob) < _INDEX_HEADER.size + _CRC.size:
        return None
    magic, covered, count = _INDEX_HEADER.unpack_from(blob)
    body_end = _INDEX_HEADER.size + count * INDEX_DTYPE.itemsize
    if magic != INDEX_MAGIC or len(blob) != body_end + _CRC.size:
        return None
    if zlib.crc32(memoryview(blob)[:body_end]) != _CRC.unpack_from(blob, body_end)[0]:
        return None
    return covered, np.frombuffer(blob, dtype=INDEX_DTYPE, count=count, offset=_INDEX_HEADER.size).copy()


def write_index(path: Path, covered: int, entries: np.ndarray) -> None:
    from xferbench.atomic import atomic_write_bytes

    body = _INDEX_HEADER.pack(INDEX_MAGIC, covered, len(entries)) + np.ascontiguousarray(entries, INDEX_DTYPE).tobytes()
    atomic_write_bytes(path, body + _CRC.pack(zlib.crc32(body)))


def pack_entries(path: Path) -> np.ndarray:
    """The index of one pack: its index file where it covers the pack, plus a scan of what follows."""
    index = read_index(path.with_suffix(".idx"))
    if index is not None:
        covered, entries = index
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return np.empty(0, INDEX_DTYPE)
        if covered >= size:  # shorter than indexed: the records past the end fail their check on read
            return entries
        return np.concatenate([entries, scan_pack(path, start=covered).entries])
    return scan_pack(path).entries


def list_packs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in (folder / PACKS).iterdir() if p.suffix == ".pack" and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def key_prefix(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each 32-byte key as a big-endian uint64 (sorts like the keys)."""
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(-1, 32)
    return np.ascontiguousarray(raw[:, :8]).view(">u8").ravel().astype(np.uint64)


# -- the store -------------------------------------------------------------------------------
@dataclass
class _Table:
    """All packs' entries, sorted by key prefix."""

    prefix: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    pack: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))
    offset: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    dim: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))
    time: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))


class PackStore:
    """The packs of one namespace folder: look up, read and append vectors by 32-byte key."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.packs: list[Path] = []
        self._fds: dict[int, int] = {}
        self._table = _Table()
        self._own: dict[bytes, tuple[int, int, int]] = {}  # appended by this store: key -> (pack, offset, dim)
        self._writer: _PackWriter | None = None
        self._used: list[bytes] = []
        self._buffer = bytearray()
        self.load()

    # reading
    def load(self) -> None:
        """(Re)read the index of every pack present now."""
        packs = list_packs(self.folder)
        own = self._writer.path if self._writer is not None and self._writer.fd is not None else None
        self.packs = [p for p in packs if p != own] + ([own] if own is not None else [])
        parts, numbers = [], []
        for number, path in enumerate(self.packs):
            if path == own:
                continue
            try:
                entries = pack_entries(path)
            except OSError:
                continue
            parts.append(entries)
            numbers.append(np.full(len(entries), number, np.uint32))
        self._close_fds()
        if own is not None:
            assert self._writer is not None
            self._writer.number = len(self.packs) - 1
            self._own = {k: (self._writer.number, o, d) for k, (_, o, d) in self._own.items()}
        if not parts:
            self._table = _Table()
            return
        entries = np.concatenate(parts)
        pack = np.concatenate(numbers)
        prefix = key_prefix(entries["key"])
        order = np.argsort(prefix, kind="stable")
        self._table = _Table(prefix[order], pack[order], entries["offset"][order].astype(np.uint64),
                             entries["dim"][order].astype(np.uint32), entries["time"][order].astype(np.uint32))

    def __len__(self) -> int:
        return len(self._table.prefix) + len(self._own)

    def _fd(self, number: int) -> int:
        fd = self._fds.get(number)
        if fd is None:
            fd = os.open(self.packs[number], os.O_RDONLY)
            self._fds[number] = fd
        return fd

    def _read(self, number: int, offset: int, length: int) -> bytes:
        return os.pread(self._fd(number), length, offset)

    def _read_into_buffer(self, number: int, offset: int, length: int) -> memoryview:
        """``length`` bytes at ``offset`` (fewer at the end of the pack) in a buffer reused across calls:
        a fresh multi-megabyte ``bytes`` per read costs more in page faults than the copy itself."""
        if len(self._buffer) < length:
            self._buffer = bytearray(length)
        view = memoryview(self._buffer)[:length]
        got = os.preadv(self._fd(number), [view], offset)
        return view[:got]

    def _candidates(self, key: bytes) -> Iterator[tuple[int, int, int, int]]:
        """``(pack, offset, dim, time)`` of every record that may hold ``key``."""
        own = self._own.get(key)
        if own is not None:
            yield own[0], own[1], own[2], int(time.time())
        table = self._table
        prefix = np.uint64(int.from_bytes(key[:8], "big"))
        i = int(np.searchsorted(table.prefix, prefix))
        while i < len(table.prefix) and table.prefix[i] == prefix:
            yield int(table.pack[i]), int(table.offset[i]), int(table.dim[i]), int(table.time[i])
            i += 1

    def get(self, key: bytes, dim: int) -> tuple[np.ndarray | None, bool]:
        """``(vector, corrupt)``: the first valid record of ``key``; corrupt when records exist but none is valid."""
        damaged = False
        for number, offset, width, when in self._candidates(key):
            try:
                blob = self._read(number, offset, record_size(width))
            except OSError:  # the pack went away (a compaction): a miss
                continue
            vector, bad = check_record(blob, key)
            if vector is None or width != dim:
                damaged = damaged or bad or vector is not None
                continue
            self._note_use(key, when)
            return vector.copy(), False
        return None, damaged

    def contains(self, key: bytes, dim: int) -> bool:
        """Whether a sound record of ``key`` (of width ``dim``) is in this store's view (what :meth:`load` read,
        plus this store's own appends); a use is not logged."""
        for number, offset, width, _ in self._candidates(key):
            if width != dim:
                continue
            try:
                blob = self._read(number, offset, record_size(width))
            except OSError:
                continue
            if check_record(blob, key)[0] is not None:
                return True
        return False

    def get_many(self, keys: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(vectors [n, dim], found [n], corrupt count)`` for many keys, reading neighbouring records together."""
        n = len(keys)
        out = np.zeros((n, dim), np.float32)
        found = np.zeros(n, bool)
        corrupt = 0
        if not n:
            return out, found, 0
        table = self._table
        query = key_prefix(np.frombuffer(b"".join(keys), dtype="V32"))
        pos = np.searchsorted(table.prefix, query)
        pos_ok = np.minimum(pos, max(len(table.prefix) - 1, 0))
        hit = (pos < len(table.prefix)) & (table.prefix[pos_ok] == query) if len(table.prefix) else np.zeros(n, bool)
        slow: list[int] = [i for i in range(n) if not hit[i]]
        rows = np.flatnonzero(hit)
        if len(rows):
            where = pos[rows]
            order = np.lexsort((table.offset[where], table.pack[where]))
            where = where[order]
            rows_l = rows[order].tolist()
            packs_l, offsets_l = table.pack[where].tolist(), table.offset[where].tolist()
            dims_l, times_l = table.dim[where].tolist(), table.time[where].tolist()
            cutoff = time.time() - USAGE_GRANULARITY
            count, start = len(rows_l), 0
            while start < count:
                # one read for a run of records that lie close together in one pack
                number, begin = packs_l[start], offsets_l[start]
                end = begin + record_size(dims_l[start])
                stop = start + 1
                while stop < count and packs_l[stop] == number and offsets_l[stop] <= end:
                    record_end = offsets_l[stop] + record_size(dims_l[stop])
                    if record_end - begin > _READ_SPAN:
                        break
                    end = max(end, record_end)
                    stop += 1
                try:
                    blob = self._read_into_buffer(number, begin, end - begin)
                except OSError:
                    blob = memoryview(b"")
                if self._check_run(blob, keys, dim, rows_l[start:stop], offsets_l[start:stop], out, found):
                    for j in range(start, stop):
                        if times_l[j] < cutoff:
                            self._used.append(keys[rows_l[j]][:USAGE_KEY_BYTES])
                    start = stop
                    continue
                for j in range(start, stop):
                    i, rel, width = rows_l[j], offsets_l[j] - begin, dims_l[j]
                    vector, _ = check_record(blob[rel:rel + record_size(width)], keys[i])
                    if vector is None or width != dim:
                        slow.append(i)  # maybe another record of the key is valid
                        continue
                    out[i] = vector
                    found[i] = True
                    if times_l[j] < cutoff:
                        self._used.append(keys[i][:USAGE_KEY_BYTES])
                start = stop
        for i in slow:
            vector, damaged = self.get(keys[i], dim)
            if vector is not None:
                out[i], found[i] = vector, True
            corrupt += damaged
        return out, found, corrupt

    @staticmethod
    def _check_run(blob: memoryview, keys: list[bytes], dim: int, rows: list[int], offsets: list[int],
                   out: np.ndarray, found: np.ndarray) -> bool:
        """Check and copy a run of back-to-back records of width ``dim`` at once; False: not such a run."""
        size = record_size(dim)
        count = len(rows)
        if count < 2 or offsets[-1] - offsets[0] != (count - 1) * size or len(blob) < count * size:
            return False
        records = np.frombuffer(blob, dtype=np.uint8, count=count * size).reshape(count, size)
        fields = np.ascontiguousarray(records[:, :RECORD_HEADER.size])
        header = fields.view(np.dtype([("magic", "S4"), ("length", "<u4"), ("key", "V32"), ("dim", "<u4"),
                                       ("time", "<u4")])).ravel()
        wanted = np.frombuffer(b"".join(keys[i] for i in rows), dtype="V32")
        stored_crc = np.ascontiguousarray(records[:, size - _CRC.size:]).view("<u4").ravel()
        crc = np.fromiter((zlib.crc32(blob[j * size + _CRC_FROM:(j + 1) * size - _CRC.size]) for j in range(count)),
                          dtype=np.uint32, count=count)
        ok = ((header["magic"] == RECORD_MAGIC) & (header["length"] == 40 + 4 * dim) & (header["dim"] == dim)
              & (header["key"] == wanted) & (crc == stored_crc))
        if not ok.all():
            return False  # record by record, to tell damage from another key
        index: slice | np.ndarray = np.asarray(rows)
        if rows[-1] - rows[0] == count - 1 and all(b - a == 1 for a, b in zip(rows, rows[1:], strict=False)):
            index = slice(rows[0], rows[-1] + 1)
        out[index] = records[:, RECORD_HEADER.size:size - _CRC.size].view("<f4")
        found[index] = True
        return True

    def _note_use(self, key: bytes, written: int) -> None:
        if written < time.time() - USAGE_GRANULARITY:
            self._used.append(key[:USAGE_KEY_BYTES])

    # writing
    def append(self, key: bytes, vector: np.ndarray) -> None:
        """Append one record to this store's own pack (created on first use). Raises OSError."""
        if self._writer is None:
            self._writer = _PackWriter(self.folder / PACKS / f"{writer_name()}.pack", len(self.packs))
            self.packs.append(self._writer.path)
        offset, dim = self._writer.append(key, vector)
        self._own[key] = (self._writer.number, offset, dim)

    def close(self) -> None:
        """Finish this store's pack (fsync, index) and log the old entries it used; errors are swallowed."""
        if self._writer is not None:
            self._writer.close()
        self._close_fds()
        if self._used:
            used, self._used = self._used, []
            with contextlib.suppress(OSError):
                write_usage(self.folder, used)

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class _PackWriter:
    """The one writer of one pack file."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        self.fd: int | None = None
        self.size = 0
        self.entries: list[tuple[bytes, int, int, int]] = []

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        try:
            _write_all(fd, PACK_MAGIC)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self.fd, self.size = fd, len(PACK_MAGIC)

    def append(self, key: bytes, vector: np.ndarray) -> tuple[int, int]:
        if self.fd is None:
            self._open()
        assert self.fd is not None
        when = int(time.time())
        blob = encode_record(key, vector, when)
        try:
            _write_all(self.fd, blob)
        except BaseException:
            # A full disk wrote part of the record: cut it off, so the pack ends on a whole record.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        offset = self.size
        self.size += len(blob)
        dim = (len(blob) - record_size(0)) // 4
        self.entries.append((key, offset, dim, when))
        return offset, dim

    def close(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        # The index only saves readers a scan: a full disk may refuse it.
        with contextlib.suppress(OSError):
            write_index(self.path.with_suffix(".idx"), self.size, np.array(self.entries, dtype=INDEX_DTYPE))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- usage logs and compaction ----------------------------------------------------------------
def write_usage(folder: Path, keys: Iterable[bytes]) -> None:
    from xferbench.atomic import atomic_write_bytes

    body = b"".join(keys)
    atomic_write_bytes(folder / USAGE / f"{writer_name()}.used",
                       _USAGE_HEADER.pack(USAGE_MAGIC, int(time.time())) + body)


def read_usage(folder: Path) -> tuple[dict[bytes, int], list[Path]]:
    """Last use per key prefix from the usage logs, and the logs read."""
    last: dict[bytes, int] = {}
    logs: list[Path] = []
    try:
        paths = sorted(p for p in (folder / USAGE).iterdir() if p.suffix == ".used" and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return last, logs
    for path in paths:
        try:
            blob = path.read_bytes()
        except OSError:
            continue
        logs.append(path)
        if len(blob) < _USAGE_HEADER.size or blob[:8] != USAGE_MAGIC:
            continue
        (_, when) = _USAGE_HEADER.unpack_from(blob)
        for start in range(_USAGE_HEADER.size, len(blob) - USAGE_KEY_BYTES + 1, USAGE_KEY_BYTES):
            prefix = blob[start:start + USAGE_KEY_BYTES]
            if last.get(prefix, 0) < when:
                last[prefix] = when
    return last, logs


def pack_is_idle(path: Path, now: float) -> bool:
    """Whether no writer appends to ``path`` any more: it has an index covering it, or it is stale."""
    index = read_index(path.with_suffix(".idx"))
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if index is not None and index[0] == stat.st_size:
        return True
    return now - stat.st_mtime > STALE_SECONDS


@dataclass
class Compaction:
    kept: int = 0
    dropped: int = 0
    corrupt: int = 0
    packs_before: int = 0
    packs_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def compact(folder: Path, keep: Callable[[bytes, int], bool] | None = None, *,
            last_use: dict[bytes, int] | None = None, only: Iterable[Path] | None = None) -> Compaction:
    """Rewrite the idle packs of ``folder`` into one new pack, without the records ``keep`` refuses.

    Corrupt records, torn tails and duplicate keys are left out too. A record's time becomes its
    last use (``last_use``, by key prefix). The new pack and its index are complete on disk before
    the old packs are removed, so a crash at any point loses nothing (at worst an entry is in two
    packs for a while). Packs a writer may still be appending to are not touched.
    """
    now = time.time()
    candidates = list(only) if only is not None else list_packs(folder)
    packs = [p for p in candidates if pack_is_idle(p, now)]
    result = Compaction(packs_before=len(packs))
    if not packs:
        return result
    target = folder / PACKS / f"compact-{writer_name()}.pack"
    staging = target.with_name(".tmp-" + target.name)
    seen: set[bytes] = set()
    rows: list[tuple[bytes, int, int, int]] = []
    try:
        with open(staging, "wb") as out:
            out.write(PACK_MAGIC)
            position = len(PACK_MAGIC)
            for path in packs:
                result.bytes_before += path.stat().st_size
                with open(path, "rb") as fh:
                    scan = scan_pack(path, check=True)
                    result.corrupt += scan.corrupt
                    for key, offset, dim, when in scan.entries.tolist():
                        key = bytes(key)
                        fh.seek(offset)
                        vector = decode_record(fh.read(record_size(dim)), key)
                        if vector is None:
                            result.corrupt += 1
                            continue
                        used = max(when, (last_use or {}).get(key[:USAGE_KEY_BYTES], 0))
                        if key in seen:
                            continue
                        if keep is not None and not keep(key, used):
                            result.dropped += 1
                            continue
                        seen.add(key)
                        blob = encode_record(key, vector, used)
                        out.write(blob)
                        rows.append((key, position, dim, used))
                        position += len(blob)
            out.flush()
            os.fsync(out.fileno())
        result.kept = len(rows)
        if rows:
            write_index(target.with_suffix(".idx"), position, np.array(rows, dtype=INDEX_DTYPE))
            os.replace(staging, target)
            result.bytes_after = position
            result.packs_after = 1
        else:
            staging.unlink()
        from xferbench.atomic import fsync_dir

        fsync_dir(folder / PACKS)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
    for path in packs:
        for old in (path, path.with_suffix(".idx")):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return result
