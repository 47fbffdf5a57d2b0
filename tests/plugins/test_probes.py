"""Physics probes (simcore.plugins.probes) and ``simcore probe``: ground-truth recordings
pass, planted violations (an erased ball, a wrong bounce, a teleport) are flagged."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import simcore
from simcore import raster
from simcore.cli import app
from simcore.collect import collect
from simcore.plugins import probes
from simcore.recording import RecordingWriter, read_episodes
from simcore.scene import BACKGROUND
from simcore.world import Transition

runner = CliRunner()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Ground-truth recordings (frames straight from the simulator), one file per scene."""
    root = tmp_path_factory.mktemp("probe-recordings")
    out = {}
    for name, scene, episodes, steps in (("uniform", "simcore/UniformMotion-v0", 2, 60),
                                         ("balls", "simcore/BouncingBalls-v0", 2, 50),
                                         ("projectile", "simcore/Projectile-v0", 3, 60),
                                         ("occlusion", "simcore/Occlusion-v0", 2, 60)):
        out[name] = collect(scene, episodes=episodes, steps=steps, out_dir=root / name, progress=False)["files"][0]
    return out


def draw(table, frame_size=(64, 64), skip=(), moved=None):
    """Re-render a ball scene's frame from its object table (as BallScene.render), leaving
    out the objects in ``skip`` and drawing ``moved`` {index: (x, y)} elsewhere."""
    frame = raster.blank(*frame_size, BACKGROUND)
    for i, ((x, y), r, c) in enumerate(zip(table["pos"], table["radius"], table["color"])):
        if i in skip:
            continue
        if moved and i in moved:
            x, y = moved[i]
        raster.draw_disc(frame, x, y, r, c)
    return frame


def rewrite(src, dst, change):
    """Copy recording ``src`` to ``dst`` with ``change(episode_index, t, step) -> frame | None``
    replacing frames (None keeps the recorded one)."""
    with RecordingWriter(dst, shard=True) as writer:
        for e, ep in enumerate(read_episodes(src)):
            writer.begin_episode(ep.header)
            for step in ep.steps:
                frame = change(e, step["t"], step)
                writer.write_step({**step, "frame": step["frame"] if frame is None else frame})
            writer.end_episode(**{k: v for k, v in (ep.footer or {}).items() if k not in ("kind", "steps", "return")})
    return dst


def probe_cli(path, tmp_path):
    out = tmp_path / f"{path.stem}.json"
    result = runner.invoke(app, ["probe", str(path), "--out", str(out)])
    return result, json.loads(out.read_text())


# ---------------------------------------------------------------------------
# ground truth passes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["balls", "occlusion"])
def test_untouched_recordings_pass(recordings, tmp_path, name):
    from pathlib import Path

    result, report = probe_cli(Path(recordings[name]), tmp_path)
    assert result.exit_code == 0, result.output
    assert "0 violation(s)" in result.output and "P8 H*" in result.output
    for ep in report["episodes"]:
        assert ep["violations"] == []
        assert ep["p5"]["events"] == {"vanish": 0, "appear": 0, "teleport": 0, "resize": 0}
        assert ep["p1"]["segments"] > 0 and ep["p1"]["vel_rel_err"] < 0.01
        # P8 on ground truth: never a radius off, H* is the whole horizon
        assert ep["p8"]["h_star"] == ep["p8"]["horizon"] == ep["steps"] - 1 and not ep["p8"]["exceeded"]
        assert ep["floor"]["p8"]["h_star"] == ep["p8"]["horizon"]


def test_p2_recovers_gravity_from_projectile_ground_truth(recordings):
    report = probes.probe_recording(recordings["projectile"])
    g_true = 120.0  # the scene's default gravity, px/s² at 64x64
    fits = [ep["p2"] for ep in report["episodes"] if ep["p2"]["segments"]]
    assert fits, "no free-flight arcs long enough for a parabola"
    for p2 in fits:
        assert p2["g_true"] == pytest.approx(g_true)
        assert p2["g_fit"] == pytest.approx(g_true, rel=0.02)
        assert p2["g_rel_err"] < 0.02
    assert report["violations"] == 0


def test_p1_and_p4_on_ground_truth_positions_are_exact(recordings):
    """With perception taken out (the truth's own positions), the fits are exact: the
    floor measures perception only."""
    from simcore import perception as P

    ep = read_episodes(recordings["uniform"])[0]
    params, truth = probes.episode_truth(ep)
    t, k = truth.radius.shape
    perfect = P.Track(truth.pos.copy(), truth.radius.copy(), np.pi * truth.radius ** 2, np.ones((t, k), bool),
                      np.zeros((t, k), np.int8), np.zeros((t, k), bool))
    assert probes.inertia(perfect, truth, params)["vel_rel_err"] < 1e-9
    p4 = probes.bounce(perfect, truth, params)
    assert p4["bounces"] > 0 and p4["restitution_err"] < 1e-6


def test_floor_has_a_hook_for_autoencoder_round_trips(recordings):
    ep = read_episodes(recordings["uniform"])[0]
    params, truth = probes.episode_truth(ep)
    calls = []

    def roundtrip(frames):  # stands in for encode + decode
        calls.append(frames.shape)
        return frames

    res = probes.probe_episode(ep.frames, truth, params, roundtrip=roundtrip)
    assert calls == [ep.frames.shape]
    assert res["floor_ae"]["p1"] == res["floor"]["p1"] and res["violations"] == []


def test_truth_is_rebuilt_by_resimulation_when_steps_lack_it(recordings, tmp_path):
    """Dreamed steps carry no object table; the header's seed and options re-run the scene."""
    src = recordings["balls"]
    stripped = tmp_path / "stripped.msgpack"
    with RecordingWriter(stripped, shard=True) as writer:
        for ep in read_episodes(src):
            writer.begin_episode(ep.header)
            for step in ep.steps:
                writer.write_step({**step, "state": {} if step["t"] >= 5 else step["state"]})
            writer.end_episode()
    for a, b in zip(read_episodes(src), read_episodes(stripped)):
        _, ta = probes.episode_truth(a)
        _, tb = probes.episode_truth(b)
        np.testing.assert_allclose(ta.pos, tb.pos)
        np.testing.assert_array_equal(ta.wall_hits, tb.wall_hits)


# ---------------------------------------------------------------------------
# planted violations are flagged
# ---------------------------------------------------------------------------


def test_an_erased_ball_is_flagged(recordings, tmp_path):
    def erase(e, t, step):  # ball 0 of episode 0 vanishes for five steps mid-episode
        return draw(step["state"], skip={0}) if e == 0 and 20 <= t < 25 else None

    bad = rewrite(recordings["balls"], tmp_path / "erased.msgpack", erase)
    result, report = probe_cli(bad, tmp_path)
    assert result.exit_code == 1, result.output
    ep0, ep1 = report["episodes"]
    assert ep0["p5"]["violation"] and ep0["p5"]["events"]["vanish"] == 1 and ep0["p5"]["events"]["appear"] == 1
    assert {(e["kind"], e["t"], e["object"]) for e in ep0["p5"]["details"]} >= {("vanish", 20, 0), ("appear", 25, 0)}
    assert any(v.startswith("P5") for v in ep0["violations"])
    assert ep1["violations"] == []  # the untouched episode still passes
    assert "violation" in result.output


def _first_clean_bounce(truth, params):
    """(t, axis, pre segment, post segment) of a wall bounce with long enough segments."""
    segs = probes.segments(truth, params)
    for k, t, axis, pre, post in probes._bounces(truth, params, segs):
        if pre[1] - pre[0] >= 3 and post[1] - post[0] >= 3:
            return t, axis, pre, post
    return None


def test_a_wrong_bounce_is_flagged(recordings, tmp_path):
    for bad_ep, ep in enumerate(read_episodes(recordings["uniform"])):
        params, truth = probes.episode_truth(ep)
        bounce = _first_clean_bounce(truth, params)
        if bounce is not None:
            break
    else:
        pytest.fail("no wall bounce with long enough free flight either side")
    t_hit, axis, _, (a, b) = bounce
    r = truth.radius[0, 0]
    wall = r if truth.vel[t_hit, 0, axis] > 0 else params.frame_size[::-1][axis] - r

    def half_bounce(e, t, step):  # after the hit the ball leaves the wall at half speed (e = 0.5)
        if e != bad_ep or not a <= t <= b:
            return None
        p = truth.pos[t, 0].copy()
        p[axis] = wall + 0.5 * (p[axis] - wall)
        return draw(step["state"], moved={0: p})

    bad = rewrite(recordings["uniform"], tmp_path / "bounce.msgpack", half_bounce)
    result, report = probe_cli(bad, tmp_path)
    assert result.exit_code == 1, result.output
    for e, ep in enumerate(report["episodes"]):
        if e != bad_ep:
            assert ep["violations"] == []
            continue
        assert any(v.startswith("P4") for v in ep["violations"]), ep["violations"]
        assert ep["p4"]["restitution_err"] > 0.1 and ep["floor"]["p4"]["restitution_err"] < 0.01


def test_a_teleport_is_flagged_and_cuts_the_drift_horizon(recordings, tmp_path):
    eps = read_episodes(recordings["uniform"])
    params, truth = probes.episode_truth(eps[0])
    t0 = 10
    r = truth.radius[0, 0]
    centre = np.array(params.frame_size[::-1]) / 2
    away = centre - truth.pos[t0, 0]
    offset = 3.5 * r * away / np.linalg.norm(away)  # jump 3.5 radii towards the middle

    def shift(e, t, step):
        if e != 0 or t < t0:
            return None
        return draw(step["state"], moved={0: truth.pos[t, 0] + offset})

    bad = rewrite(recordings["uniform"], tmp_path / "teleport.msgpack", shift)
    result, report = probe_cli(bad, tmp_path)
    assert result.exit_code == 1, result.output
    ep0 = report["episodes"][0]
    assert ep0["p5"]["events"]["teleport"] >= 1
    assert any(e["kind"] == "teleport" and e["t"] == t0 for e in ep0["p5"]["details"])
    assert ep0["p8"]["h_star"] == t0 and ep0["p8"]["exceeded"]  # a small H*: the first shifted step
    assert ep0["floor"]["p8"]["h_star"] == ep0["p8"]["horizon"]


def test_probe_command_help_and_missing_file(tmp_path):
    assert runner.invoke(app, ["probe", "--help"]).exit_code == 0
    result = runner.invoke(app, ["probe", str(tmp_path / "nope.msgpack")])
    assert result.exit_code != 0


# ---------------------------------------------------------------------------
# the live plugin
# ---------------------------------------------------------------------------


@pytest.fixture
def live():
    probes.enable(True)
    yield
    probes.enable(False)


def test_plugin_is_registered_and_quiet_by_default(pm):
    assert pm.get_plugin("probes") is probes
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm)
    _, info = world.reset(seed=0)
    _, _, _, _, info = world.step(0)
    assert "probes" not in info  # neither enabled nor dreaming: costs nothing


def test_live_metrics_when_enabled(pm, live):
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(3, 3))
    _, info = world.reset(seed=1)
    for _ in range(5):
        _, _, _, _, info = world.step(0)
        p = info["probes"]
        assert p["probe_objects_seen"] == p["probe_objects_expected"] == 3
        assert p["probe_radius_error"] < 0.02 and p["probe_position_error_px"] < 0.1


def test_live_metrics_while_dreaming_use_the_prompts_colours_and_sizes(pm):
    """A dreaming world's info has no object table: colours and radii come from its last
    simulated state, positions are not compared."""
    sim = simcore.make("simcore/Occlusion-v0", plugin_manager=pm, count=(2, 2))
    frame, _ = sim.reset(seed=2)
    dreaming = SimpleNamespace(dreaming=True, state=sim.state, scene=sim.scene)
    tr = Transition(7, frame, 0, 0.0, False, False, {"step": 7, "dream": True})
    p = probes.simcore_probe(world=dreaming, transition=tr)
    assert p["probe_objects_expected"] == 2 and "probe_position_error_px" not in p
    assert p["probe_objects_seen"] >= 1
    blank = raster.blank(64, 64, BACKGROUND)  # the model lost every ball
    p = probes.simcore_probe(world=dreaming, transition=Transition(8, blank, 0, 0.0, False, False, {"step": 8}))
    assert p["probe_objects_seen"] == 0 and "probe_radius_error" not in p


def test_live_probe_costs_under_a_millisecond_per_step(pm, live):
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(4, 4))
    frame, info = world.reset(seed=0)
    tr = Transition(0, frame, None, 0.0, False, False, info)
    for _ in range(20):
        probes.simcore_probe(world=world, transition=tr)
    times = []
    for _ in range(200):
        start = time.process_time()  # CPU time: not inflated by other processes
        probes.simcore_probe(world=world, transition=tr)
        times.append(time.process_time() - start)
    per_step = sum(times) / len(times)
    print(f"live probe: {per_step * 1e3:.3f} ms/step at 64x64, 4 balls")
    assert per_step < 2e-3  # measured ~0.3 ms; slack for slow CI machines


# ---------------------------------------------------------------------------
# P3 collision
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collision_recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-collision")
    return collect("simcore/Collision-v0", episodes=6, steps=40, out_dir=root, progress=False)["files"][0]


def test_p3_conserves_momentum_and_energy_on_collision_ground_truth(collision_recording, recordings, tmp_path):
    from pathlib import Path

    result, report = probe_cli(Path(collision_recording), tmp_path)
    assert result.exit_code == 0, result.output
    assert "P3" in result.output
    hits = [ep for ep in report["episodes"] if ep["p3"]["collisions"]]
    assert len(hits) >= 3, "the scene aims the balls at each other: most episodes collide"
    for ep in hits:
        p3 = ep["p3"]
        assert p3["momentum_err"] < 0.05 and p3["energy_err"] < 0.05, p3
        assert p3["elastic_err"] < 0.2 and ep["floor"]["p3"]["collisions"] == p3["collisions"]
        assert ep["violations"] == []
    # a one-ball scene has no P3 at all
    one = read_episodes(recordings["uniform"])[0]
    params, truth = probes.episode_truth(one)
    if truth.balls.sum() < 2:
        assert "p3" not in probes.probe_episode(one.frames, truth, params)


def test_p3_on_ground_truth_positions_is_exact(collision_recording):
    from simcore import perception as P

    for ep in read_episodes(collision_recording):
        params, truth = probes.episode_truth(ep)
        t, k = truth.radius.shape
        perfect = P.Track(truth.pos.copy(), truth.radius.copy(), np.pi * truth.radius ** 2, np.ones((t, k), bool),
                          np.zeros((t, k), np.int8), np.zeros((t, k), bool))
        p3 = probes.collision(perfect, truth, params)
        if p3["collisions"]:
            assert p3["momentum_err"] < 1e-9 and p3["energy_err"] < 1e-9
            # the contact normal is read where the fits touch; the simulator's substeps see the
            # overlap a little later, so the elastic comparison is close but not exact
            assert p3["elastic_err"] < 0.1


def test_a_ball_ignoring_a_collision_is_flagged(collision_recording, tmp_path):
    """After the hit, ball 1 keeps its pre-collision velocity (as if the other ball were not there)."""
    for bad_ep, ep in enumerate(read_episodes(collision_recording)):
        params, truth = probes.episode_truth(ep)
        res = probes.probe_episode(ep.frames, truth, params)
        if res["p3"]["collisions"]:
            t_hit = res["p3"]["details"][0]["t"]
            break
    else:
        pytest.fail("no collision with long enough free flight either side")
    p0, v0 = truth.pos[t_hit - 1, 1], truth.vel[t_hit - 1, 1]

    def ghost(e, t, step):
        if e != bad_ep or t < t_hit:
            return None
        return draw(step["state"], moved={1: p0 + v0 * params.dt * (t - t_hit + 1)})

    bad = rewrite(collision_recording, tmp_path / "ghost.msgpack", ghost)
    result, report = probe_cli(bad, tmp_path)
    assert result.exit_code == 1, result.output
    ep = report["episodes"][bad_ep]
    p3, floor = ep["p3"], ep["floor"]["p3"]
    print(f"planted: momentum {p3['momentum_err']:.3g} (floor {floor['momentum_err']:.3g}), "
          f"energy {p3['energy_err']:.3g} (floor {floor['energy_err']:.3g}), "
          f"elastic {p3['elastic_err']:.3g} (floor {floor['elastic_err']:.3g})")
    assert p3["collisions"] >= 1
    assert p3["momentum_err"] > 2 * floor["momentum_err"] + 0.05 and p3["momentum_err"] > 0.2
    assert any(v.startswith("P3") for v in ep["violations"]), ep["violations"]
