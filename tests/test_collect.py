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


def _holds(policy, steps):
    """(actions, hold lengths) of ``steps`` calls; a hold starts when the policy draws."""
    actions, holds = [], []
    for _ in range(steps):
        fresh = policy.left == 0
        actions.append(int(policy(None, {})))
        if fresh:
            holds.append(policy.left + 1)
    return actions, holds


def _runs(actions):
    """Lengths of the runs of equal consecutive actions."""
    runs = [1]
    for prev, cur in zip(actions, actions[1:]):
        if cur == prev:
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def test_sticky_policy_holds_uniform_actions_3_to_8_steps():
    import simcore
    from simcore.agents import HeldRandomPolicy

    space = simcore.make("simcore/Pong-v0").action_space
    actions, holds = _holds(HeldRandomPolicy(space, seed=3), 2000)
    assert sum(holds) >= 2000 and sum(holds[:-1]) < 2000  # the last hold may be cut short
    assert set(holds) == set(range(3, 9))
    assert set(actions) == {0, 1, 2}
    assert all(r >= 3 for r in _runs(actions)[:-1])  # equal draws in a row merge, never split
    again, _ = _holds(HeldRandomPolicy(space, seed=3), 2000)
    other, _ = _holds(HeldRandomPolicy(space, seed=4), 2000)
    assert again == actions and other != actions


def test_sticky_policy_on_a_scene_without_actions():
    import simcore
    from simcore.agents import HeldRandomPolicy

    space = simcore.make("simcore/BouncingBalls-v0").action_space
    policy = HeldRandomPolicy(space, seed=0)
    assert [int(policy(None, {})) for _ in range(20)] == [0] * 20


def test_collect_sticky_records_held_runs(tmp_path):
    kw = dict(episodes=2, steps=40, shard_size=1, progress=False, seed=5, policy="sticky")
    one = _all(collect("simcore/Pong-v0", out_dir=tmp_path / "a", **kw)["files"])
    two = _all(collect("simcore/Pong-v0", out_dir=tmp_path / "b", workers=2, **kw)["files"])
    assert [x.actions for x in one] == [y.actions for y in two]  # seeded per episode, not per worker
    assert one[0].actions != one[1].actions
    for ep in one:
        actions = [int(a) for a in ep.actions[1:]]
        runs = _runs(actions)
        assert len(runs) >= 3 and all(r >= 3 for r in runs[:-1]), runs
        assert set(actions) <= {0, 1, 2}
