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
from simcore.train import Trainer, TrainConfig, ae_loss, flow_loss, sample_tau, train

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


def _tiny_model(ds: Dataset) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(config_for("tiny", frame_size=ds.frame_size, scenes=tuple(ds.scenes),
                                 num_actions=ds.num_actions, cond_dims=ds.cond_dims()))


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


def test_dit_flow_loss_decreases(data_dir):
    ds = Dataset([data_dir])
    model = _tiny_model(ds)
    T = model.cfg.dit.window + 1
    with torch.no_grad():  # fixed latents of the first frames of two episodes, unit variance
        z = model.encode_frames(torch.stack([ds.episodes[e].frames[:T] for e in range(2)]))
        z = z / z.std()
    actions = torch.stack([ds.episodes[e].actions[:T] for e in range(2)])
    scene = torch.tensor([ds.episodes[e].scene for e in range(2)])
    extra = {"scene_params": torch.stack([ds.episodes[e].cond for e in range(2)])[:, None].expand(-1, T, -1)}
    tau = sample_tau(2, T, torch.Generator().manual_seed(1))

    def loss_at(seed: int) -> torch.Tensor:
        return flow_loss(model.dit, z, tau, actions, scene, extra, torch.Generator().manual_seed(seed))

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
    assert len(ev["dynamics_rollout_psnr"]["psnr_per_step"]) == 16
    rows = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_rollout_psnr" in r] == [5, 10]  # eval_every=5

    from safetensors import safe_open

    with safe_open(str(trained / "train_state.safetensors"), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
    assert state["done"] == ["ae", "dynamics", "finetune"]


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
