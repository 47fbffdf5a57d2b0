"""Training on CPU with tiny configs: losses go down, ``train`` writes a loadable model
with a complete card, runs resume, the model backend plays it, and two gloo processes
under torchrun stay in lockstep."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import simcore
import simcore.collect
from simcore.checkpoint import load_model
from simcore.data import Dataset
from simcore.errors import BackendError
from simcore.model import WorldModel, config_for
from simcore.errors import SimcoreError
from simcore.objective import ae_loss, flow_loss, moving, sample_tau
from simcore.train import Trainer, TrainConfig, apply_model_set, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = "simcore/BouncingBalls-v0"
EPISODES, STEPS = 4, 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    summary = simcore.collect.collect(SCENE, episodes=EPISODES, steps=STEPS, out_dir=out, progress=False)
    assert summary["episodes"] == EPISODES
    return out


def tiny_config(data_dir, out, **kw) -> TrainConfig:
    base = dict(data=[str(data_dir)], out=str(out), size="tiny", ae_steps=10, dyn_steps=10, ft_steps=3,
                ae_batch=4, dyn_batch=2, ft_batch=2, eval_every=5, save_every=5, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Path:
    """One full run (all three stages), shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run") / "model"
    logs: list[str] = []
    result = train(tiny_config(data_dir, out), log=logs.append)
    assert Path(result) == out
    return out


def _card(out) -> dict:
    return json.loads((Path(out) / "model_card.json").read_text())


# ---------------------------------------------------------------------------
# losses go down
# ---------------------------------------------------------------------------


def _tiny_model(ds: Dataset, **dit) -> WorldModel:
    torch.manual_seed(0)
    cfg = config_for("tiny", frame_size=ds.frame_size, scenes=tuple(ds.scenes),
                     num_actions=ds.num_actions, cond_dims=ds.cond_dims())
    for k, v in dit.items():
        setattr(cfg.dit, k, v)
    return WorldModel(cfg)


def test_autoencoder_loss_decreases(data_dir):
    ds = Dataset([data_dir])
    model = _tiny_model(ds)
    frames = ds.random_frames(8, np.random.default_rng(0))
    opt = torch.optim.AdamW(model.ae.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = ae_loss(model.ae, frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        end = ae_loss(model.ae, frames).item()
    assert np.isfinite(losses).all()
    assert end < 0.7 * losses[0], (losses[0], end)  # measured: ~0.12x


@pytest.mark.parametrize("dit,motion_weight", [({}, 0.0), ({"target": "x0"}, 0.0),
                                               ({"target": "x0", "residual": True}, 5.0)],
                         ids=["v", "x0", "x0-residual-motion"])
def test_dit_flow_loss_decreases(data_dir, dit, motion_weight):
    ds = Dataset([data_dir])
    model = _tiny_model(ds, **dit)
    T = model.cfg.dit.window + 1
    with torch.no_grad():  # fixed latents of the first frames of two episodes, unit variance
        z = model.encode_frames(torch.stack([ds.episodes[e].frames[:T] for e in range(2)]))
        z = z / z.std()
    actions = torch.stack([ds.episodes[e].actions[:T] for e in range(2)])
    scene = torch.tensor([ds.episodes[e].scene for e in range(2)])
    extra = {"scene_params": torch.stack([ds.episodes[e].cond for e in range(2)])[:, None].expand(-1, T, -1)}
    tau, _ = sample_tau(2, T, torch.Generator().manual_seed(1))

    def loss_at(seed: int) -> torch.Tensor:
        return flow_loss(model.dit, z, tau, actions, scene, extra, torch.Generator().manual_seed(seed),
                         motion_weight=motion_weight)

    seeds = range(4)  # four fixed noise draws; start and end are their mean loss
    with torch.no_grad():
        start = float(np.mean([loss_at(s).item() for s in seeds]))
    opt = torch.optim.AdamW(model.dit.parameters(), lr=3e-3)
    for step in range(40):
        loss = loss_at(seeds[step % len(seeds)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(np.mean([loss_at(s).item() for s in seeds]))
    assert np.isfinite(start) and np.isfinite(end)
    assert end < 0.8 * start, (start, end)  # measured: ~0.62x


def test_sample_tau_teacher_forced_share_and_logit_normal():
    gen = torch.Generator().manual_seed(0)
    tau, forced = sample_tau(4000, 5, gen, ctx_max=0.1, tf_share=1.0)
    assert forced.all() and (tau[:, :-1] <= 0.1).all() and tau[:, -1].mean() > 0.4
    tau, forced = sample_tau(4000, 5, gen, tf_share=0.0, dist="logit-normal", loc=1.5, scale=1.0)
    assert not forced.any() and 0.7 < float(tau.mean()) < 0.85  # E[σ(N(1.5, 1))] ≈ 0.78
    tau, forced = sample_tau(4000, 5, gen, tf_share=0.5)
    assert 0.45 < float(forced.float().mean()) < 0.55
    with pytest.raises(ValueError, match="logit-normal"):
        sample_tau(2, 2, gen, dist="beta")


def test_moving_marks_where_latents_change():
    z = torch.zeros(1, 3, 2, 8, 8)
    z[0, 1, :, 4, 4] = 1.0  # something appears at (4, 4) in frame 1 and leaves in frame 2
    m = moving(z)
    assert m.shape == (1, 3, 1, 8, 8)
    for t in range(3):
        assert m[0, t, 0, 4, 4] == 1 and m[0, t, 0, 3:6, 3:6].sum() == 9  # dilated by one latent pixel
        assert m[0, t, 0, 0, 0] == 0


def test_residual_x0_model_starts_as_copying_the_last_frame(data_dir):
    """A fresh residual x0 DiT (zero-initialised output) predicts the previous latent: one
    Euler step from pure noise lands exactly on the last context frame."""
    from simcore.rollout import Rollout

    ds = Dataset([data_dir])
    model = _tiny_model(ds, target="x0", residual=True).eval()
    z = model.encode_frames(ds.episodes[0].frames[None, :3])  # (1, 3, C, h, w)
    for steps in (1, 4):
        roll = Rollout(model, steps=steps, seed=0, scene=0)
        roll.prompt(z, torch.zeros(1, 3, dtype=torch.long), {"scene_params": ds.episodes[0].cond})
        out = roll.generate(1, {"scene_params": ds.episodes[0].cond})
        torch.testing.assert_close(out, z[:, 2].clamp(-6, 6), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="target 'x0'"):
        _tiny_model(ds, residual=True)


def test_a_resumed_run_may_change_how_the_model_samples(trained, data_dir, tmp_path):
    out = tmp_path / "resampled"
    shutil.copytree(trained, out)
    tr = Trainer(tiny_config(data_dir, out, model_set={"sample_steps": 1}), log=lambda *_: None)
    assert tr.model.cfg.sample_steps == 1 and tr.state["done"] == ["ae", "dynamics", "finetune"]
    with pytest.raises(ValueError, match="another model config"):
        Trainer(tiny_config(data_dir, out, model_set={"dit.target": "x0"}), log=lambda *_: None)


def test_model_settings_override_and_reject_unknown_names():
    cfg = config_for("tiny")
    apply_model_set(cfg, {"dit.target": "x0", "dit.residual": "true", "dit.dim": "48", "ctx_noise": "0.05"})
    assert (cfg.dit.target, cfg.dit.residual, cfg.dit.dim, cfg.ctx_noise) == ("x0", True, 48, 0.05)
    with pytest.raises(SimcoreError, match="unknown model setting 'dit.widht'.*dit.dim"):
        apply_model_set(cfg, {"dit.widht": "3"})
    with pytest.raises(SimcoreError, match="takes a int"):
        apply_model_set(cfg, {"dit.depth": "deep"})


def test_ema_weights_are_what_is_evaluated_and_saved(data_dir, tmp_path):
    out = tmp_path / "ema"
    tr = Trainer(tiny_config(data_dir, out, stages=("ae", "dynamics"), ae_steps=3, dyn_steps=6, ema=0.9,
                             eval_every=1000), log=lambda *_: None)
    tr.run()
    assert tr.ema is not None
    saved = load_model(out).dit.state_dict()
    raw = dict(tr.model.dit.named_parameters())
    assert any(not torch.equal(saved[k], raw[k].detach()) for k in raw)  # the saved DiT is not the raw one ...
    for k in raw:
        torch.testing.assert_close(saved[k], tr.ema[k])  # ... it is the moving average


def test_init_from_starts_the_whole_model_when_configs_match(trained, data_dir, tmp_path):
    tr = Trainer(tiny_config(data_dir, tmp_path / "cont", init_from=str(trained)), log=lambda *_: None)
    src = load_model(trained)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, msg=k)
    assert tr.state["init_from"]["parts"] == ["ae", "dit"] and not tr.state["init_from"]["path"].startswith("/")
    other = Trainer(tiny_config(data_dir, tmp_path / "other", init_from=str(trained), model_set={"dit.target": "x0"}),
                    log=lambda *_: None)
    assert other.state["init_from"]["parts"] == ["ae"]  # another DiT config: only the autoencoder
    only_ae = Trainer(tiny_config(data_dir, tmp_path / "only", init_from=str(trained), init_parts="ae"),
                      log=lambda *_: None)
    assert only_ae.state["init_from"]["parts"] == ["ae"]
    for k, v in src.ae.state_dict().items():
        torch.testing.assert_close(other.model.ae.state_dict()[k], v, msg=k)


# ---------------------------------------------------------------------------
# the full trainer: outputs, card, loadable model
# ---------------------------------------------------------------------------


def test_train_writes_model_card_state_and_log(trained):
    for name in ("model.safetensors", "model_card.json", "train_state.safetensors", "train_log.jsonl"):
        assert (trained / name).is_file(), name
    assert not list(trained.glob("*.tmp"))
    card = _card(trained)
    assert card["scenes"] == [SCENE]
    assert card["data"]["episodes"] == EPISODES
    assert card["data"]["frames"] == EPISODES * (STEPS + 1)
    assert card["data"]["per_scene"][SCENE]["episodes"] == EPISODES
    tr = card["training"]
    assert tr["steps"] == {"ae": 10, "dynamics": 10, "finetune": 3}
    assert tr["stages_done"] == ["ae", "dynamics", "finetune"]
    assert set(tr["wall_time_s"]) == {"ae", "dynamics", "finetune"}
    assert all(isinstance(v, (int, float)) and v >= 0 for v in tr["wall_time_s"].values())
    assert all(np.isfinite(v) for v in tr["final_loss"].values())
    hw = tr["hardware"]
    assert hw["torch"] == torch.__version__ and ("cpu" in hw or "gpu" in hw)
    assert isinstance(tr["commands"], list) and len(tr["commands"]) == 1 and tr["commands"][0].startswith("simcore")
    assert tr["processes"] == 1
    assert tr["config"]["size"] == "tiny"
    assert card["config"]["scenes"] == [SCENE] and card["parameters"]["total"] > 0
    ev = card["evaluation_during_training"]
    assert "ae_psnr_train_sample" in ev
    assert ev["dynamics_curve"]["step"] == 10 and SCENE in ev["dynamics_curve"]["scenes"]
    assert tr["cpu_minutes"] > 0
    assert not any(f.startswith("/") for f in card["data"]["files"])  # no absolute paths of this machine

    from safetensors import safe_open

    with safe_open(str(trained / "train_state.safetensors"), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    assert state["done"] == ["ae", "dynamics", "finetune"]


def test_train_writes_learning_curves_per_cpu_minute(trained):
    rows = [json.loads(line) for line in (trained / "curves.jsonl").read_text().splitlines()]
    # every eval_every=5 steps, and where each stage ends (finetune: 3 steps)
    assert [(r["stage"], r["step"]) for r in rows] == [("dynamics", 0), ("dynamics", 5), ("dynamics", 10), ("finetune", 3)]
    cpu = [r["cpu_min"] for r in rows]
    assert cpu == sorted(cpu) and cpu[-1] > cpu[0]
    for r in rows:
        fig = r["scenes"][SCENE]
        for key in ("tf1_psnr", "copy_psnr", "ae_psnr", "rollout_psnr@1", "rollout_psnr@8", "rollout_psnr@16"):
            assert np.isfinite(fig[key]) and 0 < fig[key] < 100, (key, fig[key])
        assert "p7_accuracy" not in fig  # no actions in this scene
    # copying is measured on the held-out truth, so it is the same at every point
    assert len({r["scenes"][SCENE]["copy_psnr"] for r in rows}) == 1
    png = (trained / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_curves_hold_out_episodes(data_dir, tmp_path):
    tr = Trainer(tiny_config(data_dir, tmp_path / "run", holdout=0.25), log=lambda *_: None)
    assert list(tr.val_eps) == [EPISODES - 1]  # the last of each scene's episodes
    assert EPISODES - 1 not in set(tr.train_eps)
    tr.rng = np.random.default_rng(0)
    tr.latents = [torch.zeros(len(e.frames), 4, 16, 16) for e in tr.data.episodes]
    picked = {e for e, _ in tr.data.clip_index(5, 200, tr.rng, among=tr.train_eps)}
    assert picked == set(range(EPISODES - 1))


def test_trained_model_loads_and_plays(trained):
    model = load_model(trained)
    assert model.cfg.scenes == (SCENE,) and model.cfg.cond_dims == {"scene_params": 4}
    assert float(model.ae.latent_scale) != 1.0  # measured after the AE stage
    world = simcore.make(SCENE, backend="model", model=trained)
    obs, info = world.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for _ in range(5):
        obs, reward, terminated, truncated, info = world.step(0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["dream"] is True and world.dreaming


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def test_resume_continues_an_interrupted_stage(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = dict(stages=("ae", "dynamics"), ae_steps=4, dyn_steps=6, save_every=2, eval_every=1000)
    original_save = Trainer._save_state

    def save_then_die(self, opt):  # "kill" the run right after the mid-stage snapshot at dynamics step 2
        original_save(self, opt)
        if self.state["stage"] == "dynamics" and self.state["step"] == 2:
            raise _Interrupted

    monkeypatch.setattr(Trainer, "_save_state", save_then_die)
    with pytest.raises(_Interrupted):
        train(tiny_config(data_dir, out, command="simcore train --first-run", **cfg), log=lambda *_: None)
    monkeypatch.setattr(Trainer, "_save_state", original_save)
    ae_after_first = {k: v.clone() for k, v in load_model(out).ae.state_dict().items()}
    assert _card(out)["training"]["steps"] == {"ae": 4}

    logs: list[str] = []
    train(tiny_config(data_dir, out, command="simcore train --second-run", **{**cfg, "dyn_steps": 8}),
          log=logs.append)
    assert any("resumed" in m and "dynamics" in m and "step 2" in m for m in logs), logs
    tr = _card(out)["training"]
    assert tr["steps"] == {"ae": 4, "dynamics": 8}
    assert tr["stages_done"] == ["ae", "dynamics"]
    assert tr["commands"] == ["simcore train --first-run", "simcore train --second-run"]
    ae_final = load_model(out).ae.state_dict()
    assert all(torch.equal(ae_after_first[k], ae_final[k]) for k in ae_final)  # the AE was not retrained


def test_resume_with_more_steps_extends_a_finished_stage(trained, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "again"
    shutil.copytree(trained, out)
    train(tiny_config(data_dir, out, stages=("ae", "dynamics"), dyn_steps=14, eval_every=1000,
                      save_every=1000, command="simcore train --more"), log=lambda *_: None)
    tr = _card(out)["training"]
    assert tr["commands"][-1] == "simcore train --more" and len(tr["commands"]) == 2
    assert tr["steps"]["ae"] == 10
    assert tr["steps"]["dynamics"] == 14


def test_resume_after_the_last_snapshot_of_a_stage(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = dict(stages=("ae",), ae_steps=4, save_every=2)

    def die(self, *a, **k):
        raise _Interrupted

    monkeypatch.setattr(Trainer, "ae_psnr", die)  # killed while measuring, after the step-4 snapshot
    with pytest.raises(_Interrupted):
        train(tiny_config(data_dir, out, **cfg), log=lambda *_: None)
    monkeypatch.undo()
    train(tiny_config(data_dir, out, **cfg), log=lambda *_: None)
    assert _card(out)["training"]["steps"] == {"ae": 4}


# ---------------------------------------------------------------------------
# the model backend
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_model_backend_opens_with_the_simulator(trained, seed):
    model = load_model(trained)
    dream = simcore.make(SCENE, backend="model", model=trained)
    sim = simcore.make(SCENE)
    obs_d, info_d = dream.reset(seed=seed)
    obs_s, info_s = sim.reset(seed=seed)
    assert np.array_equal(obs_d, obs_s)
    assert "dream" not in info_d and not dream.dreaming
    p = model.cfg.prompt_frames
    for t in range(1, p):  # prompt phase: still simulated, with the caller's actions
        od, _, _, _, info = dream.step(0)
        os_, *_ = sim.step(0)
        assert np.array_equal(od, os_), f"prompt frame {t} differs from the simulator"
        assert "dream" not in info and "objects" in info
    for t in range(p, p + 3):
        od, reward, terminated, _, info = dream.step(0)
        assert info["dream"] is True and info["step"] == t and "objects" not in info
        assert reward == 0.0 and terminated is False
        assert od.shape == (64, 64, 3) and od.dtype == np.uint8


@pytest.mark.parametrize("snap_at", [1, 4])  # during the prompt phase / while dreaming
def test_model_backend_snapshot_restore_replays_bit_identically(trained, snap_at):
    world = simcore.make(SCENE, backend="model", model=trained)
    world.reset(seed=2)
    for _ in range(snap_at):
        world.step(0)
    snap = world.snapshot()
    first = [world.step(0)[0] for _ in range(5)]
    world.step(0)  # move on, then rewind
    world.restore(snap)
    assert world.t == snap_at
    second = [world.step(0)[0] for _ in range(5)]
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    other = simcore.make(SCENE, backend="model", model=trained)  # a fresh world of the same model
    other.reset(seed=11)
    other.restore(snap)
    third = [other.step(0)[0] for _ in range(5)]
    for a, c in zip(first, third):
        assert np.array_equal(a, c)


def test_model_backend_errors(trained):
    with pytest.raises(BackendError, match="not trained on 'simcore/Pong-v0'.*BouncingBalls"):
        simcore.make("simcore/Pong-v0", backend="model", model=trained)
    with pytest.raises(BackendError, match="64x64.*32x32"):
        simcore.make(SCENE, backend="model", model=trained, frame_size=(32, 32))
    pm = simcore.create_plugin_manager(autoload=False, disable=["conditioning"])
    with pytest.raises(BackendError, match="scene_params.*conditioning"):
        world = simcore.make(SCENE, backend="model", model=trained, plugin_manager=pm)
        world.reset(seed=0)


def test_model_backend_leaves_autograd_alone(trained):
    assert torch.is_grad_enabled()
    simcore.make(SCENE, backend="model", model=trained).reset(seed=0)
    assert torch.is_grad_enabled()


# ---------------------------------------------------------------------------
# DDP: two CPU processes (gloo) under torchrun
# ---------------------------------------------------------------------------

DDP_WORKER = textwrap.dedent('''
    import os, sys
    import torch
    torch.set_num_threads(1)
    import safetensors.torch as st

    rank = int(os.environ["RANK"])
    data, out, logs = sys.argv[1:4]
    real_save_file = st.save_file

    def logged_save_file(tensors, filename, *args, **kwargs):  # who writes what
        with open(os.path.join(logs, f"writes_rank{rank}.txt"), "a") as f:
            f.write(os.path.basename(str(filename)) + "\\n")
        return real_save_file(tensors, filename, *args, **kwargs)

    st.save_file = logged_save_file
    import simcore.train as T

    trainers = []
    real_run = T.Trainer.run

    def run(self):
        trainers.append(self)
        return real_run(self)

    T.Trainer.run = run
    T.train(T.TrainConfig(data=[data], out=out, size="tiny", ae_steps=3, dyn_steps=3, ft_steps=2,
                          ae_batch=2, dyn_batch=2, ft_batch=2, eval_every=1000, save_every=2,
                          progress=False), log=lambda *a: None)
    tr = trainers[0]
    assert tr.world == 2, tr.world
    params = {k: v.detach().cpu().contiguous() for k, v in tr.model.state_dict().items()}
    real_save_file(params, os.path.join(logs, f"params_rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_agree(data_dir, tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "ddp_worker.py"
    script.write_text(DDP_WORKER)
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "SIMCORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", str(script), str(data_dir), str(out), str(logs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    p0 = load_file(str(logs / "params_rank0.safetensors"))
    p1 = load_file(str(logs / "params_rank1.safetensors"))
    assert p0.keys() == p1.keys()
    assert any(k.startswith("ae.") for k in p0) and any(k.startswith("dit.") for k in p0)
    differ = [k for k in p0 if not torch.equal(p0[k], p1[k])]
    assert not differ, f"ranks disagree on {differ[:5]}"

    assert (out / "model.safetensors").is_file()
    saved = load_model(out).state_dict()
    assert all(torch.equal(saved[k], p0[k]) for k in p0)
    assert not (logs / "writes_rank1.txt").exists(), (logs / "writes_rank1.txt").read_text()
    writes0 = (logs / "writes_rank0.txt").read_text().split()
    assert "model.safetensors.tmp" in writes0 and "train_state.safetensors.tmp" in writes0
    card = _card(out)
    assert card["training"]["processes"] == 2
    assert card["training"]["steps"] == {"ae": 3, "dynamics": 3, "finetune": 2}
