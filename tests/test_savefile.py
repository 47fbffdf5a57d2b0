"""Session save files (.simsave): round trips across processes, the codec, bad files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import simcore
from simcore.checkpoint import save_model
from simcore.loop import Session
from simcore.model import WorldModel, config_for
from simcore.savefile import (
    FORMAT,
    SaveFileError,
    decode_tree,
    encode_tree,
    load_session,
    read_payload,
    save_session,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PONG = "simcore/Pong-v0"
ACTIONS = [1, 2, 0, 1, 1, 2, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 2, 1]


def tiny_model(seed: int = 0) -> WorldModel:
    """An untrained tiny world model of Pong with random (not zero) output layers, so
    every frame depends on the context, the actions and the noise generator."""
    torch.manual_seed(seed)
    model = WorldModel(config_for("tiny", scenes=(PONG,), cond_dims={"scene_params": 4}, num_actions=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # large enough that every frame depends on the KV cache
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model(tiny_model(), tmp_path_factory.mktemp("tiny") / "model")


def scripted(session_ref: list, offset: int = 0):
    """A policy playing ACTIONS by the main world's step (``session_ref[0]``)."""
    return lambda obs, info: ACTIONS[(session_ref[0].world.t + offset) % len(ACTIONS)]


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import simcore
    for file, out, actions in zip(*[iter(sys.argv[1:])] * 3):  # (file, out, actions) triples
        actions = [int(a) for a in actions.split(",")]
        session = simcore.load_session(file)
        res = {"world": np.stack([session.world.step(a)[0] for a in actions])}
        if session.compare is not None:
            res["compare"] = np.stack([session.compare.step(a)[0] for a in actions])
        res["log"] = np.array(session.actions)
        np.savez(out, **res)
""")


def test_save_then_load_in_a_new_process_gives_bit_identical_frames(tmp_path, model_dir, pm):
    """sim World and a model Session (with its sim twin): the frames a fresh process makes
    after loading equal, bit for bit, the frames the saving process goes on to make."""
    sim = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, count=(3, 3), gravity=40.0)
    sim.reset(seed=5)
    for _ in range(7):
        sim.step(0)
    sim_file = save_session(sim, tmp_path / "sim.simsave")

    ref: list = [None]
    world = simcore.make(PONG, "model", model=model_dir, plugin_manager=pm)
    twin = simcore.make(PONG, plugin_manager=pm)
    session = Session(world, compare=twin, policy=scripted(ref), seed=3, realtime=False, max_steps=9)
    ref[0] = session
    session.run()
    assert world.dreaming  # past the prompt: the model makes the frames
    model_file = session.save(tmp_path / "model.simsave")
    assert session.last_event.startswith("saved model.simsave")

    cont = ACTIONS[:8]
    expected = {
        "sim": {"world": np.stack([sim.step(0)[0] for _ in cont])},
        "model": {"world": np.stack([world.step(a)[0] for a in cont]),
                  "compare": np.stack([twin.step(a)[0] for a in cont])},
    }
    assert len({f.tobytes() for f in expected["model"]["world"]}) > 1  # the dream moves

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = (("sim", sim_file, [0] * len(cont)), ("model", model_file, cont))
    args = [a for name, file, acts in jobs
            for a in (str(file), str(tmp_path / f"{name}.npz"), ",".join(map(str, acts)))]
    subprocess.run([sys.executable, "-c", CHILD, *args], check=True, env=env, timeout=120)
    for name, _, _ in jobs:
        got = np.load(tmp_path / f"{name}.npz")
        for key, frames in expected[name].items():
            np.testing.assert_array_equal(got[key], frames, err_msg=f"{name}/{key}")
    got = np.load(tmp_path / "model.npz")
    assert list(got["log"]) == [ACTIONS[t % len(ACTIONS)] for t in range(9)]  # the action log since reset


def test_loaded_session_resumes_its_loop_counters_and_log(tmp_path, pm):
    ref: list = [None]
    session = Session(simcore.make(PONG, plugin_manager=pm, max_episode_steps=6), policy=scripted(ref), seed=10,
                      realtime=False, max_steps=9)
    ref[0] = session
    session.run()
    assert session.episodes == 1 and session.world.t == 3 and session.episode_seed == 11
    path = session.save(tmp_path / "s.simsave")
    loaded = load_session(path, plugin_manager=pm, policy=scripted(ref), realtime=False, max_steps=4)
    assert (loaded.seed, loaded.episode_seed, loaded.episodes, loaded.returns) == (10, 11, 1, session.returns)
    assert loaded.steps == 0  # a loaded session counts its own updates (max_steps is relative)
    assert loaded.actions == session.actions == [ACTIONS[t] for t in range(3)]
    np.testing.assert_array_equal(loaded.observation, session.observation)
    assert loaded.info["objects"]["pos"].shape == (3, 2)

    shown = []

    class Grab:
        @simcore.hookimpl
        def simcore_render(self, session, frames):
            shown.append(frames["world"].copy())

    pm.register(Grab())
    ref[0] = loaded
    loaded.run()
    assert loaded.world.t == 1 and loaded.episodes == 2  # resumed at t=3 (no reset), truncated at 6
    np.testing.assert_array_equal(shown[0], session.observation)  # the first tick shows the saved frame


def test_action_log_and_seed_replay_the_saved_episode(tmp_path, pm):
    """The file's seed + action log rebuild the saved moment from scratch (sim)."""
    ref: list = [None]
    session = Session(simcore.make(PONG, plugin_manager=pm), policy=scripted(ref), seed=4, realtime=False,
                      max_steps=12)
    ref[0] = session
    session.run()
    payload = read_payload(session.save(tmp_path / "p.simsave"))
    main = payload["worlds"]["world"]
    fresh = simcore.make(PONG, plugin_manager=pm)
    obs, _ = fresh.reset(seed=main["seed"])
    for a in main["actions"]:
        obs, *_ = fresh.step(a)
    np.testing.assert_array_equal(obs, main["snapshot"]["frame"])
    assert payload["session"]["steps"] == 12


def test_loading_into_a_running_session_restores_in_place(tmp_path, pm):
    ref: list = [None]
    world = simcore.make(PONG, plugin_manager=pm)
    session = Session(world, policy=scripted(ref), seed=0, realtime=False, max_steps=5)
    ref[0] = session
    session.run()
    path = session.save(tmp_path / "q.simsave")
    saved_frame = session.observation.copy()
    for a in ACTIONS[:4]:
        world.step(a)
    session.load(path)
    assert world.t == 5 and session.last_event == "loaded q.simsave (step 5)"
    np.testing.assert_array_equal(session.observation, saved_frame)
    np.testing.assert_array_equal(world.step(1)[0], simcore.load_session(path, plugin_manager=pm).world.step(1)[0])


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path, pm):
    world = simcore.make(PONG, plugin_manager=pm)
    world.reset(seed=0)
    world.step(1)
    return save_session(world, tmp_path / "good.simsave")


def test_truncated_and_garbage_files_name_the_file(tmp_path, good_file):
    data = good_file.read_bytes()
    cut = tmp_path / "cut.simsave"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SaveFileError, match=r"cut\.simsave: not a readable session file \(truncated or corrupt"):
        load_session(cut)
    junk = tmp_path / "junk.simsave"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    with pytest.raises(SaveFileError, match="junk.simsave: not a readable session file"):
        load_session(junk)
    with pytest.raises(SaveFileError, match="missing.simsave: no such session file"):
        load_session(tmp_path / "missing.simsave")


def _rewrite(src, dst, **meta_changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_changes)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_other_format_version_and_corrupt_metadata_are_named(tmp_path, good_file, model_dir):
    with pytest.raises(SaveFileError, match="model.safetensors: not a simcore session file"):
        load_session(model_dir / "model.safetensors")
    with pytest.raises(SaveFileError, match=r"v9.simsave: session format version '9'; this simcore reads '1'"):
        load_session(_rewrite(good_file, tmp_path / "v9.simsave", version="9"))
    with pytest.raises(SaveFileError, match="badjson.simsave: corrupt session data"):
        load_session(_rewrite(good_file, tmp_path / "badjson.simsave", session="{"))
    tree = json.loads(read_payload_meta(good_file)["session"])
    del tree["worlds"]["world"]["snapshot"]["state"]["ball_pos"]["key"]
    with pytest.raises(SaveFileError, match=r"nokey.simsave: corrupt session data \(at worlds/world/snapshot/"
                                            r"state/ball_pos: bad 'ndarray' value \(no 'key'\)\)"):
        load_session(_rewrite(good_file, tmp_path / "nokey.simsave", session=json.dumps(tree)))
    tree = json.loads(read_payload_meta(good_file)["session"])
    del tree["worlds"]["world"]["snapshot"]["rng"]
    with pytest.raises(SaveFileError, match="norng.simsave: corrupt session data .missing 'worlds/world/snapshot/rng'"):
        load_session(_rewrite(good_file, tmp_path / "norng.simsave", session=json.dumps(tree)))
    assert read_payload_meta(good_file)["format"] == FORMAT


def read_payload_meta(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_wrong_scene_and_other_model_weights_are_refused(tmp_path, pm, good_file, model_dir):
    balls = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm)
    session = Session(balls, seed=0, realtime=False, max_steps=1)
    session.run()
    with pytest.raises(SaveFileError, match=r"good.simsave: cannot be loaded into this session's world: it holds "
                                            r"scene 'simcore/Pong-v0', not 'simcore/BouncingBalls-v0'"):
        session.load(good_file)

    world = simcore.make(PONG, "model", model=model_dir, plugin_manager=pm)
    world.reset(seed=1)
    for a in ACTIONS[:4]:
        world.step(a)
    path = save_session(world, tmp_path / "m.simsave")
    other = save_model(tiny_model(seed=7), tmp_path / "other")
    with pytest.raises(SaveFileError, match=r"m.simsave: different model weights: the session was saved with a "
                                            r"model of sha256 [0-9a-f]{16}…, but .*other.* has [0-9a-f]{16}…"):
        load_session(path, model=other, plugin_manager=pm)
    on_other = simcore.make(PONG, "model", model=other, plugin_manager=pm)
    s2 = Session(on_other, seed=0, realtime=False, max_steps=1)
    s2.run()
    with pytest.raises(SaveFileError, match="model weights sha256"):
        s2.load(path)
    # the same weights under another path load fine: the hash, not the path, decides
    same = save_model(tiny_model(), tmp_path / "same")
    assert load_session(path, model=same, plugin_manager=pm).world.t == 4


def test_unsaveable_values_name_their_place(tmp_path, pm):
    world = simcore.make(PONG, plugin_manager=pm)
    world.reset(seed=0)
    world._state["oops"] = object()  # a plugin put something unserializable into the state
    with pytest.raises(SaveFileError, match=r"x.simsave: cannot save worlds/world/snapshot/state/oops: object"):
        save_session(world, tmp_path / "x.simsave")
    assert not (tmp_path / "x.simsave").exists() and not (tmp_path / "x.simsave.tmp").exists()
    with pytest.raises(SaveFileError, match="never reset"):
        save_session(simcore.make(PONG, plugin_manager=pm), tmp_path / "y.simsave")


def test_codec_round_trips_what_json_lacks():
    value = {
        "big": 2**127 + 5, "inf": float("inf"), "ninf": -float("inf"), "tuple": (1, (2.5, "x")),
        "np": np.float32(1.5), "i8": np.int8(-3), "b": np.bool_(True), "empty": np.zeros((0, 2)),
        "bools": np.array([True, False]), "strs": np.array(["ball", "paddle"]), 7: "int key",
        "nested": [{"$type": "not a tag"}], "t": torch.arange(6, dtype=torch.float16).reshape(2, 3),
        "u32": np.array([1, 2**32 - 1], dtype=np.uint32), "be": np.array([1.0, 2.0], dtype=">f8"),
    }
    tensors: dict = {}
    encoded = encode_tree(value, tensors)
    text = json.dumps(encoded, allow_nan=False)  # strict JSON
    back = decode_tree(json.loads(text), tensors)
    assert back["big"] == 2**127 + 5 and back["inf"] == float("inf") and back["ninf"] == -float("inf")
    assert back["tuple"] == (1, (2.5, "x")) and back[7] == "int key" and back["nested"] == [{"$type": "not a tag"}]
    assert type(back["np"]) is np.float32 and back["np"] == 1.5 and type(back["i8"]) is np.int8
    assert back["empty"].shape == (0, 2) and back["bools"].dtype == bool
    assert list(back["strs"]) == ["ball", "paddle"]
    assert torch.equal(back["t"], value["t"]) and back["t"].dtype == torch.float16
    assert back["u32"].dtype == np.uint32 and back["u32"][1] == 2**32 - 1
    np.testing.assert_array_equal(back["be"], [1.0, 2.0])
    nan = decode_tree(json.loads(json.dumps(encode_tree(float("nan"), {}))), {})
    assert nan != nan


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------


def test_play_load_resumes_a_saved_session(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from simcore.cli import app

    world = simcore.make("simcore/BouncingBalls-v0", count=(2, 2))
    world.reset(seed=3)
    for _ in range(11):
        world.step(0)
    path = save_session(world, tmp_path / "b.simsave")
    seen = tmp_path / "seen.txt"
    agent = tmp_path / "agent.py"
    agent.write_text("def policy(obs, info):\n"
                     f"    open({str(seen)!r}, 'a').write(str(info['step']) + ',')\n"
                     "    return 0\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["play", "--load", str(path), "--headless", "--frames", "4", "--agent",
                                      f"{agent}:policy", "--save-dir", str(tmp_path / "saves"),
                                      "--rewind-steps", "5"])
    assert result.exit_code == 0, result.output
    assert "4 steps" in result.output and (tmp_path / "simcore-play.gif").is_file()
    assert seen.read_text() == "11,12,13,14,"  # resumed at the saved step, no reset

    bad = tmp_path / "bad.simsave"
    bad.write_bytes(b"\x00" * 10)
    result = CliRunner().invoke(app, ["play", "--load", str(bad), "--headless", "--frames", "2"])
    assert result.exit_code != 0 and isinstance(result.exception, SaveFileError)
    assert "bad.simsave: not a readable session file" in str(result.exception)


def test_an_open_branch_is_saved_and_reopens(tmp_path, pm):
    ref: list = [None]
    world = simcore.make(PONG, plugin_manager=pm)
    session = Session(world, policy=scripted(ref), seed=2, realtime=False, max_steps=4)
    ref[0] = session
    session.run()
    branch = session.branch()  # the session's actions now drive the branch
    for a in (2, 2, 1):
        session._step_branch(a)
    path = session.save(tmp_path / "br.simsave")
    expected = [branch.step(a)[0] for a in (0, 1)]
    loaded = load_session(path, plugin_manager=pm)
    assert loaded.control == "branch" and loaded.branch_world.t == 7 and loaded.world.t == 4
    assert loaded.branch_actions == session.branch_actions == [ACTIONS[t] for t in range(4)] + [2, 2, 1]
    for a, frame in zip((0, 1), expected, strict=True):
        np.testing.assert_array_equal(loaded.branch_world.step(a)[0], frame)
