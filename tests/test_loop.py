"""The fixed-timestep Session loop, driven by a fake clock."""
from __future__ import annotations

import numpy as np
import pytest

import simcore
from simcore import hookimpl
from simcore.errors import SimcoreError
from simcore.loop import Session

FPS = 8  # dt = 0.125 s: exact in binary floating point


class FakeClock:
    """``clock()`` returns ``t``; ``sleep(s)`` advances it."""

    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.t += seconds


class Probe:
    """Test plugin: records every render and step; rendering frame ``n`` (1-based)
    costs ``costs[n]`` seconds of the fake clock; ``actions[n]`` runs a callback."""

    def __init__(self, clock: FakeClock | None = None, costs=None, actions=None, hook_action=None):
        self.clock = clock
        self.costs = costs or {}
        self.actions = actions or {}
        self.hook_action = hook_action
        self.steps_at_render: list[int] = []
        self.t_at_render: list[int] = []
        self.frames: list[dict[str, np.ndarray]] = []
        self.stepped_actions: list = []
        self.started = 0
        self.summaries: list[dict] = []

    @hookimpl
    def simcore_session_start(self, session):
        self.started += 1

    @hookimpl
    def simcore_render(self, session, frames):
        self.steps_at_render.append(session.steps)
        self.t_at_render.append(session.world.t)
        self.frames.append({k: v.copy() for k, v in frames.items()})
        n = session.frames
        if self.clock is not None:
            self.clock.t += self.costs.get(n, 0.0)
        if n in self.actions:
            self.actions[n](session)

    @hookimpl
    def simcore_after_step(self, world, transition):
        if transition.action is not None:
            self.stepped_actions.append((id(world), transition.action))

    @hookimpl
    def simcore_action(self, session, observation, info):
        return self.hook_action

    @hookimpl
    def simcore_session_finish(self, session, summary):
        self.summaries.append(summary)


def setup(pm, scene="simcore/BouncingBalls-v0", probe=None, **make_kwargs):
    world = simcore.make(scene, plugin_manager=pm, **make_kwargs)
    probe = probe or Probe()
    pm.register(probe)
    return world, probe


def test_accumulator_runs_the_updates_the_elapsed_time_owes(pm):
    clock = FakeClock()
    world, probe = setup(pm, probe=Probe(clock, costs={2: 0.375, 4: 0.3}))
    summary = Session(world, seed=0, fps=FPS, max_frames=6, clock=clock, sleep=clock.sleep).run()
    # tick 1: reset frame; then 1 update per 0.125 s tick, 3 after a 0.375 s render,
    # 2 after a 0.3 s one (0.05 s carried over, which makes no extra update at 0.175 s)
    assert probe.steps_at_render == [0, 1, 4, 5, 7, 8]
    assert summary["steps"] == 8 and summary["frames"] == 6 and summary["dropped"] == 0
    assert clock.sleeps and all(s == pytest.approx(0.125) for s in clock.sleeps)
    assert summary["wall_time"] == pytest.approx(clock.t)


def test_leftover_time_carries_over_and_short_renders_sleep_the_rest(pm):
    clock = FakeClock()
    world, probe = setup(pm, probe=Probe(clock, costs={n: 0.1875 for n in range(1, 7)}))  # 1.5 ticks
    Session(world, seed=0, fps=FPS, max_frames=6, clock=clock, sleep=clock.sleep).run()
    assert probe.steps_at_render == [0, 1, 3, 4, 6, 7]  # 1.5 updates per tick on average
    assert clock.sleeps == []

    clock2 = FakeClock()
    world2, probe2 = setup(pm, probe=Probe(clock2, costs={n: 0.05 for n in range(1, 6)}))
    pm.unregister(probe)
    Session(world2, seed=0, fps=FPS, max_frames=5, clock=clock2, sleep=clock2.sleep).run()
    assert probe2.steps_at_render == [0, 1, 2, 3, 4]
    assert clock2.sleeps == pytest.approx([0.075] * 4)  # the tick's rest after a 0.05 s render


def test_substeps_are_capped_and_the_excess_time_dropped(pm):
    clock = FakeClock()
    world, probe = setup(pm, probe=Probe(clock, costs={2: 1.0}))
    session = Session(world, seed=0, fps=FPS, max_substeps=3, max_frames=5, clock=clock, sleep=clock.sleep)
    summary = session.run()
    # 1.0 s owes 8 updates: 3 run, 5 dropped, and no catching up afterwards
    assert probe.steps_at_render == [0, 1, 4, 5, 6]
    assert summary["dropped"] == 5 == session.dropped


def test_render_runs_every_tick_while_paused_without_updates(pm):
    clock = FakeClock()
    actions = {2: Session.pause, 5: Session.resume}
    world, probe = setup(pm, probe=Probe(clock, costs={3: 2.0}, actions=actions))
    session = Session(world, seed=0, fps=FPS, max_frames=8, clock=clock, sleep=clock.sleep)
    session.run()
    assert len(probe.steps_at_render) == 8
    # paused after frame 2: frames 3-5 show step 1; the 2 s spent paused are not caught up
    assert probe.steps_at_render == [0, 1, 1, 1, 1, 2, 3, 4]
    assert not session.paused


def test_step_once_advances_exactly_one_update(pm):
    world, probe = setup(pm, probe=Probe(actions={2: Session.pause, 4: Session.step_once, 7: Session.step_once}))
    session = Session(world, seed=0, realtime=False, max_frames=10, sleep=_no_sleep)
    session.run()
    assert probe.steps_at_render == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert session.paused


def test_step_once_pauses_a_running_session(pm):
    world, probe = setup(pm, probe=Probe(actions={3: Session.step_once}))
    Session(world, seed=0, realtime=False, max_frames=6, sleep=_no_sleep).run()
    assert probe.steps_at_render == [0, 1, 2, 3, 3, 3]


def test_request_reset_starts_a_new_episode_with_the_next_seed(pm):
    world, probe = setup(pm, probe=Probe(actions={4: Session.request_reset}))
    session = Session(world, seed=5, realtime=False, max_frames=7, sleep=_no_sleep)
    session.run()
    assert probe.t_at_render == [0, 1, 2, 3, 1, 2, 3]  # reset, then one update on that tick
    assert session.episodes == 0 and session.returns == []  # a manual reset finishes nothing
    fresh = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm)
    fresh.reset(seed=6)
    obs, *_ = fresh.step(0)
    np.testing.assert_array_equal(probe.frames[4]["world"], obs)


def test_auto_reset_when_an_episode_is_truncated(pm):
    world, probe = setup(pm, max_episode_steps=3)
    summary = Session(world, seed=10, realtime=False, max_steps=7, sleep=_no_sleep).run()
    assert summary["episodes"] == 2 and len(summary["returns"]) == 2
    assert probe.t_at_render == [0, 1, 2, 0, 1, 2, 0, 1]
    # the episode after the first one uses seed + 1
    fresh = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm)
    obs, _ = fresh.reset(seed=11)
    np.testing.assert_array_equal(probe.frames[3]["world"], obs)


def test_auto_reset_when_pong_terminates(pm):
    stop_after_episode = {n: (lambda s: s.episodes and s.stop()) for n in range(1, 400)}
    world, probe = setup(pm, "simcore/Pong-v0", probe=Probe(actions=stop_after_episode), points_to_win=1)
    session = Session(world, seed=0, realtime=False, max_steps=400, sleep=_no_sleep)
    summary = session.run()
    assert summary["episodes"] == 1
    assert summary["returns"] in ([1.0], [-1.0])
    assert world.t == 0 and session.episode_return == 0.0  # already reset into episode 2
    assert summary["steps"] < 400


def test_policy_beats_hook_beats_noop(pm):
    world, probe = setup(pm, "simcore/Pong-v0", probe=Probe(hook_action=2))
    Session(world, policy=lambda obs, info: 1, seed=0, realtime=False, max_steps=3, sleep=_no_sleep).run()
    assert [a for _, a in probe.stepped_actions] == [1, 1, 1]

    probe.stepped_actions.clear()
    Session(world, seed=0, realtime=False, max_steps=3, sleep=_no_sleep).run()
    assert [a for _, a in probe.stepped_actions] == [2, 2, 2]

    probe.stepped_actions.clear()
    probe.hook_action = None
    Session(world, seed=0, realtime=False, max_steps=3, sleep=_no_sleep).run()
    assert [a for _, a in probe.stepped_actions] == [world.scene.noop_action] * 3


def test_policy_receives_the_current_observation_and_info(pm):
    world, _ = setup(pm, "simcore/Pong-v0")
    seen = []

    def policy(obs, info):
        seen.append((obs.copy(), info["step"]))
        return 0

    session = Session(world, policy=policy, seed=1, realtime=False, max_steps=4, sleep=_no_sleep)
    session.run()
    assert [step for _, step in seen] == [0, 1, 2, 3]
    assert seen[0][0].shape == world.observation_space.shape


@pytest.mark.parametrize("seed", [3, None])
def test_compare_world_stays_in_lockstep(pm, seed):
    world, probe = setup(pm, "simcore/Pong-v0", max_episode_steps=15)
    compare = simcore.make("simcore/Pong-v0", plugin_manager=pm, max_episode_steps=15)
    policy = world.scene.demo_policy(seed=0)
    session = Session(world, compare=compare, policy=policy, seed=seed, realtime=False, max_steps=40,
                      sleep=_no_sleep)
    session.run()
    assert len(probe.frames) == 41
    for frames in probe.frames:
        np.testing.assert_array_equal(frames["world"], frames["compare"])
    assert not np.array_equal(probe.frames[0]["world"], probe.frames[10]["world"])  # it moved
    worlds = {w for w, _ in probe.stepped_actions}
    assert worlds == {id(world), id(compare)}
    assert session.episodes == 2 and compare.t == world.t == 10


def test_realtime_false_runs_one_update_per_tick_and_never_sleeps(pm):
    clock = FakeClock()
    world, probe = setup(pm, probe=Probe(clock, costs={3: 5.0}))
    session = Session(world, seed=0, realtime=False, max_frames=6, clock=clock, sleep=_no_sleep)
    session.run()
    assert probe.steps_at_render == [0, 1, 2, 3, 4, 5]
    assert session.dropped == 0


def test_stop_max_steps_and_hooks(pm):
    world, probe = setup(pm, probe=Probe(actions={3: Session.stop}))
    session = Session(world, seed=0, realtime=False, sleep=_no_sleep)
    summary = session.run()
    assert session.frames == 3 and probe.started == 1 and probe.summaries == [summary]
    for key in ("steps", "episodes", "frames", "wall_time", "steps_per_second", "returns"):
        assert key in summary
    with pytest.raises(SimcoreError, match="runs once"):
        session.run()

    pm.unregister(probe)
    world2, _ = setup(pm)
    assert Session(world2, seed=0, realtime=False, max_steps=4, sleep=_no_sleep).run()["steps"] == 4


def test_measured_fps_and_recording_toggle(pm):
    clock = FakeClock()
    world, _ = setup(pm, probe=Probe(clock, actions={2: Session.toggle_recording}))
    session = Session(world, seed=0, fps=FPS, max_frames=20, clock=clock, sleep=clock.sleep)
    summary = session.run()
    assert session.fps == pytest.approx(FPS)
    assert summary["steps_per_second"] == pytest.approx(19 / (19 * 0.125))
    assert session.recording is True


def test_finish_hook_runs_when_the_loop_fails(pm):
    def boom(session):
        raise RuntimeError("boom")

    world, probe = setup(pm, probe=Probe(actions={2: boom}))
    with pytest.raises(RuntimeError, match="boom"):
        Session(world, seed=0, realtime=False, max_frames=5, sleep=_no_sleep).run()
    assert len(probe.summaries) == 1 and probe.summaries[0]["frames"] == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"fps": 0}, "fps"),
    ({"fps": "fast"}, "fps"),
    ({"max_substeps": 0}, "max_substeps"),
    ({"max_steps": -1}, "max_steps"),
    ({"policy": 3}, "policy"),
])
def test_bad_arguments(pm, kwargs, match):
    world, _ = setup(pm)
    with pytest.raises(SimcoreError, match=match):
        Session(world, **kwargs)


def _no_sleep(seconds):
    raise AssertionError(f"slept {seconds} s in a realtime=False session")


# ---------------------------------------------------------------------------
# rewind and branch
# ---------------------------------------------------------------------------

SCRIPT = [1, 2, 0, 1, 1, 2, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 2, 1, 2, 2, 0, 1]


class FrameLog:
    """Keeps every rendered main/branch frame by the world's step, and runs
    ``at[n](session)`` at rendered frame n."""

    def __init__(self, at=None):
        self.at = at or {}
        self.by_t: dict[int, list[np.ndarray]] = {}
        self.by_episode: dict[tuple, list[np.ndarray]] = {}  # (episode seed, t) -> frames
        self.branch: list[tuple[int, np.ndarray]] = []
        self.results: list = []

    @hookimpl
    def simcore_render(self, session, frames):
        self.by_t.setdefault(session.world.t, []).append(frames["world"].copy())
        self.by_episode.setdefault((session.episode_seed, session.world.t), []).append(frames["world"].copy())
        if "branch" in frames:
            self.branch.append((session.branch_world.t, frames["branch"].copy()))
        if session.frames in self.at:
            self.results.append(self.at[session.frames](session))


def by_step(session_ref, script=SCRIPT):
    """A scripted agent: the action depends only on the world's step, so replaying a
    stretch of time replays the same actions."""
    return lambda obs, info: script[session_ref[0].world.t % len(script)]


def tiny_pong_model():
    import torch

    from simcore.model import WorldModel, config_for

    torch.manual_seed(0)
    model = WorldModel(config_for("tiny", scenes=("simcore/Pong-v0",), cond_dims={"scene_params": 4},
                                  num_actions=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # large enough that every frame depends on the KV cache
    return model


@pytest.mark.parametrize("backend, every", [("sim", 1), ("sim", 4), ("model", 1), ("model", 3)])
def test_rewind_then_the_same_actions_give_the_same_frames(pm, backend, every):
    kw = {"model": tiny_pong_model()} if backend == "model" else {}
    world = simcore.make("simcore/Pong-v0", backend, plugin_manager=pm, **kw)
    ref: list = [None]
    log = FrameLog(at={12: lambda s: s.rewind(7), 16: lambda s: s.rewind(2)})
    pm.register(log)
    session = Session(world, policy=by_step(ref), seed=2, realtime=False, max_steps=20, rewind_every=every)
    ref[0] = session
    session.run()
    assert log.results == [7, 2]
    # frame n shows t = n - 1 until frame 12 (t=11) rewinds to 4; frame 16 (t=8) rewinds to 6;
    # 20 updates in all end at t=11
    assert [len(log.by_t[t]) for t in range(4, 12)] == [1, 2, 2, 3, 3, 2, 2, 2] and world.t == 11
    for t, frames in log.by_t.items():
        for f in frames[1:]:
            np.testing.assert_array_equal(f, frames[0], err_msg=f"t={t}")
    if backend == "model":
        assert world.dreaming and len({log.by_t[t][0].tobytes() for t in range(4, 12)}) > 1
    assert session.actions == [SCRIPT[t] for t in range(world.t)]
    assert session.last_event == "rewound 2 steps"


def test_rewind_goes_back_across_an_episode_end(pm):
    world = simcore.make("simcore/Pong-v0", plugin_manager=pm, max_episode_steps=5)
    ref: list = [None]
    state = {}
    log = FrameLog(at={9: lambda s: state.update(before=(s.episodes, s.episode_seed, s.world.t)) or s.rewind(4)})
    pm.register(log)
    session = Session(world, policy=by_step(ref), seed=7, realtime=False, max_steps=12)
    ref[0] = session
    session.run()
    assert state["before"] == (1, 8, 3)  # frame 9: episode 2 (seed 8) at t=3
    # rewound 4 steps: back into episode 1 at t=4 (episodes 0 again); its end and the reset
    # into episode 2 (seed 8) happen again, and 4 updates later it stands at t=3
    assert log.results == [4]
    assert (session.episodes, session.episode_seed, world.t) == (1, 8, 3)
    assert len(log.by_episode[(8, 3)]) == 2 and len(log.by_episode[(7, 4)]) == 1
    for key, frames in log.by_episode.items():
        for f in frames[1:]:
            np.testing.assert_array_equal(f, frames[0], err_msg=str(key))


def test_rewind_reach_is_bounded_by_steps_and_memory(pm):
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(2, 2))
    assert Session(world, seed=0).rewind_every == 10  # the simulator: a snapshot every 10 steps by default
    session = Session(world, seed=0, realtime=False, max_steps=30, rewind_steps=10, rewind_every=1)
    session.run()
    assert session.rewind_available == 10
    assert session.rewind(50) == 10 and world.t == 20
    assert session.rewind(1) == 0 and session.last_event == "rewound 0 steps"
    with pytest.raises(SimcoreError, match="positive"):
        session.rewind(0)

    one = Session(simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(2, 2)), seed=0,
                  realtime=False, max_steps=2, rewind_every=1)
    one.run()
    per_step = one._ring[-1].nbytes
    capped = Session(simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(2, 2)), seed=0,
                     realtime=False, max_steps=30, rewind_memory=5 * per_step, rewind_every=1)
    capped.run()
    assert len(capped._ring) == 5 and capped._ring_bytes <= 5 * per_step
    assert capped.rewind(30) == 4

    off = Session(simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm), seed=0, realtime=False,
                  max_steps=3, rewind_steps=0)
    off.run()
    assert off.rewind(2) == 0 and off.last_event == "rewind: nothing to rewind to"


def test_rewind_stops_at_a_manual_reset(pm):
    world = simcore.make("simcore/Pong-v0", plugin_manager=pm)
    log = FrameLog(at={6: Session.request_reset, 9: lambda s: s.rewind(10)})
    pm.register(log)
    session = Session(world, seed=0, realtime=False, max_steps=10)
    session.run()
    # frame 7 reset (seed 1) and stepped to t=1; frame 9 (t=3) asks for 10 steps, gets 3
    assert log.results[-1] == 3 and session.episode_seed == 1 and log.by_t[0][-1] is not None


@pytest.mark.parametrize("backend", ["sim", "model"])
def test_branch_diverges_and_leaves_the_original_untouched(pm, backend):
    kw = {"model": tiny_pong_model()} if backend == "model" else {}
    other = [2, 2, 1, 0, 0, 2, 1, 1, 2, 0]
    ref: list = [None]
    forked: dict = {}

    def fork(s):
        forked["snapshot"] = s.world.snapshot()
        return s.branch(policy=lambda obs, info: other[s.branch_world.t % len(other)])

    world = simcore.make("simcore/Pong-v0", backend, plugin_manager=pm, **kw)
    log = FrameLog(at={7: fork})
    pm.register(log)
    session = Session(world, policy=by_step(ref), seed=1, realtime=False, max_steps=14)
    ref[0] = session
    session.run()
    assert session.control == "world" and session.branch_world.t == world.t == 14
    assert len(log.branch) == 8  # from the frame after the fork on, side by side

    # the original: exactly the frames of a run that never branched
    pm.unregister(log)
    plain = simcore.make("simcore/Pong-v0", backend, plugin_manager=pm, **kw)
    plain.reset(seed=1)
    for t in range(14):
        obs, *_ = plain.step(SCRIPT[t])
        np.testing.assert_array_equal(log.by_t[t + 1][0], obs, err_msg=f"main t={t + 1}")
    # the branch: the fork moment stepped with the other actions
    alt = simcore.make("simcore/Pong-v0", backend, plugin_manager=pm, **kw)
    alt.reset(seed=99)
    alt.restore(forked["snapshot"])
    for t, frame in log.branch:
        obs, *_ = alt.step(other[(t - 1) % len(other)])
        np.testing.assert_array_equal(frame, obs, err_msg=f"branch t={t}")
    assert not np.array_equal(log.branch[-1][1], log.by_t[14][0])  # different actions, different worlds


def test_branch_without_a_policy_takes_the_controls(pm):
    world = simcore.make("simcore/Pong-v0", plugin_manager=pm)
    log = FrameLog(at={3: lambda s: s.branch(), 6: Session.switch_control, 8: Session.close_branch})
    pm.register(log)
    session = Session(world, policy=lambda obs, info: 1, seed=0, realtime=False, max_steps=10)
    session.run()
    # forked at t=2: the branch steps on frames 4-6 while the main world holds at 2,
    # then the main world steps again; F7-style close at frame 8
    assert [t for t, _ in log.branch] == [3, 4, 5, 5, 5]
    assert [t for t, fs in sorted(log.by_t.items()) for _ in fs] == [0, 1, 2, 2, 2, 2, 3, 4, 5, 6, 7]
    assert session.branch_world is None and session.control == "world" and session.last_event == "branch closed"
    assert session.switch_control() == "world" and session.last_event == "no branch to switch to"

    ref: list = [None]
    s2 = Session(simcore.make("simcore/Pong-v0", plugin_manager=pm), policy=by_step(ref), seed=0,
                 realtime=False, max_steps=3)
    ref[0] = s2
    s2.run()
    s2.branch()
    with pytest.raises(SimcoreError, match="rewind goes back on the main world"):
        s2.rewind(1)
