"""P7 control probe (simcore.plugins.probes.control): the structure it returns, the
paddle reading on true frames (the sim floor), and the model backend's errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import simcore
import simcore.checkpoint
import simcore.model
from simcore.errors import BackendError
from simcore.plugins import probes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    cfg = simcore.model.config_for("tiny", scenes=("simcore/Pong-v0",), num_actions=3,
                                   cond_dims={"scene_params": 4})
    path = tmp_path_factory.mktemp("control-model") / "tiny"
    saved = simcore.checkpoint.save_model(simcore.model.WorldModel(cfg), path)
    return saved if saved is not None else path


@pytest.fixture(scope="module")
def result(tiny_model):
    return probes.control(tiny_model, rollouts=1, horizon=6)


def test_structure(result):
    json.dumps(result, allow_nan=False)  # JSON-safe
    assert result["probe"] == "p7_control" and result["rollouts"] == 1 and result["horizon"] == 6
    assert set(result["per_action"]) == {"noop", "up", "down"}
    assert len(result["per_rollout"]) == 1
    r = result["per_rollout"][0]
    for key in ("seed", "accuracy", "sim_accuracy", "psnr_true", "psnr_shuffled", "delta_psnr", "actions",
                "shuffled_actions", "dy_model", "dy_sim"):
        assert key in r
    assert len(r["actions"]) == 6 and sorted(r["actions"]) == sorted(r["shuffled_actions"])
    assert len(r["dy_model"]) == 6
    assert result["threshold_px"] == pytest.approx(60.0 * 0.05 / 3)
    for name in ("direction_accuracy", "delta_psnr"):
        t = result["targets"][name]
        assert set(t) >= {"name", "threshold", "measured", "passed"} and t["name"] == name
    assert result["targets"]["direction_accuracy"]["threshold"] == 0.95
    assert result["targets"]["delta_psnr"]["threshold"] == 1.0
    assert isinstance(result["delta_psnr"], float)


def test_sim_floor(result):
    assert result["steps_counted"] > 0
    assert result["sim_accuracy"] >= 0.9


def test_sim_floor_longer(tiny_model):
    res = probes.control(tiny_model, rollouts=2, horizon=24, seed=7)
    assert res["steps_counted"] >= 20
    assert res["sim_accuracy"] >= 0.9
    for name, v in res["sim_per_action"].items():
        assert v["accuracy"] is None or v["accuracy"] >= 0.9, name


def test_unknown_scene_raises_backend_error(tiny_model):
    with pytest.raises(BackendError, match="not trained on"):
        probes.control(tiny_model, scene="simcore/BouncingBalls-v0", rollouts=1, horizon=2)


def test_paddle_reading_and_direction():
    world = simcore.make("simcore/Pong-v0")
    obs, _ = world.reset(seed=3)
    colors = [world.scene.colors["player"], world.scene.colors["opponent"], world.scene.colors["ball"]]
    y0 = probes.paddle_centre_y(obs, colors, x_max=16)
    assert y0 == pytest.approx(float(world.state["paddle_y"][0]), abs=0.05)
    obs, *_ = world.step(1)
    y1 = probes.paddle_centre_y(obs, colors, x_max=16)
    assert y1 - y0 == pytest.approx(-3.0, abs=0.1)
    assert math.isnan(probes.paddle_centre_y(np.zeros_like(obs) + np.asarray(world.scene.background, np.uint8),
                                             colors, x_max=16))
    assert probes.direction_correct(1, -2.0, 1.0) and not probes.direction_correct(1, 2.0, 1.0)
    assert probes.direction_correct(2, 2.0, 1.0) and probes.direction_correct(0, 0.5, 1.0)
    assert not probes.direction_correct(0, 1.5, 1.0) and not probes.direction_correct(2, math.nan, 1.0)


def test_held_actions():
    a = probes.held_actions(np.random.default_rng(0), 50)
    assert len(a) == 50 and set(a.tolist()) <= {0, 1, 2}
    runs = np.split(a, np.flatnonzero(np.diff(a)) + 1)
    assert all(len(r) >= 3 for r in runs[:-1])  # held at least 3 steps (the last run may be cut)
