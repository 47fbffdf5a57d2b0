"""The render backend: the engine-state vector, state tokens, the backend's contract
(the simulator steps exactly, the model draws), per-step conditioning from real
recordings, real render-training steps, and the render evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from simcore.plugins.conditioning import simcore_conditioning

import simcore
import simcore.collect
from simcore.checkpoint import CheckpointError, save_model
from simcore.data import Dataset
from simcore.errors import BackendError, RecordingError
from simcore.model import WorldModel, config_for
from simcore.recording import read_episodes
from simcore.render import (
    MAX_OBJECTS,
    NUM_FEATURES,
    STATE,
    STATE_DIM,
    RenderModel,
    StateTokens,
    evaluate_render,
    load_render_model,
    save_render_model,
    state_vector,
)
from simcore.objective import flow_loss
from simcore.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BALLS, PONG = "simcore/BouncingBalls-v0", "simcore/Pong-v0"


def tiny_render_model(seed: int = 0, live_state: bool = True) -> RenderModel:
    """A tiny render model for Balls + Pong; ``live_state`` gives the state tokens'
    zero-initialized last layer random weights, so the state visibly changes frames."""
    torch.manual_seed(seed)
    cfg = config_for("tiny", scenes=(BALLS, PONG), num_actions=3, prompt_frames=1,
                     cond_dims={"scene_params": 4, STATE: STATE_DIM})
    m = RenderModel(cfg)
    if live_state:
        with torch.no_grad():
            last = m.dit.state_tokens.mlp[-1]
            last.weight.normal_(0, 0.5)
            for blk in m.dit.blocks:  # adaLN-Zero gates start closed; open them so tokens reach the output
                blk.ada[-1].weight.normal_(0, 0.05)
            m.dit.out.weight.normal_(0, 0.05)
    return m.eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("render_model")
    save_render_model(tiny_render_model(), d, {"name": "tiny-render"})
    return d


# -- the state vector ------------------------------------------------------------------


def test_state_vector_layout_from_ball_objects():
    world = simcore.make(BALLS, count=(3, 3))
    _, info = world.reset(seed=3)
    obj = info["objects"]
    v = state_vector(obj, world.frame_size)
    assert v.shape == (STATE_DIM,) and v.dtype == np.float32
    rows = v.reshape(MAX_OBJECTS, NUM_FEATURES)
    h, w = world.frame_size
    np.testing.assert_allclose(rows[:3, 0], obj["pos"][:, 0] / w, rtol=1e-6)
    np.testing.assert_allclose(rows[:3, 1], obj["pos"][:, 1] / h, rtol=1e-6)
    np.testing.assert_allclose(rows[:3, 2], 2 * obj["radius"] / w, rtol=1e-6)
    np.testing.assert_allclose(rows[:3, 4:7], obj["color"] / 255.0, rtol=1e-6)
    assert (rows[:3, 7] == 1).all() and (rows[:3, 8] == 1).all() and (rows[:3, 9] == 0).all()
    assert not rows[3:].any()  # zero padding


def test_state_vector_marks_pong_paddles_as_boxes_and_truncates():
    world = simcore.make(PONG)
    _, info = world.reset(seed=0)
    rows = state_vector(info["objects"], world.frame_size).reshape(MAX_OBJECTS, NUM_FEATURES)
    assert rows[:3, 9].tolist() == [0.0, 1.0, 1.0]
    np.testing.assert_allclose(rows[1, 3], info["objects"]["size"][1][1] / 64, rtol=1e-6)  # paddle height
    many = simcore.make(BALLS, count=(12, 12))
    _, info = many.reset(seed=0)
    rows = state_vector(info["objects"], many.frame_size).reshape(MAX_OBJECTS, NUM_FEATURES)
    assert rows[:, 8].sum() == MAX_OBJECTS  # the first 8 balls, the rest dropped
    assert not state_vector({}, (64, 64)).any()


def test_state_tokens_are_local_to_the_object():
    tok = StateTokens((8, 8), 16)
    with torch.no_grad():
        tok.mlp[-1].weight.normal_()
        tok.mlp[-1].bias.normal_()
    s = np.zeros((MAX_OBJECTS, NUM_FEATURES), np.float32)
    s[0] = [0.1, 0.1, 0.1, 0.1, 1, 0, 0, 1, 1, 0]  # a small red ball in the top-left corner
    out = tok(torch.from_numpy(s.reshape(1, 1, -1)))  # (1, 1, 64, 16)
    assert out.shape == (1, 1, 64, 16)
    norms = out[0, 0].norm(dim=-1).reshape(8, 8)
    assert norms[0, 0] > 0 and norms[7, 7] == 0 and norms[0, 7] == 0  # far tokens are untouched


# -- the backend -------------------------------------------------------------------------


def test_render_backend_contract(model_dir):
    world = simcore.make(BALLS, backend="render", model=str(model_dir))
    sim = simcore.make(BALLS)
    obs, info = world.reset(seed=5)
    obs_s, _ = sim.reset(seed=5)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, obs_s)  # the reset frame comes from the rasterizer
    for _ in range(3):
        obs, _, _, _, info = world.step(0)
        obs_s, _, _, _, info_s = sim.step(0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert info["rendered"] is True and not world.dreaming
        np.testing.assert_array_equal(info["objects"]["pos"], info_s["objects"]["pos"])  # exact physics
    assert not np.array_equal(obs, obs_s)  # ... and the model, not the rasterizer, drew the frame


def test_render_backend_is_deterministic_per_seed_and_snapshots(model_dir):
    def run(seed):
        w = simcore.make(PONG, backend="render", model=str(model_dir))
        w.reset(seed=seed)
        return np.stack([w.step(a)[0] for a in (1, 2, 0, 1)])

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    w = simcore.make(PONG, backend="render", model=str(model_dir))
    w.reset(seed=1)
    w.step(1)
    snap = w.snapshot()
    a = [w.step(2)[0] for _ in range(2)]
    w.restore(snap)
    b = [w.step(2)[0] for _ in range(2)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_conditioning_hook_supplies_the_state(model_dir):
    world = simcore.make(BALLS, backend="render", model=str(model_dir))
    world.reset(seed=0)
    world.step(0)
    cond = simcore_conditioning(world=world, step=world.t)
    np.testing.assert_array_equal(cond[STATE], state_vector(world.scene.objects(world.state), world.frame_size))
    ext = world.renderer.conditioning(world.t)
    assert set(ext) == {"scene_params", STATE} and ext[STATE].shape == (STATE_DIM,)


def test_the_state_changes_the_frame(model_dir):
    """Same context, same noise, different engine state -> a different frame."""
    m = load_render_model(model_dir)
    world = simcore.make(BALLS, backend="render", model=str(model_dir))
    world.reset(seed=0)
    snap = world.snapshot()
    a = world.step(0)[0]
    world.restore(snap)
    world._state = {**world.state, "pos": world.state["pos"][::-1].copy()}  # the balls swap places
    b = world.step(0)[0]
    assert m is world.renderer.model and not np.array_equal(a, b)


def test_model_kinds_are_not_mixed_up(model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="rendermodel"):
        simcore.make(BALLS, backend="model", model=str(model_dir))
    plain = WorldModel(config_for("tiny", scenes=(BALLS,), cond_dims={"scene_params": 4}))
    save_model(plain, tmp_path / "plain", {"name": "plain"})
    with pytest.raises(CheckpointError, match="not a simcore render model"):
        simcore.make(BALLS, backend="render", model=str(tmp_path / "plain"))
    with pytest.raises(BackendError, match="not trained on"):
        simcore.make("simcore/Projectile-v0", backend="render", model=str(model_dir))


# -- data and training ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render_data")
    simcore.collect.collect(BALLS, episodes=3, steps=12, out_dir=out / "balls", progress=False)
    simcore.collect.collect(PONG, episodes=2, steps=12, out_dir=out / "pong", progress=False)
    return out


def test_dataset_per_step_state_from_recordings(data_dir):
    ds = Dataset([data_dir], step_conditions=("state",))
    assert ds.cond_dims() == {"scene_params": 4, STATE: STATE_DIM}
    ep_data = ds.episodes[0]
    raw = next(ep for f in ds.files for ep in read_episodes(f))
    assert ep_data.steps[STATE].shape == (len(raw.steps), STATE_DIM)
    for t in (0, 5, len(raw.steps) - 1):
        np.testing.assert_array_equal(ep_data.steps[STATE][t].numpy(),
                                      state_vector(raw.steps[t]["state"], tuple(raw.header["frame_size"])))
    assert not torch.equal(ep_data.steps[STATE][0], ep_data.steps[STATE][5])  # balls moved
    ex = ds.extra(0, 2, 4)
    assert ex[STATE].shape == (4, STATE_DIM) and ex["scene_params"].shape == (4, 4)
    torch.testing.assert_close(ex[STATE], ep_data.steps[STATE][2:6])
    with pytest.raises(RecordingError, match="unknown per-step condition"):
        Dataset([data_dir], step_conditions=("nope",))


def test_render_training_steps_lower_the_loss(data_dir, tmp_path):
    cfg = TrainConfig(data=[str(data_dir)], out=str(tmp_path / "run"), size="tiny", backend="render",
                      ae_steps=20, ae_batch=8, dyn_steps=40, dyn_batch=4, dyn_lr=2e-3, eval_every=1000,
                      save_every=1000, progress=False, stages=("ae", "dynamics"))
    tr = Trainer(cfg, log=lambda *_: None)
    assert isinstance(tr.model, RenderModel) and tr.model.cfg.cond_dims[STATE] == STATE_DIM
    tr.train_ae()
    tr.encode_all()
    tr.rng = np.random.default_rng(7)
    z, a, scene, extra = tr.clips(tr.model.cfg.dit.window + 1, 8)
    assert extra[STATE].shape == (8, tr.model.cfg.dit.window + 1, STATE_DIM)
    tau = torch.full(z.shape[:2], 0.5)

    def fixed_loss():
        with torch.no_grad():
            return flow_loss(tr.model.dit, z, tau, a, scene, extra, torch.Generator().manual_seed(0)).item()

    before = fixed_loss()
    tr.state.update(stage="dynamics", step=0)
    tr.train_dynamics()
    assert fixed_loss() < 0.9 * before
    assert tr.model.dit.state_tokens.mlp[-1].weight.abs().sum() > 0  # the state path learned something
    m = load_render_model(tmp_path / "run")  # saved in the render format, with its card
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["backend"] == "render" and card["conditioning"]["per_step"] == [STATE] and card["kind"] == "render"
    w = simcore.make(PONG, backend="render", model=m)
    w.reset(seed=0)
    assert w.step(1)[0].shape == (64, 64, 3)


def test_init_from_copies_the_autoencoder(data_dir, tmp_path, model_dir):
    cfg = TrainConfig(data=[str(data_dir)], out=str(tmp_path / "run"), size="tiny", backend="render",
                      init_from=str(model_dir), progress=False)
    tr = Trainer(cfg, log=lambda *_: None)
    src = load_render_model(model_dir)
    for (k, v), (_, u) in zip(tr.model.ae.state_dict().items(), src.ae.state_dict().items()):
        torch.testing.assert_close(v, u, msg=k)
    bad = TrainConfig(data=[str(data_dir)], out=str(tmp_path / "run2"), size="small", init_from=str(model_dir),
                      progress=False)
    with pytest.raises(CheckpointError, match="does not match"):
        Trainer(bad, log=lambda *_: None)


def test_evaluate_render_reports_psnr_against_the_rasterizer(model_dir, tmp_path):
    rep = evaluate_render(str(model_dir), scenes=[PONG], rollouts=1, horizon=4, out_dir=tmp_path, probes=False,
                          progress=False)
    r = rep["per_scene"][PONG]
    assert len(r["psnr"]) == 4 and all(np.isfinite(r["psnr"])) and 0 < r["ae_psnr"]
    assert (tmp_path / "report.json").is_file() and Path(r["worst_rollout"]["gif"]).is_file()
    assert json.loads((tmp_path / "report.json").read_text())["horizon"] == 4


def test_evaluate_events_reads_events_back_exactly_on_the_floor(model_dir, tmp_path):
    from simcore.render import evaluate_events

    rep = evaluate_events(str(model_dir), seeds=1, before=2, after=20, gravities=(90.0,), out_dir=tmp_path)
    assert rep["add_ball"]["detected_at_ball_fraction_sim"] == 1.0  # the rasterizer draws the added ball
    assert rep["recolor"]["new_colour_at_ball_fraction_sim"] == 1.0
    assert rep["recolor"]["old_colour_gone_fraction_sim"] == 1.0
    fit = rep["gravity"]["per_value"]["90.0"]["fit_sim_mean"]
    assert fit == pytest.approx(90.0, rel=0.02)  # perception recovers the new gravity
    assert (tmp_path / "events.json").is_file()
