"""simcore collect: shards on disk, deterministic regardless of worker count."""
from __future__ import annotations

import numpy as np
import pytest

from simcore.collect import collect
from simcore.errors import SceneOptionError, SimcoreError, UnknownSceneError
from simcore.recording import read_episodes


def _all(files):
    return [ep for f in files for ep in read_episodes(f)]


def test_collect_writes_readable_shards(tmp_path):
    summary = collect("simcore/Pong-v0", episodes=5, steps=12, out_dir=tmp_path, shard_size=2, progress=False,
                      seed=10)
    assert len(summary["files"]) == 3
    episodes = _all(summary["files"])
    assert len(episodes) == 5
    assert [ep.header["seed"] for ep in episodes] == [10, 11, 12, 13, 14]
    for ep in episodes:
        assert ep.footer is not None and not ep.truncated
        assert ep.frames.shape[1:] == (64, 64, 3)
        assert ep.actions[0] is None and all(a in (0, 1, 2) for a in ep.actions[1:])
        assert ep.steps[-1]["is_last"]
        assert "pos" in ep.steps[0]["state"]
    assert summary["frames"] == sum(len(ep) for ep in episodes)
    assert not list(tmp_path.glob("*.tmp"))


def test_recorded_frames_match_the_simulator(tmp_path):
    import simcore

    summary = collect("simcore/BouncingBalls-v0", episodes=1, steps=10, out_dir=tmp_path, progress=False, seed=4,
                      options={"count": 3})
    ep = _all(summary["files"])[0]
    world = simcore.make("simcore/BouncingBalls-v0", count=3)
    obs, _ = world.reset(seed=4)
    frames = [obs] + [world.step(0)[0] for _ in range(10)]
    assert np.array_equal(ep.frames, np.stack(frames))


def test_two_workers_write_the_same_data_as_one(tmp_path):
    one = collect("simcore/Pong-v0", episodes=4, steps=8, out_dir=tmp_path / "a", shard_size=1, progress=False)
    two = collect("simcore/Pong-v0", episodes=4, steps=8, out_dir=tmp_path / "b", shard_size=1, workers=2,
                  progress=False)
    a, b = _all(one["files"]), _all(two["files"])
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert np.array_equal(x.frames, y.frames) and x.actions == y.actions


def test_collect_rejects_bad_input_before_writing(tmp_path):
    with pytest.raises(UnknownSceneError):
        collect("simcore/Nope-v0", episodes=1, steps=1, out_dir=tmp_path / "x", progress=False)
    with pytest.raises(SceneOptionError, match="count"):
        collect("simcore/BouncingBalls-v0", episodes=1, steps=1, out_dir=tmp_path / "x", progress=False,
                options={"count": -1})
    with pytest.raises(SimcoreError, match="policy"):
        collect("simcore/Pong-v0", episodes=1, steps=1, out_dir=tmp_path / "x", policy="smart", progress=False)
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


def test_collect_refuses_to_overwrite(tmp_path):
    collect("simcore/Pong-v0", episodes=1, steps=2, out_dir=tmp_path, progress=False)
    with pytest.raises(SimcoreError, match="already exists"):
        collect("simcore/Pong-v0", episodes=1, steps=2, out_dir=tmp_path, progress=False)
