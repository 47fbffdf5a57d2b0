"""simcore eval: metrics helpers, the report, its files and the CLI, on a tiny random model."""
from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import simcore
from simcore.checkpoint import CheckpointError, save_model
from simcore.cli import app
from simcore.errors import BackendError, SimcoreError
from simcore.evaluate import GIF_GAP, GIF_SCALE, evaluate, frame_psnr, gaussian_window, psnr, ssim
from simcore.model import WorldModel, config_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENES = ("simcore/Pong-v0", "simcore/BouncingBalls-v0")
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = WorldModel(config_for("tiny", scenes=SCENES, num_actions=3, cond_dims={"scene_params": 4}))
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny-eval", {"name": "tiny-eval"})


@pytest.fixture(scope="module")
def result(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    pm = simcore.create_plugin_manager(autoload=False)
    report = evaluate(model_dir, rollouts=2, horizon=4, long_horizon=20, out_dir=out, progress=False,
                      plugin_manager=pm)
    return report, out


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def test_psnr_known_values_and_identical_frames():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))  # MSE 1
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255^2 / 192
    assert psnr(a, b) == pytest.approx(10 * math.log10(192))
    stack = np.stack([a, a + 1, b])
    np.testing.assert_allclose(frame_psnr(stack, np.stack([a, a, a])), [math.inf, psnr(a, a + 1), psnr(a, b)])


def test_sim_frames_against_themselves_are_perfect():
    world = simcore.make("simcore/BouncingBalls-v0")
    frames = [world.reset(seed=3)[0]] + [world.step(0)[0] for _ in range(3)]
    f = np.stack(frames)
    assert np.all(np.isinf(frame_psnr(f, f)))
    np.testing.assert_allclose(ssim(f, f), 1.0)
    assert ssim(f[0], f[0]) == pytest.approx(1.0)
    assert ssim(f[0], f[1]) < 1.0


def test_ssim_constant_images_follow_the_luminance_formula():
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 140.0)
    expected = (2 * 100 * 140 + C1) / (100**2 + 140**2 + C1)  # no variance: only luminance is left
    assert ssim(a, b) == pytest.approx(expected, rel=1e-12)


def _ssim_direct(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM written out window by window (Wang et al. 2004, eq. 13 with Gaussian weights)."""
    w = np.outer(gaussian_window(), gaussian_window())
    k = w.shape[0]
    vals = []
    for i in range(x.shape[0] - k + 1):
        for j in range(x.shape[1] - k + 1):
            px, py = x[i:i + k, j:j + k], y[i:i + k, j:j + k]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(vals))


def test_ssim_noisy_image_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (18, 20, 3))
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    expected = np.mean([_ssim_direct(x[..., c], y[..., c]) for c in range(3)])  # per channel, then mean
    assert ssim(x, y) == pytest.approx(expected, rel=1e-9)
    assert ssim(y, x) == pytest.approx(expected, rel=1e-9)  # symmetric
    assert 0 < expected < 1
    assert ssim(x[..., 0], y[..., 0]) == pytest.approx(_ssim_direct(x[..., 0], y[..., 0]), rel=1e-9)
    np.testing.assert_allclose(ssim(np.stack([x, x]), np.stack([y, x])), [expected, 1.0], rtol=1e-9)
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))  # smaller than the window


# ---------------------------------------------------------------------------
# the report and its files
# ---------------------------------------------------------------------------


def test_report_structure(result):
    report, _ = result
    assert report["scenes"] == list(SCENES)  # default: the model's scenes
    assert report["rollouts"] == 2 and report["horizon"] == 4 and report["long_horizon"] == 20
    assert report["seeds"] == {"rollouts": [1_000_000, 1_000_001], "long": 1_000_002}
    assert report["denoise_steps"] == 4
    assert report["model"]["name"] == "tiny-eval" and report["model"]["card_name"] == "tiny-eval"
    assert "per RGB channel" in report["metrics"]["ssim"]
    assert report["machine"]["cores"] and report["machine"]["cpu"] and report["wall_time_s"] > 0 and report["command"]
    for sid in SCENES:
        r = report["per_scene"][sid]
        assert len(r["psnr"]) == 4 and len(r["ssim"]) == 4
        assert set(r["psnr_at"]) == {"1"} == set(r["ssim_at"])  # 16/32/64 not reached
        assert r["psnr_at"]["1"] == pytest.approx(r["psnr"][0], abs=1e-3)
        assert all(np.isfinite(r["psnr"])) and all(-1 <= s <= 1 for s in r["ssim"])
        assert r["prompt_frames"] == 3 and r["ae_frames"] == 2 * (3 + 4)
        assert np.isfinite(r["ae_psnr"]) and r["nan_count"] == 0
        assert r["worst_rollout"]["mean_psnr"] == pytest.approx(min(r["rollout_mean_psnr"]), abs=1e-3)
        lg = r["long"]
        assert lg["steps"] == 20 and len(lg["psnr"]) == len(lg["ssim"]) == len(lg["frame_std"]) == 20
        assert lg["psnr_at"] == {} and lg["tail_steps"] == 20  # 256 / 1200 not reached
        assert lg["nan_free"] is True and lg["nan_count"] == 0
        for flag in ("collapsed_blank", "collapsed_static"):
            assert isinstance(lg[flag], bool)


def test_targets_report_failures_honestly(result):
    report, _ = result
    t = report["targets"]
    ae = t["ae_psnr"]
    worst = min(r["ae_psnr"] for r in report["per_scene"].values())
    assert ae["measured"] == pytest.approx(worst) and ae["threshold"] == 35.0
    assert ae["passed"] is (worst >= 35.0) is False  # a random autoencoder is nowhere near
    for name in ("psnr_16", "psnr_32"):  # horizon 4: not measured, and said so
        assert t[name]["passed"] is None and t[name]["measured"] is None and "horizon" in t[name]["note"]
    assert t["long_rollout"]["measured"]["steps"] == 20
    assert t["long_rollout"]["passed"] in (None, False)  # 20 < 1200 steps can never pass
    assert report["all_passed"] is False and "ae_psnr" in report["failed"]


def test_files_written(result):
    report, out = result
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["per_scene"].keys() == report["per_scene"].keys()
    assert on_disk["targets"]["ae_psnr"]["passed"] is False
    png = out / "psnr_ssim.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for sid in SCENES:
        gif = out / f"side_by_side_{sid.replace('/', '_')}.gif"
        assert report["files"]["gifs"][sid] == str(gif)
        frames = iio.imread(gif, index=None)
        h = w = 64 * GIF_SCALE
        assert frames.shape[1:] == (h, 2 * w + GIF_GAP, 3)  # model | sim, scaled up
        assert 1 <= len(frames) <= 3 + 4  # prompt + horizon (pillow merges identical frames)


def test_targets_measured_when_horizon_reaches_them(model_dir, tmp_path):
    report = evaluate(model_dir, scenes=["simcore/BouncingBalls-v0"], rollouts=1, horizon=16, long_horizon=0,
                      denoise_steps=1, out_dir=tmp_path, progress=False)
    t = report["targets"]
    r = report["per_scene"]["simcore/BouncingBalls-v0"]
    assert report["denoise_steps"] == 1 and r["long"] is None
    assert t["psnr_16"]["measured"] == pytest.approx(r["psnr_at"]["16"]) and t["psnr_16"]["passed"] is False
    assert t["psnr_32"]["passed"] is None and t["long_rollout"]["passed"] is None
    assert report["all_passed"] is False


def _moving_sim(n: int) -> np.ndarray:
    frames = np.full((n, 16, 16, 3), 20, np.uint8)
    for t in range(n):
        frames[t, 4:9, t % 12:(t % 12) + 4] = 230  # a box sliding right
    return frames


def test_long_stats_windows_and_collapse_flags():
    from simcore.evaluate import _long_stats, _targets

    n, p = 262, 3  # reaches step 256: window 248..262 (clipped at the end)
    sim = _moving_sim(n + p)
    blank = np.zeros_like(sim)
    blank[:p] = sim[:p]  # the prompt frames come from the simulator
    stats = _long_stats({"model": blank, "sim": sim, "prompt": p, "nan_count": 3, "seed": 7,
                         "sim_terminated_at": None}, n)
    assert stats["steps"] == n and stats["windows"] == {"256": [248, 262]} and "1200" not in stats["psnr_at"]
    assert stats["psnr_at"]["256"] == pytest.approx(np.mean(frame_psnr(blank[p:], sim[p:])[247:262]))
    assert stats["collapsed_blank"] and stats["collapsed_static"] and stats["nan_free"] is False
    assert stats["blank_steps"] == n and stats["tail_steps"] == 100
    good = _long_stats({"model": sim, "sim": sim, "prompt": p, "nan_count": 0, "seed": 7,
                        "sim_terminated_at": None}, n)
    assert not good["collapsed_blank"] and not good["collapsed_static"] and good["nan_free"]
    assert good["psnr_at"]["256"] == math.inf and good["ssim_at"]["256"] == pytest.approx(1.0)
    per_scene = {"a": {"ae_psnr": 40.0, "psnr_at": {}, "long": stats}, "b": {"ae_psnr": 36.0, "psnr_at": {},
                                                                              "long": good}}
    t = _targets(per_scene, horizon=4, long_horizon=n, frame_size=(16, 16))
    assert t["targets"]["ae_psnr"]["passed"] is True and t["targets"]["ae_psnr"]["measured"] == 36.0
    lr = t["targets"]["long_rollout"]
    assert lr["passed"] is False and lr["measured"]["collapsed_blank"] == ["a"] and lr["measured"]["nan_count"] == 3
    assert t["all_passed"] is False and t["failed"] == ["long_rollout"] and "64x64" in t["note"]


def test_errors(model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no model"):
        evaluate(tmp_path / "missing", out_dir=tmp_path, progress=False)
    with pytest.raises(BackendError, match="not trained on"):
        evaluate(model_dir, scenes=["simcore/Projectile-v0"], out_dir=tmp_path, progress=False)
    with pytest.raises(SimcoreError, match="rollouts"):
        evaluate(model_dir, rollouts=0, out_dir=tmp_path, progress=False)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_cli_eval_end_to_end(model_dir, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--scene", "simcore/Pong-v0",
                                      "--rollouts", "1", "--horizon", "4", "--long-horizon", "20",
                                      "--out", str(out), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "simcore/Pong-v0" in result.output and "FAIL" in result.output and "report.json" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["scenes"] == ["simcore/Pong-v0"] and report["long_horizon"] == 20
    assert report["command"].startswith("simcore eval --model") and "--long-horizon 20" in report["command"]
    assert (out / "psnr_ssim.png").is_file() and (out / "side_by_side_simcore_Pong-v0.gif").is_file()


def test_cli_eval_unknown_model_is_one_clear_line(tmp_path, capsys):
    from simcore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "no model at" in capsys.readouterr().err
