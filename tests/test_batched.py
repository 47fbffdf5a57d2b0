"""BatchedModelEnv: B dreamed envs through one rollout equal B single model envs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import simcore
from simcore.batched import BatchedModelEnv
from simcore.errors import BackendError, InvalidActionError, SimcoreError
from simcore.model import WorldModel, config_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = "simcore/Pong-v0"
OPTS: dict = {}


@pytest.fixture(scope="module")
def model():
    """A tiny untrained model whose every weight is perturbed: the zero-initialised output
    layers would otherwise make the velocity 0 and every frame independent of the context."""
    torch.manual_seed(0)
    m = WorldModel(config_for("tiny", scenes=("simcore/BouncingBalls-v0", SCENE), num_actions=3,
                              cond_dims={"scene_params": 4}))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _singles(model, n, **kw):
    return [simcore.make(SCENE, backend="model", model=model, **OPTS, **kw) for _ in range(n)]


def _close(a, b):
    """uint8 frames equal up to float rounding of batched vs single kernels."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return diff.max() <= 3 and (diff > 0).mean() < 0.01


def test_batched_env_equals_single_envs(model):
    b, steps = 3, 9  # 2 simulated prompt steps, then 7 dreamed
    env = BatchedModelEnv(SCENE, b, model=model, **OPTS)
    singles = _singles(model, b)
    obs, info = env.reset(seed=5)
    assert obs.shape == (b, 64, 64, 3) and obs.dtype == np.uint8
    for i, w in enumerate(singles):
        assert np.array_equal(obs[i], w.reset(seed=5 + i)[0])  # the simulator's frame
    rng = np.random.default_rng(0)
    for t in range(1, steps + 1):
        actions = rng.integers(0, 3, size=b)
        obs, rew, term, trunc, info = env.step(actions)
        for i, w in enumerate(singles):
            o, r, te, tr, inf = w.step(int(actions[i]))
            assert _close(obs[i], o), f"env {i} step {t}"
            assert rew[i] == r and term[i] == te and tr == trunc[i]
            assert info["step"][i] == inf["step"] == t
            assert bool(info.get("dream", np.zeros(b, bool))[i]) == inf.get("dream", False)
    assert env.cohorts == [[0, 1, 2]]  # one rollout batch
    assert len({obs[i].tobytes() for i in range(b)}) == b  # the envs really differ
    env.close()


def test_actions_change_the_dream(model):
    env = BatchedModelEnv(SCENE, 2, model=model, **OPTS)
    env.reset(seed=[3, 3])  # two identical openings
    for _ in range(2):
        obs, *_ = env.step(np.array([1, 1]))
    assert np.array_equal(obs[0], obs[1])
    obs, *_ = env.step(np.array([0, 2]))  # first dreamed frame, different actions
    assert not np.array_equal(obs[0], obs[1])


def test_autoreset_and_partial_reset_match_single_envs(model):
    b = 2
    env = BatchedModelEnv(SCENE, b, model=model, max_episode_steps=4, **OPTS)
    singles = _singles(model, b, max_episode_steps=4)
    env.reset(seed=[11, 12])
    for i, w in enumerate(singles):
        w.reset(seed=11 + i)
    # env 1 restarts (seed 40) after two steps: it splits off into its own cohort
    for t in range(2):
        obs, *_ = env.step(np.array([t % 3, 2]))
        for i, w in enumerate(singles):
            assert _close(obs[i], w.step(int([t % 3, 2][i]))[0])
    obs, _ = env.reset(seed=[None, 40], options={"reset_mask": np.array([False, True])})
    assert np.array_equal(obs[1], singles[1].reset(seed=40)[0])
    assert sorted(env.cohorts) == [[0], [1]]
    pending, resets = [False, False], [0, 0]
    for t in range(6):
        actions = np.array([1, (t + 1) % 3])
        obs, rew, term, trunc, info = env.step(actions)
        for i, w in enumerate(singles):
            if pending[i]:  # NEXT_STEP autoreset: this step is the reset, without a seed
                o, inf = w.reset()
                assert not trunc[i] and rew[i] == 0
                resets[i] += 1
            else:
                o, _, _, tr, inf = w.step(int(actions[i]))
                assert trunc[i] == tr
            assert _close(obs[i], o), f"env {i} step {t}"
            pending[i] = bool(trunc[i])
    assert resets == [1, 1]  # both envs ran into max_episode_steps and were autoreset


def test_bad_input_is_reported(model):
    with pytest.raises(BackendError, match="not trained"):
        BatchedModelEnv("simcore/Collision-v0", 2, model=model)
    env = BatchedModelEnv(SCENE, 2, model=model, **OPTS)
    with pytest.raises(SimcoreError, match="reset"):
        env.step(np.array([0, 0]))
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.step(np.array([0, 7]))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.array([0]))
    with pytest.raises(SimcoreError, match="seeds"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(SimcoreError):
        BatchedModelEnv(SCENE, 0, model=model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_env_on_cuda_equals_single_envs(model):
    gpu_model = WorldModel(model.cfg).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    env = BatchedModelEnv(SCENE, 4, model=gpu_model, device="cuda", **OPTS)
    singles = [simcore.make(SCENE, backend="model", model=gpu_model, device="cuda", **OPTS) for _ in range(4)]
    obs, _ = env.reset(seed=0)
    for i, w in enumerate(singles):
        assert np.array_equal(obs[i], w.reset(seed=i)[0])
    for t in range(6):
        actions = np.array([t % 3, 0, 1, 2])
        obs, *_ = env.step(actions)
        for i, w in enumerate(singles):
            o = w.step(int(actions[i]))[0]
            assert np.abs(obs[i].astype(int) - o.astype(int)).mean() < 1.0, f"env {i} step {t + 1}"


def test_cohorts_merge_once_their_contexts_are_full(model):
    b = 3
    env = BatchedModelEnv(SCENE, b, model=model, **OPTS)
    singles = _singles(model, b)
    env.reset(seed=20)
    for i, w in enumerate(singles):
        w.reset(seed=20 + i)
    rng = np.random.default_rng(1)

    def step_all():
        actions = rng.integers(0, 3, size=b)
        obs, *_ = env.step(actions)
        for i, w in enumerate(singles):
            assert _close(obs[i], w.step(int(actions[i]))[0])

    for _ in range(3):
        step_all()
    env.reset(seed=[None, 50, None], options={"reset_mask": np.array([False, True, False])})
    singles[1].reset(seed=50)
    assert sorted(env.cohorts) == [[0, 2], [1]]
    window = model.cfg.dit.window
    for _ in range(window):  # env 1's context fills up (reset frame + window - 1 steps)
        step_all()
    assert sorted(map(sorted, env.cohorts)) == [[0, 1, 2]]  # one batch again
    for _ in range(4):  # and the merged batch still reproduces every single env
        step_all()


def test_benchmark_script_runs(model, tmp_path):
    """benchmarks/batched_model_envs.py end to end on the tiny model (timings not checked)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from simcore.checkpoint import save_model

    model_dir = save_model(model, tmp_path / "tiny")
    out = tmp_path / "bench.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "batched_model_envs.py"
    proc = subprocess.run([sys.executable, str(script), "--model", str(model_dir), "--batches", "1", "3",
                           "--steps", "2", "--repeats", "1", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(out.read_text())
    assert [(r["mode"], r["batch"]) for r in rep["results"]] == [("batched", 1), ("separate", 1), ("batched", 3),
                                                                 ("separate", 3)]
    assert all(r["env_frames_per_s"] > 0 for r in rep["results"]) and "cores" in rep["machine"]
    assert set(rep["speedup_batched_over_separate"]) == {"1", "3"}


def test_make_vec_batched_mode_is_the_batched_env(model):
    env = simcore.make_vec(SCENE, 2, vectorization_mode="batched", backend="model", model=model)
    assert isinstance(env, BatchedModelEnv) and env.num_envs == 2
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(np.array([0, 1]))
    assert obs.shape == (2, 64, 64, 3)
    env.close()
    with pytest.raises(simcore.SimcoreError, match="needs backend='model'"):
        simcore.make_vec(SCENE, 2, vectorization_mode="batched")
    with pytest.raises(simcore.SimcoreError, match="'sync', 'async' or 'batched'"):
        simcore.make_vec(SCENE, 2, vectorization_mode="ray")
