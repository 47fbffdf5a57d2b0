"""Drift watchdog: quiet on a ground-truth run, fires on planted drift (a vanished ball,
a blown-up latent), re-anchors the context on the simulator's frame, logs each event;
wiring through the plugin manager, Session and CLI; clear errors for bad settings."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from simcore.plugins import watchdog

import simcore
from simcore import raster
from simcore.errors import BackendError, SimcoreError
from simcore.loop import Session
from simcore.model import WorldModel, config_for
from simcore.rollout import Rollout
from simcore.scene import BACKGROUND

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = "simcore/BouncingBalls-v0"
OPTS = {"count": (3, 3)}


@pytest.fixture(scope="module")
def tiny_model():
    cfg = config_for("tiny", scenes=(SCENE,), num_actions=3, cond_dims={"scene_params": 4})
    torch.manual_seed(0)
    return WorldModel(cfg).eval()


@pytest.fixture(autouse=True)
def _no_global_watchdog():
    yield
    watchdog.configure(None)


def oracle_worlds(pm, model, seed=5, plant=None):
    """A model world whose 'dreams' are the frames of a third, private simulator (a perfect
    model: ground truth through the real backend path), plus the lockstep reference.
    ``plant(t, frame, latent, oracle) -> (frame, latent)`` corrupts chosen steps."""
    mw = simcore.make(SCENE, backend="model", model=model, plugin_manager=pm, **OPTS)
    sw = simcore.make(SCENE, plugin_manager=pm, **OPTS)
    oracle = simcore.make(SCENE, plugin_manager=pm, **OPTS)
    d = mw.dreamer

    def dream(action, t):  # ModelBackend.dream with the oracle's frame instead of generate + decode
        frame = oracle_frame["now"]
        z = d._encode(frame)
        if plant is not None:
            frame, z = plant(t, frame, z, oracle)
        cond = d.conditioning(t)
        d.rollout.append(z, int(action) + 1, cond)
        d._dreamed(z, int(action) + 1, t, cond)
        return frame

    oracle_frame = {}
    d.dream = dream
    sw.reset(seed=seed)
    mw.reset(seed=seed)
    oracle_frame["now"], _ = oracle.reset(seed=seed)

    def step(action=0):
        oracle_frame["now"] = oracle.step(action)[0]
        mw.step(action)
        return sw.step(action)

    return mw, sw, step


def erase(frame: np.ndarray, table: dict, k: int) -> np.ndarray:
    """The frame with object k painted over with the background."""
    out = frame.copy()
    x, y = table["pos"][k]
    raster.draw_disc(out, x, y, table["radius"][k] + 1.5, BACKGROUND)
    return out


def test_a_ground_truth_run_never_fires(pm, tiny_model):
    mw, sw, step = oracle_worlds(pm, tiny_model)
    dog = watchdog.attach(mw, sw)
    for _ in range(60):
        step()
    assert dog.checked == 60 - (mw.dreamer.prompt_frames - 1) and dog.events == []
    assert dog.last_reading["position_err_radii"] < 0.05
    assert 0.9 < dog.last_reading["latent_rms"] / np.mean([r["rms"] for r in mw.dreamer.reference_stats]) < 1.1


def test_a_vanished_ball_fires_reanchors_and_logs(pm, tiny_model, caplog):
    def plant(t, frame, z, oracle):
        if t in (20, 21):  # ball 1 gone for two frames
            return erase(frame, oracle.scene.objects(oracle.state), 1), z
        return frame, z

    mw, sw, step = oracle_worlds(pm, tiny_model, plant=plant)
    dog = watchdog.attach(mw, sw, vanish_frames=2)
    caplog.set_level(logging.WARNING, logger="simcore.watchdog")
    for t in range(1, 30):
        count = mw.dreamer.rollout.count
        truth, *_ = step()
        if t == 20:
            assert dog.events == [] and dog.last_reading["position_err_radii"] < 0.05  # one frame: patience
        if t == 21:
            assert [e["step"] for e in dog.events] == [21]
            e = dog.events[0]
            assert "vanished: 1" in e["reason"] and e["action"] == "reanchor"
            # the newest context frame is now the encoded simulator frame, in place of the dream
            assert mw.dreamer.rollout.count == count + 1
            assert torch.equal(mw.dreamer.last_latent, mw.dreamer._encode(truth))
    assert len(dog.events) == 1
    assert any("vanished" in r.getMessage() and "reanchor" in r.getMessage() for r in caplog.records)


def test_a_blown_up_latent_without_a_simulator_raises_context_noise(pm, tiny_model):
    def plant(t, frame, z, oracle):
        return frame, (z * 8.0 if t == 12 else z)

    mw, _, step = oracle_worlds(pm, tiny_model, plant=plant)
    dog = watchdog.attach(mw, None, noise_level=0.1, noise_frames=3)
    base = mw.dreamer.rollout.ctx_noise
    levels = []
    for t in range(1, 20):
        step()
        levels.append(mw.dreamer.rollout.ctx_noise)
    assert [e["step"] for e in dog.events] == [12]
    assert "latent" in dog.events[0]["reason"] and dog.events[0]["action"] == "context_noise"
    # raised for the dreamed frames 13, 14, 15, then back to the model's level
    assert levels[11:14] == [0.1, 0.1, 0.1] and levels[14] == base and levels[10] == base


def test_reanchor_puts_the_encoded_frame_in_the_context(pm, tiny_model):
    """With an uncached, noise-free rollout the context holds the latents themselves: after
    reanchor the newest slot is exactly the encoded simulator frame, and the next frame
    equals the one a fresh rollout makes from the same context."""
    mw = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    sw = simcore.make(SCENE, plugin_manager=pm, **OPTS)
    sw.reset(seed=2)
    mw.reset(seed=2)
    d = mw.dreamer
    d.rollout = Rollout(d.model, steps=2, ctx_noise=0.0, use_cache=False, seed=9, scene=d.scene_index)
    truth = sw._frame
    d.rollout.append(d._encode(truth), 0, d.conditioning(0))
    d._last = (0, 0, d.conditioning(0))
    for t in range(1, 4):
        d.dream(0, t)
        truth, *_ = sw.step(0)
    newest = int(torch.argmax(d.rollout.slot_frame))
    count = d.rollout.count
    d.reanchor(truth)
    z = d._encode(truth)
    slot = int(torch.argmax(d.rollout.slot_frame))
    assert d.rollout.count == count and int(d.rollout.slot_frame[slot]) == count - 1 and slot == newest
    assert torch.equal(d.rollout.ctx_z[:, slot], z)

    with pytest.raises(BackendError, match="uint8"):
        d.reanchor(truth.astype(np.float32))


def test_session_wiring_fires_on_an_untrained_model_and_reports(pm, tiny_model):
    """An untrained model's dreams are noise: the objects vanish at once; the Session's
    compare twin is the watchdog's reference; the summary carries the log."""
    world = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    twin = simcore.make(SCENE, plugin_manager=pm, **OPTS)
    session = Session(world, compare=twin, seed=0, realtime=False, max_steps=12,
                      config={"watchdog": {"vanish_frames": 1}})
    summary = session.run()
    w = summary["watchdog"]
    assert w["events"] >= 1 and w["reanchors"] == w["events"] and w["checked"] == 12 - 2
    assert {"step", "reason", "action"} <= set(w["log"][0])
    assert watchdog.watchdog_of(world) is None  # detached at the end


def test_configured_globally_it_watches_worlds_without_a_session(pm, tiny_model):
    pm.hook.simcore_configure.call_historic(kwargs={"config": {"watchdog": {"vanish_frames": 1}}})
    world = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    world.reset(seed=0)
    for _ in range(6):
        world.step(0)
    dog = watchdog.watchdog_of(world)
    assert dog is not None and dog.reference is None and dog.events
    assert all(e["action"] == "context_noise" for e in dog.events)


def test_the_plugin_is_registered_and_quiet_unless_enabled(pm, tiny_model):
    hooks = {h.name for h in pm.get_hookcallers(pm.get_plugin("watchdog"))}
    assert hooks == {"simcore_configure", "simcore_session_start", "simcore_after_step", "simcore_session_finish"}
    world = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    summary = Session(world, seed=0, realtime=False, max_steps=5).run()
    assert "watchdog" not in summary and watchdog.watchdog_of(world) is None


@pytest.mark.parametrize("bad, match", [
    ({"threshold": 3}, "unknown watchdog setting.*threshold"),
    ({"position_radii": 0}, "position_radii must be positive"),
    ({"patience": 0}, "patience must be at least 1"),
    ({"action": "panic"}, "action must be one of"),
    ({"noise_level": 1.5}, "noise_level must be in"),
])
def test_bad_settings_are_clear_errors(pm, tiny_model, bad, match):
    world = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    with pytest.raises(SimcoreError, match=match):
        watchdog.attach(world, None, **bad)


def test_wrong_worlds_are_clear_errors(pm, tiny_model):
    sim = simcore.make(SCENE, plugin_manager=pm, **OPTS)
    model = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm, **OPTS)
    with pytest.raises(SimcoreError, match="backend='model'"):
        watchdog.attach(sim)
    with pytest.raises(SimcoreError, match="only re-anchor on a simulator"):
        watchdog.attach(model, None, action="reanchor")
    with pytest.raises(SimcoreError, match="backend='model'"):
        Session(sim, seed=0, realtime=False, max_steps=2, config={"watchdog": True}).run()


def test_cli_play_with_watchdog_reports_its_events(tmp_path, tiny_model, capsys):
    from simcore.checkpoint import save_model
    from simcore.cli import main as cli_main

    model_dir = save_model(tiny_model, tmp_path / "tiny")
    with pytest.raises(SystemExit) as exc:
        cli_main(["play", SCENE, "--headless", "--model", str(model_dir), "--watchdog", "--frames", "6",
                  "--out", str(tmp_path / "w.gif")])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "watchdog:" in out and "dreamed frames" in out


@pytest.mark.slow
def test_benchmark_quick_run_scores_every_condition(run_benchmark):
    """benchmarks/watchdog.py end to end with a tiny model (figures not checked)."""
    rep = run_benchmark("watchdog.py")
    assert {(r["scene"], r["condition"]) for r in rep["runs"]} == {
        (s, c) for s in ("simcore/BouncingBalls-v0", "simcore/Pong-v0") for c in ("off", "reanchor", "context_noise")}
    assert all(r["horizon"] > 0 and r["h_star"] >= 1 for r in rep["runs"])
    assert rep["summary"]["simcore/Pong-v0"]["off"]["rollouts"] == 1
