"""Tests for simcore.recording: real files, real msgpack, no mocks."""
from __future__ import annotations

import io
import os
import pathlib
import random
import re
import resource
import time
import warnings

import msgpack
import numpy as np
import pytest

from simcore.errors import CorruptRecordingError, RecordingError
from simcore.recording import (
    ALLOWED_DTYPES,
    ARRAY_EXT,
    FORMAT_NAME,
    Episode,
    RecordingTruncatedWarning,
    RecordingWriter,
    describe_space,
    iter_records,
    pack_record,
    read_episode,
    read_episodes,
    unpack_record,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
H, W = 4, 5


def frame(v: int = 0) -> np.ndarray:
    return np.full((H, W, 3), v, dtype=np.uint8)


def assert_same(a, b, where="value"):
    """Exact structural equality: same types, same dtypes/shapes, same bytes."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}"


def sample_state(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    state = {}
    for i, dt in enumerate(sorted(ALLOWED_DTYPES)):
        if dt == "|b1":
            state[dt] = rng.integers(0, 2, size=(3, 2)).astype(bool)
        elif dt[1] == "f":
            state[dt] = rng.normal(size=(2, 3, i % 3 + 1)).astype(dt)
        else:
            state[dt] = rng.integers(0, 100, size=(i + 1,)).astype(dt)
    state["scalar0d"] = np.array(2.5, dtype=np.float64)
    state["empty"] = np.zeros((0,), dtype=np.float32)
    state["empty2d"] = np.zeros((3, 0), dtype=np.int32)
    state["special"] = np.array([np.inf, -np.inf, -0.0, 1e-310], dtype=np.float64)
    return state


def write_shard(path, episodes=2, steps=4) -> list[list[dict]]:
    """Write a shard and return the step dicts as written (for comparison)."""
    written = []
    with RecordingWriter(path, shard=True) as w:
        for e in range(episodes):
            w.begin_episode({"scene": f"scene{e}", "seed": e, "frame_size": (H, W), "fps": 30,
                             "options": {"n_balls": 3, "tuple": (1, 2)}, "backend": "numpy", "extra": "kept"})
            steps_e = []
            for t in range(steps):
                action = None if t == 0 else (t % 3 if e == 0 else np.array([t, -t], np.int8))
                step = {"frame": frame(t), "action": action,
                        "reward": np.float32(0.25 * t), "state": sample_state(10 * e + t),
                        "info": {"n": np.int64(t), "flag": np.bool_(t % 2), "pair": (1.5, "x"), "raw": b"\x00\xff"},
                        "terminated": t == steps - 1}
                w.write_step(step)
                steps_e.append(step)
            w.end_episode(note="done")
            written.append(steps_e)
    return written


# --------------------------------------------------------------------------- round trip


def test_round_trip_two_episode_shard_exact(tmp_path):
    path = tmp_path / "shard.rec"
    written = write_shard(path)
    episodes = read_episodes(path)
    assert len(episodes) == 2
    for e, (ep, steps) in enumerate(zip(episodes, written)):
        assert isinstance(ep, Episode) and len(ep) == 4 and not ep.truncated
        assert ep.header["scene"] == f"scene{e}" and ep.header["seed"] == e and ep.header["extra"] == "kept"
        assert ep.header["options"] == {"n_balls": 3, "tuple": [1, 2]}  # tuples come back as lists
        for t, (rec, step) in enumerate(zip(ep.steps, steps)):
            assert rec["t"] == t and rec["is_first"] == (t == 0) and rec["is_last"] == (t == 3)
            assert_same(step["frame"], rec["frame"])
            assert_same(step["state"], rec["state"], f"ep{e} t{t} state")
            assert_same({"n": t, "flag": bool(t % 2), "pair": [1.5, "x"], "raw": b"\x00\xff"}, rec["info"])
            assert type(rec["reward"]) is float and rec["reward"] == float(np.float32(0.25 * t))
            assert_same(step["action"], rec["action"])
        assert ep.footer["steps"] == 4 and ep.footer["return"] == pytest.approx(1.5)
        assert ep.footer["terminated"] is True and ep.footer["truncated"] is False
        assert ep.footer["note"] == "done" and ep.footer["wall_time"] >= 0
        assert ep.frames.shape == (4, H, W, 3) and ep.frames.dtype == np.uint8
        assert ep.frames[2].max() == 2
        assert ep.actions[0] is None and np.array_equal(ep.rewards, [0.0, 0.25, 0.5, 0.75])
    # decoded arrays are writeable copies
    arr = episodes[0].steps[0]["state"]["<f4"]
    arr[...] = 0
    assert arr.flags.writeable


def test_pack_unpack_record_values():
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    non_contiguous = np.arange(12, dtype=np.int16).reshape(3, 4)[:, ::2]
    obj = {"be": big_endian, "nc": non_contiguous, "t": (1, (2, 3)), "f16": np.float16(1.5), "u": np.uint64(2**64 - 1)}
    back = unpack_record(pack_record(obj))
    assert back["be"].dtype.str == "<f4" and np.array_equal(back["be"], big_endian)
    assert back["nc"].flags.c_contiguous and np.array_equal(back["nc"], non_contiguous)
    assert back["t"] == [1, [2, 3]] and back["f16"] == 1.5 and back["u"] == 2**64 - 1
    assert type(back["f16"]) is float and type(back["u"]) is int


@pytest.mark.parametrize("value", [
    np.array([1 + 2j]), np.array(["a"]), np.array([object()], dtype=object), {1: "int key"},
    {"s": {1, 2}}, np.complex64(1), 2**64, np.zeros(2, dtype=[("a", "<i4")]), [None] * (2**20 + 1),
])
def test_pack_record_rejects_unsupported(value):
    with pytest.raises(RecordingError):
        pack_record({"v": value})


def test_bad_value_leaves_file_consistent(tmp_path):
    path = tmp_path / "a.rec"
    with RecordingWriter(path) as w:
        w.begin_episode({"scene": "s", "frame_size": [H, W]})
        w.write_step({"frame": frame()})
        with pytest.raises(RecordingError, match=r"record\['info'\]\['bad'\]"):
            w.write_step({"frame": frame(), "action": 1, "info": {"bad": object()}})
        w.write_step({"frame": frame(), "action": 1})
    ep = read_episode(path)
    assert [s["t"] for s in ep.steps] == [0, 1] and ep.footer["steps"] == 2


# --------------------------------------------------------------------------- writer


def test_header_defaults_filled(tmp_path):
    path = tmp_path / "h.rec"
    with RecordingWriter(str(path)) as w:
        w.begin_episode({"scene": "s", "frame_size": [H, W]})
    ep = read_episode(path)
    h = ep.header
    assert h["kind"] == "header" and h["format"] == FORMAT_NAME and h["version"] == 1
    assert h["seed"] is None and h["options"] == {} and h["action_space"] is None and h["backend"] is None
    assert set(h["producer"]) == {"simcore", "numpy", "msgpack", "python"}
    assert h["producer"]["numpy"] == np.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", h["created"])
    assert len(ep) == 0 and ep.footer["steps"] == 0 and ep.frames.shape == (0, H, W, 3)
    assert list(h)[:3] == ["kind", "format", "version"]


def test_header_validation(tmp_path):
    with RecordingWriter(tmp_path / "v.rec") as w:
        with pytest.raises(RecordingError, match="frame_size"):
            w.begin_episode({"scene": "s", "frame_size": [0, 4]})
        with pytest.raises(RecordingError, match="version"):
            w.begin_episode({"scene": "s", "frame_size": [H, W], "version": 2})
        with pytest.raises(RecordingError, match="scene"):
            w.begin_episode({"frame_size": [H, W]})
        w.begin_episode({"scene": "s", "frame_size": [H, W]})
        with pytest.raises(RecordingError, match="open"):
            w.begin_episode({"scene": "s", "frame_size": [H, W]})
        w.end_episode()
        with pytest.raises(RecordingError, match="shard=True"):
            w.begin_episode({"scene": "s", "frame_size": [H, W]})


def test_describe_space_duck_typed(tmp_path):
    class Discrete:
        n, start = 3, 0

    class MultiDiscrete:
        nvec = np.array([2, 3])

    class Box:
        low, high, shape, dtype = np.zeros(2, np.float32), np.full(2, np.inf, np.float32), (2,), np.float32

    assert describe_space(Discrete()) == {"type": "Discrete", "n": 3, "start": 0}
    md = describe_space(MultiDiscrete())
    assert md["type"] == "MultiDiscrete" and md["nvec"].tolist() == [2, 3]
    box = describe_space(Box())
    assert box["type"] == "Box" and box["shape"] == [2] and box["dtype"] == "<f4"
    with pytest.raises(RecordingError, match="Tuple"):
        describe_space(type("Tuple", (), {})())
    path = tmp_path / "s.rec"
    with RecordingWriter(path) as w:  # a space object is described automatically
        w.begin_episode({"scene": "s", "frame_size": [H, W], "action_space": Box()})
    back = read_episode(path).header["action_space"]
    assert back["type"] == "Box" and np.array_equal(back["high"], Box.high)


def test_describe_real_gymnasium_spaces():
    spaces = pytest.importorskip("gymnasium.spaces")
    assert describe_space(spaces.Discrete(3)) == {"type": "Discrete", "n": 3, "start": 0}
    assert describe_space(spaces.MultiDiscrete([2, 5]))["nvec"].tolist() == [2, 5]
    box = describe_space(spaces.Box(-1.0, 1.0, shape=(2, 3)))
    assert box["shape"] == [2, 3] and box["low"].shape == (2, 3) and box["dtype"] == "<f4"


def test_step_validation(tmp_path):
    with RecordingWriter(tmp_path / "f.rec") as w:
        with pytest.raises(RecordingError, match="begin_episode"):
            w.write_step({"frame": frame()})
        w.begin_episode({"scene": "s", "frame_size": [H, W]})
        with pytest.raises(RecordingError, match=r"\(4, 5, 3\).*\(5, 4, 3\)"):
            w.write_step({"frame": np.zeros((5, 4, 3), np.uint8)})
        with pytest.raises(RecordingError, match=r"uint8.*float32"):
            w.write_step({"frame": np.zeros((H, W, 3), np.float32)})
        with pytest.raises(RecordingError, match="reset frame"):
            w.write_step({"frame": frame(), "action": 1})
        with pytest.raises(RecordingError, match="t must be 0"):
            w.write_step({"frame": frame(), "t": 1})
        w.write_step({"frame": frame()})
        with pytest.raises(RecordingError, match="action is required"):
            w.write_step({"frame": frame()})
        with pytest.raises(RecordingError, match="computed by the writer"):
            w.end_episode(steps=9)


# --------------------------------------------------------------------------- atomic finish


def test_tmp_then_rename(tmp_path):
    path = tmp_path / "r.rec"
    tmp = tmp_path / "r.rec.tmp"
    w = RecordingWriter(path)
    w.begin_episode({"scene": "s", "frame_size": [H, W]})
    w.write_step({"frame": frame()})
    assert tmp.exists() and not path.exists()
    # every step is flushed: another reader already sees it while the writer is open
    assert len(read_episodes_quiet(tmp)[0]) == 1
    w.close()  # ends the open episode with a footer, then renames
    assert path.exists() and not tmp.exists()
    ep = read_episode(path)
    assert len(ep) == 1 and ep.footer is not None and not ep.truncated
    w.close()  # idempotent
    with pytest.raises(RecordingError, match="closed"):
        w.begin_episode({"scene": "s", "frame_size": [H, W]})


def test_exception_in_with_leaves_readable_tmp(tmp_path):
    path = tmp_path / "crash.rec"
    with pytest.raises(KeyError, match="boom"):
        with RecordingWriter(path) as w:
            w.begin_episode({"scene": "s", "frame_size": [H, W]})
            for t in range(3):
                w.write_step({"frame": frame(t), "action": None if t == 0 else t})
            raise KeyError("boom")
    tmp = pathlib.Path(str(path) + ".tmp")
    assert tmp.exists() and not path.exists()
    with pytest.warns(RecordingTruncatedWarning, match=r"crash\.rec\.tmp.*recovered 3 complete steps"):
        ep = read_episode(tmp)
    assert ep.truncated and ep.footer is None and ep.actions == [None, 1, 2]
    # a leftover .tmp is never clobbered by a new writer
    with pytest.raises(RecordingError, match="already exists"):
        RecordingWriter(path)
    assert tmp.read_bytes() and len(read_episodes_quiet(tmp)[0]) == 3


def read_episodes_quiet(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingTruncatedWarning)
        return read_episodes(path)


# --------------------------------------------------------------------------- truncation


def record_ends(data: bytes) -> list[tuple[str, int]]:
    """(kind, end offset) of every record, found with plain msgpack."""
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, ext_hook=lambda c, d: None)
    out = []
    for rec in unpacker:
        out.append((rec["kind"], unpacker.tell()))
    return out


def test_truncation_at_every_byte(tmp_path):
    path = tmp_path / "full.rec"
    with RecordingWriter(path, shard=True) as w:
        for e in range(2):
            w.begin_episode({"scene": "s", "frame_size": [H, W]})
            for t in range(3):
                w.write_step({"frame": frame(t), "action": None if t == 0 else t, "reward": 1.0,
                              "state": {"pos": np.arange(4.0)}})
            w.end_episode()
    data = path.read_bytes()
    ends = record_ends(data)
    cut_path = tmp_path / "cut.rec"
    header_end = ends[0][1]
    for cut in range(header_end, len(data)):
        cut_path.write_bytes(data[:cut])
        complete = [kind for kind, end in ends if end <= cut]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            episodes = read_episodes(cut_path)
        assert len(episodes) == complete.count("header"), cut
        last = episodes[-1]
        last_header = max(i for i, k in enumerate(complete) if k == "header")
        steps_in_last = complete[last_header:].count("step")
        assert len(last) == steps_in_last, cut
        assert last.truncated == (complete[-1] != "footer"), cut
        assert all(not ep.truncated and ep.footer for ep in episodes[:-1])
        assert [s["t"] for s in last.steps] == list(range(steps_in_last))
        if not last.truncated and cut in {end for _, end in ends}:
            assert caught == [], cut  # cut right after a footer: a complete, shorter shard
            continue
        assert len(caught) == 1 and issubclass(caught[0].category, RecordingTruncatedWarning), cut
        msg = str(caught[0].message)
        assert "cut.rec" in msg
        if last.truncated:
            assert f"recovered {steps_in_last} complete steps" in msg


def test_truncated_mid_step_and_mid_footer(tmp_path):
    path = tmp_path / "one.rec"
    with RecordingWriter(path) as w:
        w.begin_episode({"scene": "s", "frame_size": [H, W]})
        for t in range(4):
            w.write_step({"frame": frame(t), "action": None if t == 0 else t})
    data = path.read_bytes()
    footer_len = len(data) - record_ends(data)[-2][1]
    for chop, steps in [(1, 4), (footer_len - 1, 4), (footer_len, 4), (footer_len + 1, 3), (footer_len + 40, 3)]:
        path.write_bytes(data[:-chop])
        with pytest.warns(RecordingTruncatedWarning, match=f"one.rec.*recovered {steps} complete steps"):
            ep = read_episode(path)
        assert ep.truncated and len(ep) == steps and ep.footer is None


def test_iter_records_warns_on_cut_file(tmp_path):
    path = tmp_path / "i.rec"
    write_shard(path, episodes=1, steps=2)
    data = path.read_bytes()
    assert [r["kind"] for r in iter_records(path)] == ["header", "step", "step", "footer"]
    path.write_bytes(data[:-3])
    with pytest.warns(RecordingTruncatedWarning, match=r"i\.rec: ignoring \d+ bytes"):
        kinds = [r["kind"] for r in iter_records(path)]
    assert kinds == ["header", "step", "step"]


def test_empty_file_has_no_episodes(tmp_path):
    path = tmp_path / "empty.rec"
    path.write_bytes(b"")
    assert read_episodes(path) == []
    with pytest.raises(RecordingError, match="exactly one episode, found 0"):
        read_episode(path)


# --------------------------------------------------------------------------- hostile input


def header_bytes() -> bytes:
    return pack_record({"kind": "header", "format": FORMAT_NAME, "version": 1, "scene": "s", "frame_size": [H, W]})


def step_bytes(**fields) -> bytes:
    rec = {"kind": "step", "t": 0, "frame": frame(), "action": None, "reward": 0.0}
    rec.update(fields)
    return pack_record(rec)


def array_ext(dtype, shape, data) -> msgpack.ExtType:
    return msgpack.ExtType(ARRAY_EXT, msgpack.packb([dtype, shape, data]))


def corrupt(tmp_path, data: bytes, match: str):
    path = tmp_path / "bad.rec"
    path.write_bytes(data)
    with pytest.raises(CorruptRecordingError, match=match):
        read_episodes(path)


def test_unknown_ext_code(tmp_path):
    bad = msgpack.packb({"kind": "step", "t": 0, "x": msgpack.ExtType(7, b"abc")})
    corrupt(tmp_path, header_bytes() + bad, rf"bad\.rec.*offset {len(header_bytes())}.*unknown ext type code 7")


def test_array_size_mismatch(tmp_path):
    bad = msgpack.packb({"kind": "step", "x": array_ext("<f4", [2, 3], b"\x00" * 20)})
    corrupt(tmp_path, header_bytes() + bad, r"needs 24 bytes of data, got 20")
    with pytest.raises(CorruptRecordingError, match="24 bytes.*20"):
        unpack_record(bad)


@pytest.mark.parametrize("dtype", ["O", "|O", "<U4", ">f4", ">i8", "<c8", "V8", "<f4 ", "f4", "<M8[s]"])
def test_bad_dtype(tmp_path, dtype):
    bad = msgpack.packb({"kind": "step", "x": array_ext(dtype, [1], b"\x00" * 8)})
    corrupt(tmp_path, header_bytes() + bad, re.escape(repr(dtype)))


@pytest.mark.parametrize("payload, match", [
    ([["<f4"], [1], b"\x00" * 4], "dtype"),
    (["<f4", [-1], b""], "shape"),
    (["<f4", [True], b"\x00" * 4], "shape"),
    (["<f4", 3, b"\x00" * 12], "shape"),
    (["<f4", [1], "text"], "bin"),
    (["<f4", [1]], r"\[dtype, shape, data\]"),
    (["|b1", [2], b"\x00\x02"], "0 and 1"),
    (["<f4", [2**40, 2**40], b""], "bytes of data"),
])
def test_bad_array_payload(payload, match):
    with pytest.raises(CorruptRecordingError, match=match):
        unpack_record(msgpack.packb({"x": msgpack.ExtType(ARRAY_EXT, msgpack.packb(payload))}))


def test_array_payload_with_trailing_or_nested_ext():
    with pytest.raises(CorruptRecordingError):
        unpack_record(msgpack.packb(msgpack.ExtType(ARRAY_EXT, msgpack.packb(["|u1", [0], b""]) + b"\x00")))
    nested = msgpack.packb(["|u1", [0], msgpack.ExtType(1, b"")])
    with pytest.raises(CorruptRecordingError, match="ext type 1 inside"):
        unpack_record(msgpack.packb(msgpack.ExtType(ARRAY_EXT, nested)))


HUGE = (2**31).to_bytes(4, "big")
HOSTILE_PREFIXES = {"bin32": b"\xc6" + HUGE, "str32": b"\xdb" + HUGE, "array32": b"\xdd" + HUGE,
                    "map32": b"\xdf" + HUGE, "ext32": b"\xc9" + HUGE + b"\x01",
                    # under msgpack's own default limits, over MAX_CONTAINER_LEN
                    "array32_2M": b"\xdd" + (2**21).to_bytes(4, "big"),
                    "map32_2M": b"\xdf" + (2**21).to_bytes(4, "big")}


@pytest.mark.parametrize("name", sorted(HOSTILE_PREFIXES))
@pytest.mark.parametrize("where", ["top", "in_record", "after_header"])
def test_huge_length_prefix_fails_fast(tmp_path, name, where):
    prefix = HOSTILE_PREFIXES[name]
    if where == "top":
        data = prefix + b"abc"
    elif where == "in_record":
        data = b"\x81\xa4kind" + prefix + b"abc"
    else:
        data = header_bytes() + b"\x82\xa4kind\xa4step\xa1x" + prefix + b"abc"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    corrupt(tmp_path, data, "bad.rec")
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB on Linux


def test_random_garbage(tmp_path):
    for seed in range(40):
        rnd = random.Random(seed)
        data = bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 7, 100, 3000])))
        corrupt(tmp_path, data, "bad.rec")
        corrupt(tmp_path, header_bytes() + bytes([0x93]) + data, "bad.rec")


@pytest.mark.parametrize("record, match", [
    ([1, 2, 3], "is a list, not a map"),
    (5, "is a int, not a map"),
    ("header", "not a map"),
])
def test_top_level_non_map(tmp_path, record, match):
    corrupt(tmp_path, msgpack.packb(record), match)
    corrupt(tmp_path, header_bytes() + msgpack.packb(record), rf"offset {len(header_bytes())}.*{match}")


def test_non_string_map_key(tmp_path):
    corrupt(tmp_path, msgpack.packb({1: "x"}), "map key")


def test_deep_nesting(tmp_path):
    corrupt(tmp_path, header_bytes() + b"\x91" * 5000 + b"\xc0", "bad.rec")


def test_oversized_tail_of_real_record_is_corrupt(tmp_path):
    # a str whose length prefix is near the limit but whose bytes are missing is a plausible cut-off ...
    cut = header_bytes() + b"\x81\xa4kind\xdb" + (1000).to_bytes(4, "big") + b"st"
    path = tmp_path / "ok.rec"
    path.write_bytes(cut)
    with pytest.warns(RecordingTruncatedWarning):
        assert len(read_episode(path)) == 0
    # ... one over MAX_RECORD_BYTES is not
    corrupt(tmp_path, header_bytes() + b"\x81\xa4kind\xdb" + (64 * 2**20 + 1).to_bytes(4, "big"), "MAX_RECORD_BYTES")


def test_structural_errors(tmp_path):
    hdr = header_bytes()
    footer = lambda n: pack_record({"kind": "footer", "steps": n, "return": 0.0})  # noqa: E731
    cases = [
        (pack_record({"kind": "bogus"}), "unknown record kind 'bogus'"),
        (pack_record({"t": 0}), "unknown record kind None"),
        (step_bytes(), "step record outside an episode"),
        (footer(0), "footer record outside an episode"),
        (hdr + hdr, "header inside an unfinished episode"),
        (pack_record({"kind": "header", "format": "other.fmt", "version": 1, "frame_size": [H, W]}),
         "unsupported format 'other.fmt'"),
        (pack_record({"kind": "header", "format": FORMAT_NAME, "version": 2, "frame_size": [H, W]}),
         "unsupported version 2"),
        (pack_record({"kind": "header", "format": FORMAT_NAME, "version": True, "frame_size": [H, W]}),
         "unsupported version True"),
        (pack_record({"kind": "header", "format": FORMAT_NAME, "version": 1, "frame_size": [H]}), "frame_size"),
        (hdr + step_bytes(t=1), r"t=1 out of order \(expected t=0\)"),
        (hdr + step_bytes() + step_bytes(t=0), r"t=0 out of order \(expected t=1\)"),
        (hdr + step_bytes() + step_bytes(t=3), r"t=3 out of order \(expected t=1\)"),
        (hdr + step_bytes(frame=np.zeros((H, W, 4), np.uint8)), r"frame must be uint8"),
        (hdr + step_bytes(frame=None), r"frame must be uint8"),
        (hdr + step_bytes() + footer(2), "footer says steps=2 but the episode has 1 steps"),
        (hdr + step_bytes() + footer(1) + step_bytes(), "step record outside an episode"),
    ]
    for data, match in cases:
        corrupt(tmp_path, data, match)


def test_read_episode_needs_exactly_one(tmp_path):
    path = tmp_path / "two.rec"
    write_shard(path, episodes=2, steps=1)
    with pytest.raises(RecordingError, match="exactly one episode, found 2"):
        read_episode(path)


# --------------------------------------------------------------------------- docs


def doc_text() -> str:
    return (ROOT / "docs" / "recording-format.md").read_text()


def test_docs_decoder_reads_a_real_file(tmp_path):
    """Run the decoder printed in the docs on a real recording: the spec must match the code."""
    code = re.search(r"## Minimal decoder.*?```python\n(.*?)```", doc_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "recording-format.md", "exec"), namespace)
    path = tmp_path / "doc.rec"
    written = write_shard(path, episodes=2, steps=3)
    records = list(namespace["read_records"](path))
    assert [r["kind"] for r in records] == ["header", "step", "step", "step", "footer"] * 2
    ours = read_episodes(path)
    steps = [r for r in records if r["kind"] == "step"]
    for rec, mine in zip(steps, [s for ep in ours for s in ep.steps]):
        assert_same(mine, rec)
    assert_same(written[1][2]["state"], steps[5]["state"])
    with pytest.raises(ValueError, match="unknown ext type code 7"):
        msgpack.unpackb(msgpack.packb(msgpack.ExtType(7, b"")), ext_hook=namespace["ext_hook"])


def test_hand_written_ext_decoder_with_plain_unpackb(tmp_path):
    """Decode with nothing but msgpack.unpackb and the byte layout from the spec."""
    path = tmp_path / "plain.rec"
    write_shard(path, episodes=1, steps=2)

    def ext_hook(code, payload):
        assert code == 1
        dtype, shape, data = msgpack.unpackb(payload, raw=False)
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)

    unpacker = msgpack.Unpacker(raw=False, ext_hook=ext_hook)
    unpacker.feed(path.read_bytes())
    records = list(unpacker)
    assert records[0]["format"] == "simcore.recording" and records[0]["frame_size"] == [H, W]
    assert records[2]["frame"].shape == (H, W, 3) and records[2]["frame"].max() == 1
    assert records[1]["action"] is None and records[2]["action"] == 1
    assert records[-1]["kind"] == "footer" and records[-1]["steps"] == 2


def test_docs_byte_layout_example():
    example = pack_record(np.array([1.0, 2.0], dtype="<f4"))
    assert example == bytes.fromhex("c7 11 01 93 a3 3c 66 34 91 02 c4 08 00 00 80 3f 00 00 00 40")
    doc = doc_text()
    # the annotated dump in the spec shows exactly these bytes
    dumped = re.search(r"Example: .*?```\n(.*?)```", doc, re.S).group(1)
    hex_bytes = "".join(re.match(r"\s*((?:[0-9a-f]{2} ?)+)", line).group(1) for line in dumped.splitlines())
    assert bytes.fromhex(hex_bytes) == example
    frame_ext = pack_record(np.zeros((64, 64, 3), np.uint8))
    assert frame_ext[:4] == bytes.fromhex("c8 30 0c 01") and "`c8 30 0c 01`" in doc
    for dt in ALLOWED_DTYPES:
        assert f'`"{dt.replace("|", chr(92) + "|")}"`' in doc, dt


def test_no_object_serialization_in_source():
    source = (ROOT / "simcore" / "recording.py").read_text()
    assert "pickle" not in source.lower()
    assert "allow_pickle" not in source


def test_pathlike_and_str_paths(tmp_path):
    for p in (tmp_path / "p1.rec", str(tmp_path / "p2.rec"), os.fsencode(str(tmp_path / "p3.rec"))):
        with RecordingWriter(p) as w:
            w.begin_episode({"scene": "s", "frame_size": [H, W]})
            w.write_step({"frame": frame()})
        assert len(read_episode(p)) == 1
        assert [r["kind"] for r in iter_records(p)] == ["header", "step", "footer"]
