"""Episode recordings: a plain msgpack stream that any language can read.

A recording file (a "shard") is a sequence of msgpack maps, one per record::

    header, step, step, ..., footer, [header, step, ..., footer, ...]

Numpy arrays travel as msgpack ext type ``ARRAY_EXT`` (1) whose payload is the
msgpack array ``[dtype, shape, data]``; nothing else is ever serialized, so a
recording can never run code when it is read.  The full spec, with a decoder
that needs only msgpack and numpy, is in ``docs/recording-format.md``.

Why a stream of independent records: a writer that crashes (or a file copied
while it is being written) leaves a prefix of complete records, and the reader
recovers every complete step instead of losing the episode.

Why the reader is defensive: recordings get shared, so the decoder treats
bytes as hostile.  Every length is bounded (``MAX_RECORD_BYTES``,
``MAX_CONTAINER_LEN``), only allowlisted dtypes are decoded, and anything
malformed raises ``CorruptRecordingError`` naming the file and byte offset.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import msgpack
import numpy as np

from simcore.errors import CorruptRecordingError, RecordingError

__all__ = [
    "ARRAY_EXT",
    "ALLOWED_DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_CONTAINER_LEN",
    "MAX_RECORD_BYTES",
    "Episode",
    "RecordingTruncatedWarning",
    "RecordingWriter",
    "describe_space",
    "iter_records",
    "pack_record",
    "read_episode",
    "read_episodes",
    "unpack_record",
]

FORMAT_NAME = "simcore.recording"
FORMAT_VERSION = 1

#: msgpack ext type code of a numpy array.
ARRAY_EXT = 1

#: Largest encoded record (header, step or footer).  The reader's buffer is
#: capped at this size, so no length prefix can make it allocate more.
MAX_RECORD_BYTES = 64 * 1024 * 1024

#: Largest msgpack array or map (entries).  msgpack allocates a container as
#: soon as it reads the header, so this bounds what a hostile header costs.
MAX_CONTAINER_LEN = 1 << 20

#: Deepest nesting of maps/lists the writer accepts (msgpack's reader stops at 1024).
MAX_DEPTH = 64

#: The only dtype strings an array ext may carry: little-endian (or
#: byte-order-free ``|``) booleans, integers and floats.
ALLOWED_DTYPES = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"]
)

_MAX_NDIM = 32


class RecordingTruncatedWarning(UserWarning):
    """A recording ended before its last footer: it was cut off, complete steps were kept."""


# --------------------------------------------------------------------------- encoding


def _encode_array(arr: np.ndarray, where: str) -> msgpack.ExtType:
    dt = arr.dtype
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise RecordingError(f"{where}: cannot record an array of dtype {dt} (allowed: bool, int, uint, float)")
    dt = dt.newbyteorder("<") if dt.byteorder != "|" else dt
    if dt.str not in ALLOWED_DTYPES:
        raise RecordingError(
            f"{where}: cannot record an array of dtype {arr.dtype} (allowed: {sorted(ALLOWED_DTYPES)})")
    if arr.ndim > _MAX_NDIM:
        raise RecordingError(f"{where}: array has {arr.ndim} dimensions, at most {_MAX_NDIM} are allowed")
    data = np.ascontiguousarray(arr, dtype=dt).tobytes()
    payload = msgpack.packb([dt.str, list(arr.shape), data], use_bin_type=True)
    return msgpack.ExtType(ARRAY_EXT, payload)


def _to_wire(obj: Any, where: str, depth: int = 0) -> Any:
    """Convert ``obj`` to what msgpack packs natively, or raise RecordingError naming ``where``.

    Done as an explicit walk (not a ``default=`` hook) so map keys get checked too
    (the reader only accepts string keys) and errors say where the bad value sits.
    """
    if depth > MAX_DEPTH:
        raise RecordingError(f"{where}: nested deeper than {MAX_DEPTH} levels (or self-referencing)")
    if obj is None or isinstance(obj, (bool, str, bytes)):
        return obj
    if isinstance(obj, int):
        if not -(2**63) <= obj < 2**64:
            raise RecordingError(f"{where}: integer {obj} does not fit in 64 bits")
        return obj
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _encode_array(obj, where)
    if isinstance(obj, np.generic):  # numpy scalar -> plain Python number
        if not isinstance(obj, (np.bool_, np.integer, np.floating)):
            raise RecordingError(f"{where}: cannot record numpy scalar of type {type(obj).__name__}")
        return _to_wire(obj.item(), where, depth)
    if isinstance(obj, dict):
        if len(obj) > MAX_CONTAINER_LEN:
            raise RecordingError(f"{where}: map has {len(obj)} entries, at most {MAX_CONTAINER_LEN} are allowed")
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise RecordingError(f"{where}: map keys must be str, got {type(k).__name__} key {k!r}")
            out[k] = _to_wire(v, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        if len(obj) > MAX_CONTAINER_LEN:
            raise RecordingError(f"{where}: list has {len(obj)} items, at most {MAX_CONTAINER_LEN} are allowed")
        return [_to_wire(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
    raise RecordingError(
        f"{where}: cannot record a value of type {type(obj).__name__} "
        "(allowed: None, bool, int, float, str, bytes, list, tuple, str-keyed dict, numpy array/scalar)"
    )


def pack_record(obj: Any) -> bytes:
    """Encode one record (normally a dict) as msgpack bytes.

    Numpy arrays become ``ARRAY_EXT`` ext values, numpy scalars plain numbers,
    tuples lists.  Anything else raises RecordingError, as does a record larger
    than ``MAX_RECORD_BYTES`` (the reader would refuse it).
    """
    data = msgpack.packb(_to_wire(obj, "record"), use_bin_type=True)
    if len(data) > MAX_RECORD_BYTES:
        raise RecordingError(f"record is {len(data)} bytes encoded, more than MAX_RECORD_BYTES={MAX_RECORD_BYTES}")
    return data


# --------------------------------------------------------------------------- decoding


def _no_nested_ext(code: int, data: bytes) -> Any:
    raise CorruptRecordingError(f"ext type {code} inside an array ext payload")


def _decode_array(payload: bytes) -> np.ndarray:
    try:
        item = msgpack.unpackb(payload, raw=False, ext_hook=_no_nested_ext, strict_map_key=True,
                               max_array_len=_MAX_NDIM + 3, max_map_len=0)
    except CorruptRecordingError:
        raise
    except Exception as e:
        raise CorruptRecordingError(f"array ext payload is not valid msgpack: {type(e).__name__}: {e}") from None
    if not (isinstance(item, list) and len(item) == 3):
        raise CorruptRecordingError("array ext payload must be a msgpack array [dtype, shape, data]")
    dtype, shape, data = item
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise CorruptRecordingError(f"array dtype {dtype!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    if not (isinstance(shape, list) and len(shape) <= _MAX_NDIM
            and all(type(n) is int and 0 <= n < 2**62 for n in shape)):
        raise CorruptRecordingError(f"array shape {shape!r} is not a list of at most {_MAX_NDIM} non-negative ints")
    if not isinstance(data, bytes):
        raise CorruptRecordingError(f"array data must be msgpack bin, got {type(data).__name__}")
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize
    if expected != len(data):
        raise CorruptRecordingError(
            f"array of dtype {dtype} and shape {shape} needs {expected} bytes of data, got {len(data)}")
    if dt.kind == "b" and data.translate(None, b"\x00\x01"):
        raise CorruptRecordingError("bool array holds bytes other than 0 and 1")
    try:
        # .copy(): frombuffer on bytes is read-only; users get an ordinary writeable array.
        return np.frombuffer(data, dtype=dt).reshape(shape).copy()
    except Exception as e:  # e.g. a dimension numpy cannot represent
        raise CorruptRecordingError(f"array of shape {shape} cannot be built: {e}") from None


def _ext_hook(code: int, data: bytes) -> Any:
    """msgpack ext hook: decode ``ARRAY_EXT`` to a writeable numpy array copy, refuse every other code."""
    if code != ARRAY_EXT:
        raise CorruptRecordingError(f"unknown ext type code {code}")
    return _decode_array(data)


_UNPACK_LIMITS = dict(max_array_len=MAX_CONTAINER_LEN, max_map_len=MAX_CONTAINER_LEN)


def unpack_record(data: bytes) -> Any:
    """Decode one record produced by ``pack_record`` (exactly one msgpack value, no trailing bytes).

    Arrays come back as writeable numpy copies.  Malformed bytes raise CorruptRecordingError.
    """
    if len(data) > MAX_RECORD_BYTES:
        raise CorruptRecordingError(f"record is {len(data)} bytes, more than MAX_RECORD_BYTES={MAX_RECORD_BYTES}")
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=True, **_UNPACK_LIMITS)
    except CorruptRecordingError:
        raise
    except Exception as e:
        raise CorruptRecordingError(f"not a valid record: {type(e).__name__}: {e}") from None


# Header sizes of msgpack types, for _tail_problem.  blob: (length bytes, extra bytes);
# container: (count bytes, items per entry); fixed: payload bytes after the type byte.
_BLOB = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),
         0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}


def _tail_problem(buf: bytes) -> str | None:
    """Say why an incomplete trailing record cannot be the prefix of a valid record, else None.

    msgpack waits for the bytes a str/bin/ext length prefix announces, so at end
    of file a hostile "2 GiB follow" prefix looks just like a cut-off record.
    Walking the item headers that are present tells them apart: no valid record
    declares more than MAX_RECORD_BYTES, and every record is a map.
    """
    if buf and not (0x80 <= buf[0] <= 0x8F or buf[0] in (0xDE, 0xDF)):
        return f"record starts with byte 0x{buf[0]:02x}, which is not a msgpack map"
    pos, pending = 0, 1  # pending: items announced but not yet walked
    while pending and pos < len(buf):
        b = buf[pos]
        pending -= 1
        if b <= 0x7F or b >= 0xE0:
            pos += 1
        elif b <= 0x9F:  # fixmap / fixarray
            pending += (b & 0x0F) * (2 if b <= 0x8F else 1)
            pos += 1
        elif b <= 0xBF:  # fixstr
            pos += 1 + (b & 0x1F)
        elif b in _FIXED:
            pos += 1 + _FIXED[b]
        elif b in _BLOB or b in _CONTAINER:
            nbytes, k = _BLOB.get(b) or _CONTAINER[b]
            if pos + 1 + nbytes > len(buf):
                break  # the length itself was cut off
            n = int.from_bytes(buf[pos + 1:pos + 1 + nbytes], "big")
            if b in _BLOB:
                pos += 1 + nbytes + k + n
            else:
                pending += n * k
                pos += 1 + nbytes
        else:
            return f"invalid msgpack byte 0x{b:02x} at record offset {pos}"
        if pos + pending > MAX_RECORD_BYTES:  # every pending item takes at least one byte
            return f"record declares more than MAX_RECORD_BYTES={MAX_RECORD_BYTES} bytes"
    return None


def _scan(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(byte_offset, record)``; return ``(offset, n_bytes)`` of an incomplete tail, or None.

    The streaming Unpacker reads the file in chunks and its buffer is capped at
    MAX_RECORD_BYTES, so memory stays bounded whatever the file holds.
    """
    name = os.fsdecode(path)
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, ext_hook=_ext_hook, strict_map_key=True,
                                    max_buffer_size=MAX_RECORD_BYTES, **_UNPACK_LIMITS)
        n_records = 0
        while True:
            offset = unpacker.tell()
            try:
                record = next(unpacker)
            except StopIteration:
                break
            except msgpack.BufferFull:
                raise CorruptRecordingError(
                    f"{name}: record at byte offset {offset} is larger than MAX_RECORD_BYTES={MAX_RECORD_BYTES}"
                ) from None
            except Exception as e:  # ValueError, FormatError, StackError, our ext errors, ...
                raise CorruptRecordingError(
                    f"{name}: invalid record at byte offset {offset}: {e if isinstance(e, RecordingError) else repr(e)}"
                ) from None
            if not isinstance(record, dict):
                raise CorruptRecordingError(
                    f"{name}: record at byte offset {offset} is a {type(record).__name__}, not a map")
            n_records += 1
            yield offset, record
        end = offset  # tell() after a failed read counts the partial bytes too
        size = os.fstat(f.fileno()).st_size
        f.seek(end)
        tail = f.read(max(0, min(size - end, MAX_RECORD_BYTES + 1)))  # read(n) allocates n up front
    if not tail:
        return None
    problem = _tail_problem(tail)
    if problem is not None:
        raise CorruptRecordingError(f"{name}: invalid record at byte offset {end}: {problem}")
    if n_records == 0:
        raise CorruptRecordingError(
            f"{name}: no complete record in {len(tail)} bytes: not a simcore recording, "
            "or cut off inside its first header")
    return end, len(tail)


def iter_records(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the raw record maps of a recording file, without structural checks.

    A file that ends inside a record is not an error (it is how a crashed
    writer leaves it): iteration stops after the last complete record and a
    RecordingTruncatedWarning says so.  Malformed bytes raise CorruptRecordingError.
    """
    scan = _scan(path)
    while True:
        try:
            _, record = next(scan)
        except StopIteration as stop:
            tail = stop.value
            break
        yield record
    if tail is not None:
        warnings.warn(f"{os.fsdecode(path)}: ignoring {tail[1]} bytes of an incomplete record at byte "
                      f"offset {tail[0]} (file cut off)", RecordingTruncatedWarning, stacklevel=2)


# --------------------------------------------------------------------------- episodes


@dataclass(eq=False)
class Episode:
    """One recorded episode: its header, its step records in order, and its footer.

    ``truncated`` is True when the footer is missing because the recording was
    cut off (writer crashed or was killed, file copied mid-write); ``steps``
    then holds every step that was completely written.  Not to be confused
    with ``footer["truncated"]``, the environment's time-limit flag.
    """

    header: dict
    steps: list[dict] = field(default_factory=list)
    footer: dict | None = None
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def frames(self) -> np.ndarray:
        """All frames stacked, shape (T, H, W, 3), uint8 (T may be 0)."""
        if not self.steps:
            h, w = self.header["frame_size"]
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        return np.stack([s["frame"] for s in self.steps])

    @property
    def actions(self) -> list:
        """The action of each step; the first (reset) step's is None."""
        return [s.get("action") for s in self.steps]

    @property
    def rewards(self) -> np.ndarray:
        """The reward of each step as float64, shape (T,)."""
        return np.array([s.get("reward", 0.0) for s in self.steps], dtype=np.float64)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_frame_size(fs: Any) -> list[int] | None:
    """Return frame_size as [H, W] of positive ints, or None if it is not one."""
    if isinstance(fs, (list, tuple)) and len(fs) == 2 and all(_is_int(n) and n > 0 for n in fs):
        return [int(fs[0]), int(fs[1])]
    return None


def _read(path: str | os.PathLike) -> tuple[list[Episode], tuple[int, int] | None]:
    """Parse and check the record structure; return the episodes and the incomplete tail, if any."""
    name = os.fsdecode(path)
    episodes: list[Episode] = []
    current: Episode | None = None  # an episode whose footer has not been read yet
    scan = _scan(path)
    while True:
        try:
            offset, rec = next(scan)
        except StopIteration as stop:
            tail = stop.value
            break

        def bad(msg: str) -> CorruptRecordingError:
            return CorruptRecordingError(f"{name}: record at byte offset {offset}: {msg}")

        kind = rec.get("kind")
        if kind == "header":
            if current is not None:
                raise bad(f"header inside an unfinished episode (episode {len(episodes) - 1} has no footer)")
            if rec.get("format") != FORMAT_NAME:
                raise bad(f"unsupported format {rec.get('format')!r} (expected {FORMAT_NAME!r})")
            if not (_is_int(rec.get("version")) and rec["version"] == FORMAT_VERSION):
                raise bad(f"unsupported version {rec.get('version')!r} (this reader supports {FORMAT_VERSION})")
            if _check_frame_size(rec.get("frame_size")) is None:
                raise bad(f"header frame_size must be [H, W] positive ints, got {rec.get('frame_size')!r}")
            current = Episode(header=rec)
            episodes.append(current)
        elif kind == "step":
            if current is None:
                raise bad("step record outside an episode (no header before it)")
            t, expected = rec.get("t"), len(current.steps)
            if not (_is_int(t) and t == expected):
                raise bad(f"step t={t!r} out of order (expected t={expected})")
            h, w = current.header["frame_size"]
            frame = rec.get("frame")
            if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (h, w, 3)):
                got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
                raise bad(f"step t={t} frame must be uint8 ({h}, {w}, 3), got {got}")
            current.steps.append(rec)
        elif kind == "footer":
            if current is None:
                raise bad("footer record outside an episode (no header before it)")
            if rec.get("steps") != len(current.steps):
                raise bad(f"footer says steps={rec.get('steps')!r} but the episode has {len(current.steps)} steps")
            current.footer = rec
            current = None
        else:
            raise bad(f"unknown record kind {kind!r} (expected 'header', 'step' or 'footer')")
    if current is not None:
        current.truncated = True
    return episodes, tail


def _warn_truncation(path: str | os.PathLike, episodes: list[Episode], tail: tuple[int, int] | None) -> None:
    name = os.fsdecode(path)
    if episodes and episodes[-1].truncated:
        ep = episodes[-1]
        warnings.warn(f"{name}: recording cut off; recovered {len(ep.steps)} complete steps of episode "
                      f"{len(episodes) - 1} (footer missing)", RecordingTruncatedWarning, stacklevel=3)
    elif tail is not None:
        warnings.warn(f"{name}: ignoring {tail[1]} bytes of an incomplete record at byte offset {tail[0]} "
                      "(file cut off after a complete episode)", RecordingTruncatedWarning, stacklevel=3)


def read_episodes(path: str | os.PathLike) -> list[Episode]:
    """Read every episode of a recording (or shard), in file order.

    A file cut off mid-episode (including a ``.tmp`` left by a crashed writer)
    yields that episode's complete steps with ``truncated=True`` and a
    RecordingTruncatedWarning; bad bytes or structure raise CorruptRecordingError.
    """
    episodes, tail = _read(path)
    _warn_truncation(path, episodes, tail)
    return episodes


def read_episode(path: str | os.PathLike) -> Episode:
    """Read a recording that holds exactly one episode (else RecordingError)."""
    episodes, tail = _read(path)
    if len(episodes) != 1:
        raise RecordingError(f"{os.fsdecode(path)}: expected exactly one episode, found {len(episodes)} "
                             "(use read_episodes for shards)")
    _warn_truncation(path, episodes, tail)
    return episodes[0]


# --------------------------------------------------------------------------- writing


def describe_space(space: Any) -> dict:
    """Describe a gymnasium Discrete, MultiDiscrete or Box space as a plain map for the header.

    Duck-typed on class name and attributes so this module never imports gymnasium.
    """
    names = {c.__name__ for c in type(space).__mro__}
    if "MultiDiscrete" in names and hasattr(space, "nvec"):
        d = {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec, dtype=np.int64)}
        if getattr(space, "start", None) is not None:
            d["start"] = np.asarray(space.start, dtype=np.int64)
        return d
    if "Discrete" in names and hasattr(space, "n"):
        return {"type": "Discrete", "n": int(space.n), "start": int(getattr(space, "start", 0))}
    if "Box" in names and hasattr(space, "low") and hasattr(space, "high"):
        dt = np.dtype(space.dtype)
        return {"type": "Box", "shape": [int(n) for n in space.shape], "dtype": dt.newbyteorder("<").str,
                "low": np.asarray(space.low), "high": np.asarray(space.high)}
    raise RecordingError(f"cannot describe action space of type {type(space).__name__}: "
                         "only Discrete, MultiDiscrete and Box are supported; pass a dict instead")


def _producer() -> dict:
    try:
        from importlib.metadata import version
        simcore_version = version("simcore")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        simcore_version = getattr(sys.modules.get("simcore"), "__version__", None)
    return {"simcore": simcore_version, "numpy": np.__version__,
            "msgpack": ".".join(map(str, msgpack.version)), "python": platform.python_version()}


_HEADER_DEFAULTS = {"seed": None, "options": {}, "fps": None, "action_space": None, "backend": None}
_FOOTER_RESERVED = {"kind", "steps", "return"}


class RecordingWriter:
    """Write episodes to ``path`` as a msgpack stream, atomically.

    Records go to ``path + ".tmp"``, flushed after every record so a crash
    leaves every complete step readable there; ``close()`` (or leaving the
    ``with`` block normally) writes any missing footer, fsyncs and renames the
    file to ``path``.  If the ``with`` block raises, the ``.tmp`` file is left
    as it is (nothing recorded is lost) and the exception propagates.  An
    existing ``.tmp`` is never overwritten, since it may be a crashed recording.

    With ``shard=False`` the file holds one episode; ``shard=True`` allows many.
    """

    def __init__(self, path: str | os.PathLike, *, shard: bool = False):
        self.path = os.fsdecode(path)
        self.tmp_path = self.path + ".tmp"
        self.shard = shard
        try:
            self._file = open(self.tmp_path, "xb")
        except FileExistsError:
            raise RecordingError(
                f"{self.tmp_path} already exists: an unfinished recording (read it with read_episodes to "
                "recover its steps) or a writer still running; move or delete it first") from None
        self._closed = False
        self._episodes = 0
        self._header: dict | None = None  # header of the open episode, None between episodes

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:  # keep the .tmp with every complete record; do not pretend the episode ended
            self._closed = True
            self._file.close()
        return False

    def _write(self, record: dict) -> None:
        if self._closed:
            raise RecordingError(f"{self.path}: writer is closed")
        data = pack_record(record)  # encode first: a bad value leaves the file untouched
        self._file.write(data)
        self._file.flush()

    def begin_episode(self, header: dict) -> None:
        """Start an episode.  Fills kind, format, version, producer, created and
        missing optional fields (None/{}); an action space object is turned into
        a map with describe_space.  ``scene`` and ``frame_size`` are required."""
        if self._closed:
            raise RecordingError(f"{self.path}: writer is closed")
        if self._header is not None:
            raise RecordingError("begin_episode called while an episode is open; call end_episode first")
        if self._episodes and not self.shard:
            raise RecordingError("this recording holds one episode; open the writer with shard=True for more")
        header = dict(header)
        for key, want in (("kind", "header"), ("format", FORMAT_NAME), ("version", FORMAT_VERSION)):
            if header.setdefault(key, want) != want:
                raise RecordingError(f"header {key} must be {want!r}, got {header[key]!r}")
        if not isinstance(header.get("scene"), str):
            raise RecordingError(f"header scene must be a str scene id, got {header.get('scene')!r}")
        frame_size = _check_frame_size(header.get("frame_size"))
        if frame_size is None:
            raise RecordingError(f"header frame_size must be [H, W] positive ints, got {header.get('frame_size')!r}")
        header["frame_size"] = frame_size
        for key, default in _HEADER_DEFAULTS.items():
            header.setdefault(key, dict(default) if isinstance(default, dict) else default)
        if header["action_space"] is not None and not isinstance(header["action_space"], dict):
            header["action_space"] = describe_space(header["action_space"])
        header.setdefault("producer", _producer())
        header.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
        order = ("kind", "format", "version", "scene", "seed", "options", "frame_size", "fps", "action_space",
                 "backend", "producer", "created")
        record = {k: header[k] for k in order}
        record.update((k, v) for k, v in header.items() if k not in record)
        self._write(record)
        self._header = header
        self._t = 0
        self._return = 0.0
        self._terminated = self._truncated = False
        self._start = time.monotonic()

    def write_step(self, step: dict) -> None:
        """Append one step.  ``frame`` is required (uint8 (H, W, 3)); ``action`` is
        required except at t=0, the reset frame, where it must be None.  Fills kind,
        t, is_first, is_last, reward=0.0, terminated/truncated=False, state={}, info={}."""
        if self._header is None:
            raise RecordingError("write_step called outside an episode; call begin_episode first")
        step = dict(step)
        if step.setdefault("kind", "step") != "step":
            raise RecordingError(f"step kind must be 'step', got {step['kind']!r}")
        t = step.setdefault("t", self._t)
        if not (_is_int(t) and t == self._t):
            raise RecordingError(f"step t must be {self._t} (steps are numbered 0, 1, 2, ...), got {t!r}")
        h, w = self._header["frame_size"]
        frame = step.get("frame")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (h, w, 3):
            got = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else repr(type(frame))
            raise RecordingError(f"step t={t}: frame must be a uint8 array of shape ({h}, {w}, 3), got {got}")
        if t == 0:
            if step.setdefault("action", None) is not None:
                raise RecordingError("step t=0 is the reset frame: its action must be None")
        elif "action" not in step:
            raise RecordingError(f"step t={t}: action is required")
        try:
            reward = float(step.setdefault("reward", 0.0))
        except (TypeError, ValueError):
            raise RecordingError(f"step t={t}: reward must be a number, got {step['reward']!r}") from None
        terminated = bool(step.setdefault("terminated", False))
        truncated = bool(step.setdefault("truncated", False))
        step.setdefault("is_first", t == 0)
        step.setdefault("is_last", terminated or truncated)
        step.setdefault("state", {})
        step.setdefault("info", {})
        order = ("kind", "t", "is_first", "is_last", "frame", "action", "reward", "terminated", "truncated",
                 "state", "info")
        record = {k: step[k] for k in order}
        record.update((k, v) for k, v in step.items() if k not in record)
        record.update(t=int(t), reward=reward, terminated=terminated, truncated=truncated)
        self._write(record)
        self._t += 1
        self._return += reward
        self._terminated, self._truncated = terminated, truncated

    def end_episode(self, **footer_extra: Any) -> None:
        """Write the footer: steps, return, terminated/truncated of the last step,
        wall_time since begin_episode.  Extra keys are added (they may override
        terminated, truncated and wall_time, not kind, steps or return)."""
        if self._header is None:
            raise RecordingError("end_episode called outside an episode; call begin_episode first")
        reserved = _FOOTER_RESERVED & footer_extra.keys()
        if reserved:
            raise RecordingError(f"footer fields {sorted(reserved)} are computed by the writer")
        footer = {"kind": "footer", "steps": self._t, "return": self._return, "terminated": self._terminated,
                  "truncated": self._truncated, "wall_time": time.monotonic() - self._start, **footer_extra}
        self._write(footer)
        self._header = None
        self._episodes += 1

    def close(self) -> None:
        """Finish: footer for an open episode, fsync, rename ``.tmp`` to the final path.  Idempotent."""
        if self._closed:
            return
        try:
            if self._header is not None:
                self.end_episode()
            os.fsync(self._file.fileno())
        except BaseException:
            self._closed = True
            self._file.close()
            raise
        self._closed = True
        self._file.close()
        os.replace(self.tmp_path, self.path)
