"""Every registered scene: Gymnasium contract, determinism, frame sizes, options."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import simcore
from simcore.errors import FrameSizeError, SceneOptionError

SCENES = simcore.create_plugin_manager(autoload=False)
SCENE_IDS = simcore.get_registry(SCENES).ids()
BALL_SCENES = [s for s in SCENE_IDS if "Pong" not in s]


def test_at_least_six_scenes_registered():
    assert len(SCENE_IDS) >= 6
    for sid in ("simcore/UniformMotion-v0", "simcore/Projectile-v0", "simcore/Collision-v0",
                "simcore/BouncingBalls-v0", "simcore/Occlusion-v0", "simcore/Pong-v0"):
        assert sid in SCENE_IDS


@pytest.mark.parametrize("scene_id", SCENE_IDS)
def test_check_env(scene_id):
    """Gymnasium's own checker, on the World that gymnasium.make builds (it has a spec,
    so the checker also exercises every render mode)."""
    import gymnasium

    simcore.list_scenes()  # builds the registry, which registers the ids with gymnasium
    env = gymnasium.make(scene_id, max_episode_steps=20, render_mode="rgb_array", disable_env_checker=True)
    assert isinstance(env.unwrapped, simcore.World)
    check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)


def rollout(scene_id, seed, steps=40, **kw):
    world = simcore.make(scene_id, **kw)
    obs, info = world.reset(seed=seed)
    world.action_space.seed(seed)
    frames, positions = [obs], [info["objects"]["pos"]]
    for _ in range(steps):
        obs, _, term, trunc, info = world.step(world.action_space.sample())
        frames.append(obs)
        positions.append(info["objects"]["pos"])
    return np.stack(frames), positions


@pytest.mark.parametrize("scene_id", SCENE_IDS)
def test_deterministic_given_seed(scene_id):
    a, pa = rollout(scene_id, seed=3)
    b, pb = rollout(scene_id, seed=3)
    c, _ = rollout(scene_id, seed=4)
    assert np.array_equal(a, b)
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape[1:] == (64, 64, 3)
    assert len({f.tobytes() for f in a}) > 5, "the scene should move"


@pytest.mark.parametrize("scene_id", SCENE_IDS)
@pytest.mark.parametrize("size", [(32, 48), (64, 128), (96, 64)])
def test_any_frame_size_divisible_by_8(scene_id, size):
    frames, positions = rollout(scene_id, seed=0, steps=10, frame_size=size)
    assert frames.shape[1:] == (*size, 3)
    for pos in positions:  # objects stay inside the frame (balls bounce off walls)
        assert (pos[:, 0] >= -8).all() and (pos[:, 0] <= size[1] + 8).all()


@pytest.mark.parametrize("size", [(60, 64), (64, 0), (64,), "64x64", (64.5, 64)])
def test_bad_frame_size(size):
    with pytest.raises(FrameSizeError, match="frame_size"):
        simcore.make("simcore/BouncingBalls-v0", frame_size=size)


def test_object_table_has_ground_truth():
    world = simcore.make("simcore/Collision-v0")
    _, info = world.reset(seed=0)
    objects = info["objects"]
    for key in ("pos", "vel", "radius", "size", "color", "mass", "visible"):
        assert len(objects[key]) == 2, key
    r = objects["radius"]
    assert np.allclose(objects["mass"] / objects["mass"][0], (r / r[0]) ** 2)  # masses ∝ area


def test_ball_drawn_where_the_state_says():
    world = simcore.make("simcore/UniformMotion-v0")
    frame, info = world.reset(seed=5)
    (x, y), r = info["objects"]["pos"][0], info["objects"]["radius"][0]
    alpha = (np.abs(frame.astype(float) - np.array(world.scene.background)).sum(-1) > 0).astype(float)
    ys, xs = np.nonzero(alpha)
    assert abs(xs.mean() + 0.5 - x) < 0.3 and abs(ys.mean() + 0.5 - y) < 0.3
    assert abs(np.sqrt(alpha.sum() / np.pi) - r) < 1.0


def test_options_at_reset_change_the_episode():
    world = simcore.make("simcore/BouncingBalls-v0")
    _, info = world.reset(seed=0, options={"count": 6, "radius_range": (3, 3), "colors": ["red"]})
    objects = info["objects"]
    assert len(objects["pos"]) == 6
    assert np.allclose(objects["radius"], 3.0)
    assert (objects["color"] == (230, 60, 60)).all()
    _, info = world.reset(seed=0)  # back to the world's defaults
    assert 2 <= len(info["objects"]["pos"]) <= 4


def test_held_out_ranges_are_respected():
    world = simcore.make("simcore/UniformMotion-v0", speed_range=(80, 100))
    for seed in range(5):
        _, info = world.reset(seed=seed)
        speed = np.hypot(*info["objects"]["vel"][0])
        assert 80 <= speed <= 100


def test_gravity_option_scales_with_frame_size():
    world = simcore.make("simcore/Projectile-v0", gravity=100.0, frame_size=(128, 128))
    world.reset(seed=0)
    assert world.state["gravity"][1] == pytest.approx(200.0)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"cuont": 3}, "unknown option 'cuont'.*Did you mean 'count'"),
        ({"count": (5, 2)}, "low must not exceed high"),
        ({"count": 1.5}, "integers"),
        ({"gravity": "down"}, "must be a number"),
        ({"gravity": float("nan")}, "finite"),
        ({"restitution": 1.5}, "<= 1.0"),
        ({"colors": ["chartreuse"]}, "unknown colour"),
        ({"collisions": 1}, "true or false"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(SceneOptionError, match=match):
        simcore.make("simcore/BouncingBalls-v0", **options)
    world = simcore.make("simcore/BouncingBalls-v0")
    with pytest.raises(SceneOptionError, match=match):
        world.reset(seed=0, options=options)


def test_frame_size_is_not_a_reset_option():
    world = simcore.make("simcore/BouncingBalls-v0")
    with pytest.raises(SceneOptionError, match="fixed when the world is made"):
        world.reset(options={"frame_size": (32, 32)})


def test_occluder_hides_balls():
    world = simcore.make("simcore/Occlusion-v0")
    hidden = 0
    for seed in range(3):
        world.reset(seed=seed)
        for _ in range(100):
            _, _, _, _, info = world.step(0)
            hidden += int((~info["objects"]["visible"]).sum())
    assert hidden > 0, "balls should pass fully behind the occluder sometimes"


def test_pong_actions_move_the_paddle_and_score():
    world = simcore.make("simcore/Pong-v0", points_to_win=1)
    _, info = world.reset(seed=0)
    y0 = info["objects"]["pos"][1][1]
    for _ in range(5):
        _, _, _, _, info = world.step(1)  # up
    assert info["objects"]["pos"][1][1] < y0
    for _ in range(10):
        _, _, _, _, info = world.step(2)  # down
    assert info["objects"]["pos"][1][1] > y0
    total, terminated = 0.0, False
    for _ in range(2000):  # standing still, someone scores eventually
        _, reward, terminated, _, info = world.step(0)
        total += reward
        if terminated:
            break
    assert terminated and total in (-1.0, 1.0)
    assert int(info["score"].max()) == 1
