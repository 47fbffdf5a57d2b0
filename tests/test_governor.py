"""Frame-deadline governor: the controller on injected frame times (no sleeping, no
races), and the plugin holding a target inside a real Session with a fake clock."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from simcore.plugins import governor as governor_plugin

import simcore
from simcore.cli import main as cli_main
from simcore.errors import SimcoreError
from simcore.governor import GovernorSettings, StepGovernor
from simcore.loop import Session
from simcore.model import WorldModel, config_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = "simcore/BouncingBalls-v0"


def cost(steps: int, base: float = 0.010, per_pass: float = 0.006, load: float = 1.0) -> float:
    """A frame's seconds: a fixed part plus steps + 1 DiT passes, all slowed by ``load``."""
    return load * (base + per_pass * (steps + 1))


def drive(gov: StepGovernor, frames: int, load: float = 1.0, **kw) -> list[int]:
    out = []
    for _ in range(frames):
        s = gov.steps
        gov.update(cost(s, load=load, **kw), pass_seconds=load * kw.get("per_pass", 0.006))
        out.append(gov.steps)
    return out


# ---------------------------------------------------------------------------
# the controller
# ---------------------------------------------------------------------------


def test_headroom_raises_steps_to_the_top_and_no_further():
    gov = StepGovernor(GovernorSettings(target_fps=10), steps=1)  # 100 ms budget, 8 steps cost 64 ms
    steps = drive(gov, 80)
    assert steps[0] == 1 and steps[-1] == 8 and max(steps) == 8
    assert all(b - a in (0, 1) for a, b in zip(steps, steps[1:]))  # one step up at a time


def test_a_slow_spell_lowers_steps_at_once_and_headroom_brings_them_back():
    gov = StepGovernor(GovernorSettings(target_fps=20), steps=4)  # 50 ms: 5 steps (46 ms) would not fit 0.85
    before = drive(gov, 60)
    assert before[-1] == 4 and len(set(before[-30:])) == 1  # settled, no oscillation
    slow = drive(gov, 30, load=2.0)  # every frame twice as slow (a CPU hog arrived)
    assert slow[2] < 4  # reacts within a few frames (EMA)
    settled = slow[-1]
    assert cost(settled, load=2.0) <= 0.95 * 0.05 and settled >= 1
    assert cost(settled + 1, load=2.0) > 0.85 * 0.05  # the most steps that fit
    after = drive(gov, 80)
    assert after[-1] == 4  # quality comes back when the load goes


def test_steps_never_leave_their_bounds_on_wild_frame_times():
    rng = np.random.default_rng(0)
    gov = StepGovernor(GovernorSettings(target_fps=30, min_steps=2, max_steps=5), steps=9)
    assert gov.steps == 5  # a start outside the range is clamped
    for x in rng.exponential(0.05, 2000).tolist() + [0.0, 10.0, 1e-9] * 20:
        s = gov.update(x, pass_seconds=float(rng.uniform(0.001, 0.02)))
        assert 2 <= s <= 5


def test_steady_noise_does_not_make_it_oscillate():
    rng = np.random.default_rng(1)
    gov = StepGovernor(GovernorSettings(target_fps=20), steps=4)
    for _ in range(400):
        s = gov.steps
        gov.update(cost(s) * float(rng.uniform(0.95, 1.05)), pass_seconds=0.006)
    assert gov.changes <= 3


def test_saturation_is_reported_when_the_target_cannot_be_held():
    gov = StepGovernor(GovernorSettings(target_fps=100), steps=4)  # 10 ms: even 1 step costs 22 ms
    drive(gov, 20)
    assert gov.steps == 1 and gov.saturated and gov.summary()["saturated"]


@pytest.mark.parametrize("bad, match", [
    ({"target_fps": 0}, "target FPS must be a positive number"),
    ({"target_fps": -5}, "target FPS must be a positive number"),
    ({"target_fps": "fast"}, "target FPS must be a positive number"),
    ({"target_fps": float("inf")}, "target FPS must be a positive number"),
    ({"target_fps": 10, "turbo": True}, "unknown governor setting.*turbo"),
    ({"min_steps": 2}, "needs target_fps"),
    ({"target_fps": 10, "min_steps": 5, "max_steps": 3}, "min_steps <= max_steps"),
    ({"target_fps": 10, "low": 0.9, "high": 0.8}, "low < high"),
    ([10], "a target FPS or a dict"),
])
def test_bad_settings_are_clear_errors(bad, match):
    with pytest.raises(SimcoreError, match=match):
        GovernorSettings.from_config(bad)


def test_bad_frame_time_is_an_error():
    gov = StepGovernor(20)
    with pytest.raises(SimcoreError, match="frame time"):
        gov.update(float("nan"))


# ---------------------------------------------------------------------------
# the plugin in a Session (fake clock)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    cfg = config_for("tiny", scenes=(SCENE,), num_actions=3, cond_dims={"scene_params": 4})
    torch.manual_seed(0)
    return WorldModel(cfg).eval()


class FakeTime:
    """A clock that moves only when told: ``sleep`` advances it, and so does each dreamed
    frame, by a cost that depends on the model's current steps."""

    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FrameCost:
    """A plugin that charges each dreamed frame ``cost(steps) * load`` of fake time: the
    DiT passes while the frame is being made (the conditioning hook runs inside the
    backend's timed ``generate``), the fixed part after it."""

    def __init__(self, fake: FakeTime):
        self.fake, self.load, self.steps_seen = fake, 1.0, []

    @simcore.hookimpl
    def simcore_conditioning(self, world, step):
        if world.dreaming:
            self.fake.now += self.load * 0.006 * (world.dreamer.rollout.steps + 1)

    @simcore.hookimpl
    def simcore_after_step(self, world, transition):
        if transition.info.get("dream"):
            s = world.dreamer.rollout.steps
            self.steps_seen.append(s)
            self.fake.now += cost(s, load=self.load) - self.load * 0.006 * (s + 1)


def run_session(pm, model, config, steps=120, load_from=None, denoise_steps=None):
    fake = FakeTime()
    charge = FrameCost(fake)
    pm.register(charge, name="frame-cost")
    world = simcore.make(SCENE, backend="model", model=model, plugin_manager=pm, denoise_steps=denoise_steps)
    times = []

    class Watch:
        @simcore.hookimpl
        def simcore_render(self, session, frames):
            times.append(fake.now)
            if load_from is not None and session.steps >= load_from:
                charge.load = 2.0

    pm.register(Watch(), name="watch")
    session = Session(world, seed=0, fps=20, realtime=True, max_steps=steps, config=config,
                      clock=fake.clock, sleep=fake.sleep)
    summary = session.run()
    pm.unregister(name="frame-cost")
    pm.unregister(name="watch")
    return summary, charge.steps_seen, np.array(times), session


def test_the_plugin_holds_the_target_where_fixed_steps_fall_behind(pm, tiny_model):
    """Target 20 fps (50 ms). Fixed 8 steps cost 64 ms a frame: the loop falls behind.
    Governed, the steps settle where a frame fits, and the render rate holds."""
    fixed, _, _, _ = run_session(pm, tiny_model, {}, steps=40, denoise_steps=8)
    assert fixed["steps_per_second"] < 0.85 * 20

    summary, steps, times, session = run_session(pm, tiny_model, {"governor": {"target_fps": 20}}, steps=90,
                                                 denoise_steps=8)
    g = summary["governor"]
    assert g["target_fps"] == 20 and 1 <= min(steps) and max(steps) <= 8
    # settled on the most steps that fit: 4 (40 ms) or 5 (46 ms) both lie in the hysteresis band
    assert cost(steps[-1]) <= 0.95 * 0.05 < cost(steps[-1] + 1) + 0.10 * 0.05 and steps[-1] in (4, 5)
    assert g["changes"] <= 4 and len(set(steps[-30:])) == 1
    rate = (len(times[-31:]) - 1) / (times[-1] - times[-31])  # frames/s over the last 30 ticks
    assert abs(rate - 20) <= 0.1 * 20
    assert session.world.dreamer.steps == steps[-1]


def test_governed_session_adapts_to_a_load_that_starts_partway(pm, tiny_model):
    _, steps, times, _ = run_session(pm, tiny_model, {"governor": {"target_fps": 20}}, steps=110,
                                           load_from=50)
    before = steps[45]
    assert before in (4, 5)  # before the load: as above
    assert steps[-1] < before and cost(steps[-1], load=2.0) <= 0.95 * 0.05  # after it: fewer steps that fit
    rate = (len(times[-31:]) - 1) / (times[-1] - times[-31])
    assert abs(rate - 20) <= 0.1 * 20


def test_api_attach_governs_a_world_stepped_by_hand(pm, tiny_model):
    world = simcore.make(SCENE, backend="model", model=tiny_model, plugin_manager=pm)
    fake = FakeTime()
    world.dreamer.clock = fake.clock
    pm.register(FrameCost(fake), name="frame-cost")
    gov = governor_plugin.attach(world, target_fps=20, start_steps=1)
    world.reset(seed=3)
    for _ in range(40):
        world.step(0)
    assert gov.steps == 4 == world.dreamer.rollout.steps  # 5 steps (46 ms) would not fit under 0.85 x 50 ms
    assert gov.pass_ema == pytest.approx(0.006)  # the pass cost, measured inside the backend's generate
    assert governor_plugin.detach(world) is gov and governor_plugin.governor_of(world) is None


def test_the_plugin_is_wired_through_the_plugin_manager(pm):
    assert {"governor", "watchdog"} <= {name for name, _ in pm.list_name_plugin()}
    hooks = {h.name for h in pm.get_hookcallers(pm.get_plugin("governor"))}
    assert hooks == {"simcore_session_start", "simcore_after_step", "simcore_render", "simcore_session_finish"}
    off = simcore.create_plugin_manager(autoload=False, disable=["governor"])
    assert off.get_plugin("governor") is None


def test_a_sim_world_cannot_be_governed(pm):
    world = simcore.make(SCENE, plugin_manager=pm)
    with pytest.raises(SimcoreError, match="backend='model'"):
        Session(world, seed=0, realtime=False, max_steps=2, config={"governor": {"target_fps": 10}}).run()


def test_cli_rejects_a_bad_target_fps(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["play", "--headless", "--target-fps", "0", "--frames", "2"])
    assert exc.value.code == 2
    assert "target FPS must be a positive number" in capsys.readouterr().err


def test_cli_play_with_a_target_fps_reports_the_governor(tmp_path, tiny_model, capsys):
    from simcore.checkpoint import save_model

    model_dir = save_model(tiny_model, tmp_path / "tiny")
    with pytest.raises(SystemExit) as exc:
        cli_main(["play", SCENE, "--headless", "--model", str(model_dir), "--target-fps", "15", "--frames", "8",
                  "--out", str(tmp_path / "p.gif")])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "governor: target 15 fps" in out and (tmp_path / "p.gif").exists()


@pytest.mark.slow
def test_benchmark_quick_run_writes_every_part(run_benchmark):
    """benchmarks/governor.py end to end with a tiny model (timings not checked)."""
    rep = run_benchmark("governor.py")
    assert rep["benchmark"] == "governor" and "cores" in rep["machine"]
    assert set(rep["ms_per_frame_idle"]) == {str(s) for s in range(1, 9)}
    assert {r["mode"] for r in rep["load_runs"]} == {"governed", "fixed_4_steps"}
    for scene in ("simcore/Pong-v0", "simcore/BouncingBalls-v0"):
        assert set(rep["quality"][scene]["psnr_db"]) == {str(s) for s in range(1, 9)}
