"""AEDAT readers and writers for DVS128 recordings.

Two containers, one event layout:

- AEDAT 3.1 (cAER; DVS128 Gesture): ``#`` header lines closed by ``#!END-HEADER``, then packets.
  A packet is a 28-byte little-endian header (int16 eventType, int16 eventSource, int32 eventSize,
  eventTSOffset, eventTSOverflow, eventCapacity, eventNumber, eventValid) and ``eventCapacity``
  events of ``eventSize`` bytes. Polarity events (eventType 1) are a uint32 data word (bit 1
  polarity, bits 2-16 y, bits 17-31 x) and a 32-bit timestamp; ``t = eventTSOverflow << 31 | ts``.
- AEDAT 2.0 (jAER; CIFAR10-DVS): ``#`` header lines, then big-endian (uint32 address, uint32
  timestamp) pairs. DVS128 address: bit 0 polarity, bits 1-7 x, bits 8-14 y, bit 15 external.

Events are numpy structured arrays of :data:`EVENT_DTYPE` (fields ``t`` int64 µs, ``x``/``y``
int16, ``p`` uint8 in {0, 1}), in file order, as tonic's transforms expect.

The readers reproduce SpikingJelly's coordinates and polarity bit for bit (``load_aedat_v3`` for
3.1, the CIFAR10-DVS reader for 2.0) but scan with numpy instead of a per-event Python loop, and
reject what SpikingJelly silently misreads: truncated packets, a polarity eventSize other than 8,
a missing ``#!END-HEADER``, and recordings from other sensors. Every rejection is a ``ValueError``
naming the file and the byte offset.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..checks import check_int

__all__ = [
    "EVENT_DTYPE",
    "DVS128_SENSOR_SIZE",
    "read_aedat31",
    "read_aedat2",
    "write_aedat31",
    "write_aedat2",
]

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1")])
DVS128_SENSOR_SIZE = (128, 128, 2)
"""The DVS128's sensor as tonic states it: (width W, height H, polarities P); events have
``0 <= x < W``, ``0 <= y < H``. The one home of this size: the datasets' ``sensor_size`` reads it."""
_WIDTH, _HEIGHT = DVS128_SENSOR_SIZE[:2]

_PACKET_HEADER = struct.Struct("<hhiiIiii")  # SpikingJelly reads the overflow as unsigned
_POLARITY_EVENT = 1
_POLARITY_EVENT_SIZE = 8
_POLARITY_TS_OFFSET = 4
_POLARITY_RECORD = np.dtype([("data", "<u4"), ("ts", "<u4")])
_AEDAT2_RECORD = np.dtype([("addr", ">u4"), ("ts", ">u4")])
_DECODE_CHUNK = 1 << 16  # events per decoding step: keeps the temporaries in cache


def _empty_events() -> np.ndarray:
    return np.zeros(0, dtype=EVENT_DTYPE)


def _skip_header(buf: bytes, path: Path, end_marker: bytes | None) -> int:
    """Return the byte offset where the data starts after the ``#`` header lines.

    With ``end_marker`` the header must be closed by that line (AEDAT 3.1); without it the header
    ends at the first line that does not start with ``#`` (AEDAT 2.0).
    """
    pos = 0
    while pos < len(buf) and buf[pos] == ord("#"):
        newline = buf.find(b"\n", pos)
        if newline < 0:
            if end_marker is not None:
                break
            return len(buf)  # a header line running to the end of the file: no events
        line = buf[pos:newline].rstrip(b"\r")
        pos = newline + 1
        if end_marker is not None and line == end_marker:
            return pos
    if end_marker is not None:
        raise ValueError(
            f"{path}: no {end_marker.decode()} line closes the AEDAT 3.1 header "
            f"(header lines stop at byte offset {pos})"
        )
    return pos


def _first_line(buf: bytes) -> bytes:
    newline = buf.find(b"\n")
    return (buf if newline < 0 else buf[:newline]).rstrip(b"\r")


def _check_version(buf: bytes, path: Path, expected: bytes, name: str, other: str) -> None:
    """Reject a file whose ``#!AER-DAT`` line names another format version."""
    version = _first_line(buf)
    if version.startswith(b"#!AER-DAT") and not version.startswith(b"#!AER-DAT" + expected):
        raise ValueError(f"{path}: first line {version[:40]!r} at byte offset 0 is not {name} "
                         f"(use {other} for it)")


def read_aedat31(path: str | os.PathLike) -> np.ndarray:
    """Read the polarity events of a DVS128 AEDAT 3.1 file (DVS128 Gesture).

    Returns a structured array of :data:`EVENT_DTYPE`, shape ``[N]``, in file order, with
    ``x = data >> 17 & 0x7FFF``, ``y = data >> 2 & 0x7FFF``, ``p = data >> 1 & 1`` and
    ``t = eventTSOverflow << 31 | ts`` exactly as SpikingJelly's ``load_aedat_v3``. Like it, every
    one of a packet's ``eventCapacity`` events is kept, whatever its valid bit. Non-polarity
    packets are skipped. A header-only file gives 0 events.

    Raises ``ValueError`` (naming the file and byte offset) for a missing ``#!END-HEADER``, a
    packet header or packet body running past the end of the file, a polarity packet whose
    eventSize is not 8 or eventTSOffset not 4, and events outside 128x128 (another sensor).
    """
    path = Path(path)
    buf = path.read_bytes()
    _check_version(buf, path, b"3", "AEDAT 3.x", "read_aedat2 if it is AEDAT 2.0")
    pos = _skip_header(buf, path, b"#!END-HEADER")

    offsets, counts, overflows = [], [], []
    size = len(buf)
    while pos < size:
        if size - pos < _PACKET_HEADER.size:
            raise ValueError(
                f"{path}: truncated packet header at byte offset {pos} "
                f"({size - pos} of {_PACKET_HEADER.size} bytes)"
            )
        e_type, _, e_size, ts_offset, overflow, capacity, _, _ = _PACKET_HEADER.unpack_from(buf, pos)
        if e_size < 0 or capacity < 0:
            raise ValueError(
                f"{path}: packet header at byte offset {pos} has negative "
                f"eventSize {e_size} or eventCapacity {capacity}"
            )
        body = pos + _PACKET_HEADER.size
        end = body + e_size * capacity
        if end > size:
            raise ValueError(
                f"{path}: packet at byte offset {pos} declares {capacity} events of {e_size} "
                f"bytes, running past the end of the file ({size} bytes)"
            )
        if e_type == _POLARITY_EVENT:
            if e_size != _POLARITY_EVENT_SIZE or ts_offset != _POLARITY_TS_OFFSET:
                raise ValueError(
                    f"{path}: polarity packet at byte offset {pos} has eventSize {e_size} and "
                    f"eventTSOffset {ts_offset}; expected {_POLARITY_EVENT_SIZE} and "
                    f"{_POLARITY_TS_OFFSET}"
                )
            if capacity:
                offsets.append(body)
                counts.append(capacity)
                overflows.append(overflow)
        pos = end

    if not counts:
        return _empty_events()
    return _decode_polarity(buf, path, offsets, counts, overflows)


def _decode_polarity(buf: bytes, path: Path, offsets: list, counts: list, overflows: list) -> np.ndarray:
    """Decode polarity packets into events, a cache-sized group of packets at a time."""
    events = np.empty(sum(counts), dtype=EVENT_DTYPE)
    group, group_len, done = [], 0, 0
    for k, (off, n) in enumerate(zip(offsets, counts)):
        group.append(np.frombuffer(buf, "<u4", 2 * n, off))  # plain words: cheap to concatenate
        group_len += n
        if group_len < _DECODE_CHUNK and k + 1 < len(counts):
            continue
        words = group[0] if len(group) == 1 else np.concatenate(group)
        data, timestamps = words[0::2], words[1::2]
        x = (data >> 17) & 0x7FFF
        y = (data >> 2) & 0x7FFF
        outside = np.flatnonzero((x >= _WIDTH) | (y >= _HEIGHT))
        if outside.size:
            i = done + int(outside[0])
            packet = int(np.searchsorted(np.cumsum(counts), i, side="right"))
            offset = offsets[packet] + _POLARITY_EVENT_SIZE * (i - sum(counts[:packet]))
            raise ValueError(
                f"{path}: event at byte offset {offset} has x={int(x[i - done])}, "
                f"y={int(y[i - done])}, outside the DVS128's {_WIDTH}x{_HEIGHT} pixels; this recording "
                f"comes from another sensor"
            )
        chunk = events[done : done + group_len]
        chunk["x"] = x
        chunk["y"] = y
        chunk["p"] = (data >> 1) & 1
        first = k + 1 - len(group)
        group_overflows = overflows[first : k + 1]
        if any(group_overflows):
            chunk["t"] = timestamps.astype(np.int64) | np.repeat(
                np.asarray(group_overflows, dtype=np.int64) << 31, counts[first : k + 1]
            )
        else:
            chunk["t"] = timestamps
        done += group_len
        group, group_len = [], 0
    return events


def read_aedat2(path: str | os.PathLike) -> np.ndarray:
    """Read a DVS128 jAER AEDAT 2.0 file (the CIFAR10-DVS layout).

    Returns a structured array of :data:`EVENT_DTYPE`, shape ``[N]``, in file order, oriented as
    SpikingJelly's CIFAR10-DVS reader: ``x = 127 - addr[14:8]``, ``y = 127 - addr[7:1]``,
    ``p = 1 - addr[0]``. Like it, external events (bit 15) are kept as ordinary events.
    A header-only file gives 0 events.

    Raises ``ValueError`` (naming the file and byte offset) for a trailing partial event, an
    AEDAT 3.x file, and addresses with bits above 15 set (a DAVIS or other non-DVS128 sensor:
    APS/IMU words set bit 31, and 240x180 addresses need more bits).
    """
    path = Path(path)
    buf = path.read_bytes()
    _check_version(buf, path, b"2", "AEDAT 2.0", "read_aedat31 if it is AEDAT 3.1")
    start = _skip_header(buf, path, None)
    n_bytes = len(buf) - start
    if n_bytes % _AEDAT2_RECORD.itemsize:
        tail = start + n_bytes - n_bytes % _AEDAT2_RECORD.itemsize
        raise ValueError(
            f"{path}: truncated event at byte offset {tail} "
            f"({n_bytes % _AEDAT2_RECORD.itemsize} of {_AEDAT2_RECORD.itemsize} bytes)"
        )
    records = np.frombuffer(buf, _AEDAT2_RECORD, offset=start)
    addr = records["addr"]
    foreign = np.flatnonzero(addr >> 16)
    if foreign.size:
        i = int(foreign[0])
        raise ValueError(
            f"{path}: address 0x{int(addr[i]):08x} at byte offset "
            f"{start + _AEDAT2_RECORD.itemsize * i} sets bits above 15; this is not a DVS128 "
            f"recording (DAVIS APS/IMU words set bit 31, 240x180 addresses use bits 12-30)"
        )
    events = np.empty(len(records), dtype=EVENT_DTYPE)
    events["t"] = records["ts"]
    events["x"] = 127 - ((addr >> 8) & 0x7F)
    events["y"] = 127 - ((addr >> 1) & 0x7F)
    events["p"] = 1 - (addr & 1)
    return events


def _as_columns(events) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(events[k]) for k in ("t", "x", "y", "p"))


def _atomic_write(path: Path, chunks: list[bytes], fsync: bool = True) -> None:
    """Write ``chunks`` to ``path`` atomically; a failed write leaves no temporary, and those of
    writers killed earlier are removed (see :mod:`sj_qvm.atomic`)."""
    atomic_write(path, lambda f: f.writelines(chunks), fsync=fsync)


def write_aedat31(
    path: str | os.PathLike,
    events,
    packet_events: int = 4096,
    header_lines: tuple[str, ...] = ("#Format: RAW", "#Source 1: DVS128"),
    special_packets: bool = False,
) -> None:
    """Write events (fields ``t``, ``x``, ``y``, ``p``; ``t >= 0``) as an AEDAT 3.1 file.

    Events go into polarity packets of at most ``packet_events`` events; a packet never spans two
    ``t >> 31`` epochs, so ``eventTSOverflow`` carries the high bits. With ``special_packets`` a
    special-event packet (eventType 0) precedes every polarity packet, as cAER writes timestamp
    resets and sync pulses, so readers must skip it. Coordinates up to 32767 are written as
    given, which lets tests forge recordings from other sensors.
    """
    t, x, y, p = _as_columns(events)
    t = t.astype(np.int64)
    if len(t) and (t.min() < 0 or x.min() < 0 or y.min() < 0 or x.max() > 0x7FFF or y.max() > 0x7FFF):
        raise ValueError("write_aedat31: needs t >= 0 and 0 <= x, y <= 32767")
    check_int(packet_events, "packet_events", minimum=1)
    header = ["#!AER-DAT3.1", *header_lines, "#!END-HEADER"]
    chunks = ["".join(line + "\r\n" for line in header).encode("ascii")]

    records = np.empty(len(t), dtype=_POLARITY_RECORD)
    records["data"] = (
        (x.astype(np.uint32) << 17) | (y.astype(np.uint32) << 2)
        | ((p != 0).astype(np.uint32) << 1) | 1
    )
    records["ts"] = (t & 0x7FFFFFFF).astype(np.uint32)
    epoch = t >> 31
    cuts = np.flatnonzero(np.diff(epoch)) + 1
    starts = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(t)]):
        starts.extend(range(int(lo), int(hi), packet_events))
    bounds = np.r_[starts, len(t)].astype(np.int64) if starts else np.zeros(1, np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        n = int(hi - lo)
        overflow = int(epoch[lo])
        if special_packets:
            special = np.zeros(1, dtype=_POLARITY_RECORD)
            special["data"] = (2 << 1) | 1  # type 2 = external input, valid
            special["ts"] = records["ts"][lo]
            chunks.append(_PACKET_HEADER.pack(0, 1, 8, 4, overflow, 1, 1, 1))
            chunks.append(special.tobytes())
        chunks.append(_PACKET_HEADER.pack(_POLARITY_EVENT, 1, 8, 4, overflow, n, n, n))
        chunks.append(records[lo:hi].tobytes())
    _atomic_write(Path(path), chunks)


def write_aedat2(
    path: str | os.PathLike,
    events,
    header_lines: tuple[str, ...] = (
        "# This is a raw AE data file - do not edit",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
        "# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",
    ),
    fsync: bool = True,
) -> None:
    """Write DVS128 events (``0 <= x, y < 128``, ``0 <= t < 2**32``) as a jAER AEDAT 2.0 file.

    The exact inverse of :func:`read_aedat2`: ``addr = (127 - x) << 8 | (127 - y) << 1 | (1 - p)``.
    ``fsync=False`` leaves flushing the bytes to disk to the caller (a writer of many files can
    flush them all at once).
    """
    t, x, y, p = _as_columns(events)
    if len(t) and (
        t.min() < 0 or t.max() >= 2**32 or min(x.min(), y.min()) < 0
        or x.max() >= _WIDTH or y.max() >= _HEIGHT
    ):
        raise ValueError("write_aedat2: needs 0 <= t < 2**32 and 0 <= x, y < 128")
    header = "".join(line + "\r\n" for line in ("#!AER-DAT2.0", *header_lines))
    records = np.empty(len(t), dtype=_AEDAT2_RECORD)
    records["addr"] = (
        ((127 - x.astype(np.uint32)) << 8) | ((127 - y.astype(np.uint32)) << 1)
        | (p == 0).astype(np.uint32)
    )
    records["ts"] = t.astype(np.uint32)
    _atomic_write(Path(path), [header.encode("ascii"), records.tobytes()], fsync)
