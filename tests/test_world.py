"""The World env: errors that name the problem, snapshots, vector envs, transitions."""
from __future__ import annotations

import numpy as np
import pytest

import simcore
from simcore.errors import BackendError, InvalidActionError, SimcoreError, UnknownSceneError


def test_unknown_scene_suggests_close_ids():
    with pytest.raises(UnknownSceneError, match="Did you mean simcore/Pong-v0"):
        simcore.make("simcore/Ponk-v0")


def test_unknown_backend():
    with pytest.raises(BackendError, match="unknown backend 'dream'.*sim"):
        simcore.make("simcore/Pong-v0", backend="dream")


@pytest.mark.parametrize("action", [3, -1, "up", 1.5, None, np.array([1, 2])])
def test_action_outside_space(action):
    world = simcore.make("simcore/Pong-v0")
    world.reset(seed=0)
    with pytest.raises(InvalidActionError, match="outside the action space.*0=noop, 1=up, 2=down"):
        world.step(action)


def test_step_before_reset():
    with pytest.raises(SimcoreError, match="reset"):
        simcore.make("simcore/Pong-v0").step(0)


def test_bad_render_mode():
    with pytest.raises(SimcoreError, match="render_mode"):
        simcore.make("simcore/Pong-v0", render_mode="ascii")


def test_truncation_at_max_episode_steps():
    world = simcore.make("simcore/BouncingBalls-v0", max_episode_steps=3)
    world.reset(seed=0)
    flags = [world.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_snapshot_restore_replays_identically():
    world = simcore.make("simcore/Pong-v0")
    world.reset(seed=7)
    for a in [1, 1, 2, 0]:
        world.step(a)
    snap = world.snapshot()
    actions = [2, 2, 1, 0, 0, 1] * 5
    first = [world.step(a)[0] for a in actions]
    world.restore(snap)
    second = [world.step(a)[0] for a in actions]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = simcore.make("simcore/BouncingBalls-v0")
    with pytest.raises(SimcoreError, match="cannot be restored"):
        other.restore(snap)


def test_info_carries_ground_truth():
    world = simcore.make("simcore/BouncingBalls-v0")
    obs, info = world.reset(seed=0)
    assert info["step"] == 0 and info["objects"]["pos"].shape[1] == 2
    _, _, _, _, info = world.step(0)
    assert info["step"] == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env(mode):
    envs = simcore.make_vec("simcore/Pong-v0", 3, vectorization_mode=mode)
    try:
        obs, info = envs.reset(seed=[0, 1, 2])
        assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
        single = simcore.make("simcore/Pong-v0")
        o1, _ = single.reset(seed=1)
        assert np.array_equal(obs[1], o1)
        actions = np.array([0, 1, 2])
        obs, rewards, term, trunc, info = envs.step(actions)
        assert obs.shape == (3, 64, 64, 3) and rewards.shape == (3,)
        assert np.array_equal(obs[1], single.step(1)[0])
    finally:
        envs.close()


def test_vector_env_errors_early():
    with pytest.raises(UnknownSceneError):
        simcore.make_vec("nope", 2)
    with pytest.raises(SimcoreError, match="num_envs"):
        simcore.make_vec("simcore/Pong-v0", 0)
