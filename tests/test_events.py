"""World events: validation, the text parser (with held-out phrasings), exact effects
on the simulator, recording and reading back, the conditioning vector, snapshots."""
from __future__ import annotations

import numpy as np
import pytest
from simcore.plugins.conditioning import simcore_conditioning

import simcore
import simcore.collect
from simcore.data import Dataset
from simcore.errors import SimcoreError
from simcore.events import (
    EVENT_DIM,
    EVENT_TYPES,
    Event,
    EventError,
    apply_event,
    event_vector,
    parse_event,
)
from simcore.recording import read_episodes
from simcore.scene import PALETTE

BALLS, PONG = "simcore/BouncingBalls-v0", "simcore/Pong-v0"


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"type": "explode"}, "unknown event type 'explode'"),
    ({"type": "gravity"}, "exactly one of gravity="),
    ({"type": "gravity", "gravity": 1.0, "factor": 2.0}, "exactly one of gravity="),
    ({"type": "gravity", "gravity": 5000.0}, "within ±2000"),
    ({"type": "gravity", "gravity": float("nan")}, "finite number"),
    ({"type": "gravity", "gravity": "strong"}, "finite number"),
    ({"type": "recolor", "index": 1}, "needs index= .* and color="),
    ({"type": "recolor", "index": 1.5, "color": "red"}, "index must be an integer"),
    ({"type": "recolor", "index": 0, "color": "chartreuse"}, "unknown colour 'chartreuse'"),
    ({"type": "recolor", "index": 0, "color": (300, 0, 0)}, "three values in 0..255"),
    ({"type": "add_ball", "radius": 50.0}, r"radius must be in \[1, 24\]"),
    ({"type": "add_ball", "pos": (1.0,)}, "pair of numbers"),
    ({"type": "add_ball", "gravity": 3.0}, "takes .* not \\['gravity'\\]"),
])
def test_invalid_events_are_refused_clearly(kwargs, match):
    with pytest.raises(EventError, match=match):
        Event(**kwargs)


def test_event_dict_round_trip_and_unknown_fields():
    e = Event("add_ball", pos=(10, 20), vel=(1, -2), radius=5, color="green")
    assert e.color == PALETTE["green"] and e.pos == (10.0, 20.0)
    d = e.to_dict()
    assert d == {"type": "add_ball", "pos": [10.0, 20.0], "vel": [1.0, -2.0], "radius": 5.0, "color": [60, 200, 80]}
    assert Event.from_dict(d) == e
    with pytest.raises(EventError, match="unknown event field"):
        Event.from_dict({"type": "gravity", "gravity": 1, "strength": 2})
    with pytest.raises(EventError, match="'type' key"):
        Event.from_dict({"gravity": 1})


# -- the parser ---------------------------------------------------------------------------------

#: phrasings written while building the parser
KNOWN = [
    ("gravity 120", {"type": "gravity", "gravity": 120.0}),
    ("make gravity stronger", {"type": "gravity", "factor": 1.5}),
    ("add a red ball", {"type": "add_ball", "color": list(PALETTE["red"])}),
    ("turn ball 2 blue", {"type": "recolor", "index": 1, "color": list(PALETTE["blue"])}),
]
#: phrasings the parser was not written against (held out)
HELD_OUT = [
    ("Please set the gravity to 75.5!", {"type": "gravity", "gravity": 75.5}),
    ("reduce gravity", {"type": "gravity", "factor": 0.5}),
    ("gravity off", {"type": "gravity", "gravity": 0.0}),
    ("turn gravity upside down", {"type": "gravity", "factor": -1.0}),
    ("Let gravity pull upward at 60", {"type": "gravity", "gravity": -60.0}),
    ("gravity three times stronger", {"type": "gravity", "factor": 3.0}),
    ("Spawn one more ball", {"type": "add_ball"}),
    ("introduce a tiny teal ball at (12, 40) heading right", {
        "type": "add_ball", "pos": [12.0, 40.0], "vel": [40.0, 0.0], "radius": 4.0, "color": list(PALETTE["cyan"])}),
    ("could you drop in a large golden ball", {"type": "add_ball", "radius": 7.0, "color": list(PALETTE["yellow"])}),
    ("make the third ball pink", {"type": "recolor", "index": 2, "color": list(PALETTE["magenta"])}),
    ("Ball no. 1 becomes white.", {"type": "recolor", "index": 0, "color": list(PALETTE["white"])}),
    ("dye the last ball crimson", {"type": "recolor", "index": -1, "color": list(PALETTE["red"])}),
]


@pytest.mark.parametrize("text, expected", KNOWN + HELD_OUT)
def test_parse_event(text, expected):
    assert parse_event(text).to_dict() == expected


@pytest.mark.parametrize("text, match", [
    ("", "non-empty"),
    ("make it rain", "names neither gravity nor a ball"),
    ("gravity", "cannot tell what to do with gravity"),
    ("turn ball 0 red", "number balls from 1"),
    ("turn ball 2 sideways", "no colour"),
    ("the ball is nice", "cannot understand"),
])
def test_parse_event_errors(text, match):
    with pytest.raises(EventError, match=match):
        parse_event(text)


# -- exact effects on the simulator -----------------------------------------------------------------


def _run(world, steps):
    return [world.step(0)[4]["objects"]["pos"].copy() for _ in range(steps)]


def test_gravity_event_equals_a_world_made_with_that_gravity():
    changed = simcore.make("simcore/UniformMotion-v0")
    reference = simcore.make("simcore/UniformMotion-v0", gravity=150.0)
    plain = simcore.make("simcore/UniformMotion-v0")
    for w in (changed, reference, plain):
        w.reset(seed=4)
    before = _run(changed, 5)
    np.testing.assert_array_equal(np.stack(before), np.stack(_run(plain, 5)))  # nothing changed before the event
    # from the moment of the event, the world must move exactly like a world made with
    # gravity=150 (its own gravity vector, as its reset built it) from the same state
    pre, ref_gravity = dict(changed.state), reference.state["gravity"].copy()
    applied = changed.event("gravity 150")
    assert applied == Event("gravity", gravity=150.0)
    np.testing.assert_array_equal(changed.state["gravity"], ref_gravity)
    reference.restore({**reference.snapshot(), "state": {**pre, "gravity": ref_gravity}})
    after, expected, unchanged = _run(changed, 10), _run(reference, 10), _run(plain, 10)
    np.testing.assert_array_equal(np.stack(after), np.stack(expected))  # exactly the gravity=150 physics
    assert not np.allclose(after[0], unchanged[0])  # and it differs from the step of the event on
    assert changed.state["gravity"][1] == pytest.approx(150.0)


def test_relative_gravity_resolves_against_the_current_value():
    w = simcore.make("simcore/Projectile-v0")  # gravity 120
    w.reset(seed=0)
    assert w.event("make gravity stronger").gravity == pytest.approx(180.0)
    assert w.event({"type": "gravity", "factor": -1}).gravity == pytest.approx(-180.0)
    flat = simcore.make("simcore/UniformMotion-v0")
    flat.reset(seed=0)
    assert flat.event("stronger gravity").gravity == pytest.approx(120.0)  # from zero: switched on


def test_add_ball_event_adds_an_object_where_asked():
    w = simcore.make(BALLS, count=(2, 2))
    _, info = w.reset(seed=1)
    assert len(info["objects"]["pos"]) == 2
    applied = w.event("add a red ball at 32 32 moving left")
    assert applied.pos == (32.0, 32.0) and applied.vel == (-40.0, 0.0) and applied.color == PALETTE["red"]
    obs, _, _, _, info = w.step(0)
    assert len(info["objects"]["pos"]) == 3 and info["events"] == [applied.to_dict()]
    x, y = info["objects"]["pos"][2]
    if w.state["ball_hits"][2] == 0:  # free flight: exactly 2 px to the left after one step at 20 fps
        assert (x, y) == pytest.approx((30.0, 32.0))
    assert tuple(obs[int(y), int(x)]) == PALETTE["red"]  # drawn by the rasterizer
    _, _, _, _, info = w.step(0)
    assert "events" not in info  # reported on the step it happened only


def test_recolor_event_changes_the_pixels():
    w = simcore.make("simcore/UniformMotion-v0", colors=["green"], radius_range=(6.0, 6.0))
    obs, info = w.reset(seed=2)
    x, y = info["objects"]["pos"][0]
    assert tuple(obs[int(y), int(x)]) == PALETTE["green"]
    w.event("paint the first ball blue")
    obs, _, _, _, info = w.step(0)
    x, y = info["objects"]["pos"][0]
    assert tuple(obs[int(y), int(x)]) == PALETTE["blue"]
    assert tuple(info["objects"]["color"][0]) == PALETTE["blue"]


def test_events_the_scene_cannot_apply():
    w = simcore.make(BALLS, count=(2, 2))
    w.reset(seed=0)
    with pytest.raises(EventError, match="there is no ball 5: the scene has 2"):
        w.event("turn ball 5 red")
    with pytest.raises(EventError, match="would not lie inside the frame"):
        w.event({"type": "add_ball", "pos": (1, 1), "radius": 6})
    p = simcore.make(PONG)
    p.reset(seed=0)
    with pytest.raises(EventError, match="Pong-v0 does not support 'gravity'"):
        p.event("gravity 100")
    with pytest.raises(SimcoreError, match="reset"):
        simcore.make(BALLS).event("gravity 1")


def test_apply_event_is_pure_and_returns_the_applied_event():
    scene = simcore.make(BALLS).scene
    rng = np.random.default_rng(0)
    state = scene.initial(rng, scene.resolve(None))
    new, applied = apply_event(scene, state, "add a ball", rng)
    assert len(new["pos"]) == len(state["pos"]) + 1 and len(state["mass"]) == len(state["pos"])  # input untouched
    assert applied.type == "add_ball" and applied.pos is not None and applied.color is not None


# -- recording, conditioning, snapshots ----------------------------------------------------------------


def test_random_events_are_recorded_and_read_back(tmp_path):
    simcore.collect.collect(BALLS, episodes=2, steps=40, out_dir=tmp_path, progress=False,
                            options={"events_rate": 0.25})
    eps = [ep for f in sorted(tmp_path.glob("*.msgpack")) for ep in read_episodes(f)]
    recorded = [(i, t, e) for i, ep in enumerate(eps) for t, s in enumerate(ep.steps)
                for e in (s.get("info") or {}).get("events", [])]
    assert len(recorded) >= 5 and {e["type"] for _, _, e in recorded} <= set(EVENT_TYPES)
    for i, t, e in recorded:
        ev = Event.from_dict(e)
        st = eps[i].steps[t]["state"]
        if ev.type == "recolor":
            assert tuple(st["color"][ev.index]) == ev.color
    ds = Dataset([tmp_path], step_conditions=("event",))
    vec = ds.episodes[recorded[0][0]].steps["event"]
    assert vec.shape == (len(eps[recorded[0][0]].steps), EVENT_DIM)
    t = recorded[0][1]
    np.testing.assert_array_equal(vec[t].numpy(), event_vector(eps[recorded[0][0]].steps[t]["info"]["events"]))
    quiet = [t for t, s in enumerate(eps[0].steps) if not (s.get("info") or {}).get("events")]
    assert not ds.episodes[0].steps["event"][quiet].any()
    # default: no events, no extra state key, same trajectory as before events existed
    w = simcore.make(BALLS)
    w.reset(seed=0)
    assert "events" not in w.step(0)[4] and "events" not in w.state


def test_event_conditioning_vector_on_the_step_of_the_event():
    w = simcore.make(BALLS)
    w.reset(seed=0)
    assert not simcore_conditioning(world=w, step=0)["event"].any()
    applied = w.event("gravity 80")
    w.step(0)
    v = simcore_conditioning(world=w, step=w.t)["event"]
    np.testing.assert_array_equal(v, event_vector([applied]))
    assert v[EVENT_TYPES.index("gravity")] == 1 and v[len(EVENT_TYPES)] == pytest.approx(0.8)
    w.step(0)
    assert not simcore_conditioning(world=w, step=w.t)["event"].any()


def test_snapshot_keeps_pending_events():
    w = simcore.make(BALLS, count=(2, 2))
    w.reset(seed=3)
    w.event("add a green ball")
    snap = w.snapshot()
    a = w.step(0)
    w.restore(snap)
    b = w.step(0)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[4]["events"] == b[4]["events"] and len(b[4]["objects"]["pos"]) == 3


def test_live_keys_send_events_to_the_world_and_its_twin():
    from simcore.plugins.display import COMMAND_KEYS, run_command

    from simcore.loop import Session

    assert COMMAND_KEYS["gravity_flip"] == ("g",) and COMMAND_KEYS["add_ball"] == ("a",)
    world, twin = simcore.make(BALLS, count=(2, 2)), simcore.make(BALLS, count=(2, 2))
    session = Session(world, compare=twin, seed=0, realtime=False, max_steps=2)
    session.run()
    for command in ("gravity_flip", "add_ball", "recolor", "gravity_flip"):
        run_command(session, None, command)
        assert session.last_event.startswith("event: type=")
    assert world.state["gravity"][1] == pytest.approx(-120.0)  # switched on, then flipped
    assert len(world.state["pos"]) == 3
    for key in ("pos", "vel", "color", "gravity"):
        np.testing.assert_array_equal(world.state[key], twin.state[key])  # the twin got the same change
    pong = Session(simcore.make(PONG), seed=0, realtime=False, max_steps=1)
    pong.run()
    run_command(pong, None, "gravity_flip")  # shown in the HUD, not raised
    assert "does not support 'gravity'" in pong.last_event


def test_scheduled_prompts_in_a_session(pm):
    from simcore.events import ScheduledEvents
    from simcore.loop import Session

    sched = ScheduledEvents.from_specs(["3:add a red ball", "5:gravity 150", "5:turn ball 1 white"])
    pm.register(sched, name="scheduled-events")
    world = simcore.make(BALLS, count=(2, 2), plugin_manager=pm)
    twin = simcore.make(BALLS, count=(2, 2), plugin_manager=pm)
    counts = []
    session = Session(world, compare=twin, seed=0, realtime=False, max_steps=6,
                      policy=lambda obs, info: (counts.append(len(world.state["pos"])), 0)[1])
    session.run()
    assert counts == [2, 2, 3, 3, 3, 3]  # counts[i]: balls before step i + 1; the ball arrives for step 3
    assert world.state["gravity"][1] == pytest.approx(150.0) and tuple(world.state["color"][0]) == PALETTE["white"]
    for key in ("pos", "color", "gravity"):
        np.testing.assert_array_equal(world.state[key], twin.state[key])
    with pytest.raises(EventError, match="STEP:PROMPT"):
        ScheduledEvents.from_specs(["soon:add a ball"])
    with pytest.raises(EventError, match="cannot understand"):
        ScheduledEvents.from_specs(["4:the ball"])


def test_event_conditioned_model_world(tmp_path, one_torch_thread):
    """`simcore train --condition event`: the model gets the event vector on the step of
    the event; a model without it refuses events while it dreams."""
    from simcore.errors import BackendError
    from simcore.train import TrainConfig, train

    simcore.collect.collect(BALLS, episodes=2, steps=12, out_dir=tmp_path / "data", progress=False,
                            options={"events_rate": 0.3})
    out = train(TrainConfig(data=[str(tmp_path / "data")], out=str(tmp_path / "run"), size="tiny", ae_steps=3,
                            dyn_steps=3, ft_steps=0, ae_batch=2, dyn_batch=2, eval_every=1000, progress=False,
                            stages=("ae", "dynamics"), step_conditions=("event",)), log=lambda *_: None)
    world = simcore.make(BALLS, backend="model", model=str(out))
    assert world.dreamer.model.cfg.cond_dims["event"] == EVENT_DIM
    world.reset(seed=0)
    while not world.dreaming:
        world.step(0)
    seen, generate = [], world.dreamer.rollout.generate

    def spy(actions, extra):  # what the model is conditioned on, frame by frame
        seen.append(extra["event"].copy())
        return generate(actions, extra)

    world.dreamer.rollout.generate = spy
    applied = world.event("gravity 100")
    world.step(0)
    world.step(0)
    np.testing.assert_array_equal(seen[0], event_vector([applied]))  # on the step of the event ...
    assert not seen[1].any()  # ... and only then
    plain = simcore.make(BALLS, backend="model")  # the shipped default model has no event conditioning
    plain.reset(seed=0)
    while not plain.dreaming:
        plain.step(0)
    with pytest.raises(BackendError, match="not trained with world events"):
        plain.event("add a ball")
