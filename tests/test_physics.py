"""Ball dynamics: exact projectile, elastic walls and collisions conserve what they should."""
from __future__ import annotations

import numpy as np
import pytest

import simcore
from simcore import physics


def test_ballistic_is_exact():
    pos, vel, g = np.array([[10.0, 50.0]]), np.array([[30.0, -80.0]]), np.array([0.0, 120.0])
    p, v = pos, vel
    for _ in range(10):
        p, v = physics.ballistic(p, v, g, 0.05)
    t = 0.5
    assert np.allclose(p, pos + vel * t + 0.5 * g * t * t)
    assert np.allclose(v, vel + g * t)


def test_walls_reflect_with_restitution():
    pos = np.array([[1.0, 30.0], [63.0, 30.0]])
    vel = np.array([[-10.0, 5.0], [10.0, 5.0]])
    r = np.array([4.0, 4.0])
    p, v, hit = physics.walls(pos, vel, r, (64, 64), restitution=0.5)
    assert hit.tolist() == [True, True]
    assert v.tolist() == [[5.0, 5.0], [-5.0, 5.0]]
    assert p[0, 0] == pytest.approx(4 + 0.5 * 3) and p[1, 0] == pytest.approx(60 - 0.5 * 3)


def test_collision_conserves_momentum_and_energy():
    pos = np.array([[30.0, 32.0], [37.0, 33.0]])
    vel = np.array([[20.0, 0.0], [-10.0, 3.0]])
    r = np.array([4.0, 6.0])
    m = np.pi * r**2
    p, v, hits = physics.collide(pos, vel, r, m)
    assert hits.tolist() == [1, 1]
    assert np.allclose(physics.momentum(v, m), physics.momentum(vel, m))
    assert physics.kinetic_energy(v, m) == pytest.approx(physics.kinetic_energy(vel, m))
    assert np.hypot(*(p[0] - p[1])) == pytest.approx(10.0)  # pushed apart to touching


@pytest.mark.parametrize("scene_id", ["simcore/BouncingBalls-v0", "simcore/Collision-v0"])
def test_scene_energy_is_conserved(scene_id):
    world = simcore.make(scene_id)
    for seed in range(3):
        world.reset(seed=seed)
        e0 = physics.kinetic_energy(world.state["vel"], world.state["mass"])
        for _ in range(200):
            world.step(0)
        e1 = physics.kinetic_energy(world.state["vel"], world.state["mass"])
        assert e1 == pytest.approx(e0, rel=1e-9)


def test_collision_scene_collides():
    world = simcore.make("simcore/Collision-v0")
    collided = 0
    for seed in range(10):
        world.reset(seed=seed)
        for _ in range(40):
            world.step(0)
        collided += int(world.state["ball_hits"][0] > 0)
    assert collided >= 8


def test_projectile_follows_gravity():
    world = simcore.make("simcore/Projectile-v0", gravity=100.0, restitution=1.0)
    _, info = world.reset(seed=2)
    vy = [info["objects"]["vel"][0][1]]
    for _ in range(5):
        _, _, _, _, info = world.step(0)
        vy.append(info["objects"]["vel"][0][1])
    if info["objects"]["wall_hits"][0] == 0:
        assert np.allclose(np.diff(vy), 100.0 * world.scene.dt)
