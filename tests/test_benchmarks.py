"""Benchmark scripts run end to end (smoke runs with tiny random models; timings not checked)."""
from __future__ import annotations

import math

import pytest


@pytest.mark.slow
def test_rollout_speed_quick_reports_every_figure(run_benchmark):
    # one thread: no oversubscription when the suite (or other work) shares the cores
    rep = run_benchmark("rollout_speed.py", "--no-progress", "--threads", "1")

    assert rep["benchmark"] == "rollout_speed" and "--quick" in rep["command"]
    for key in ("cpu", "cores", "torch", "torch_threads"):
        assert key in rep["machine"]
    assert rep["model"]["parameters"]["total"] > 0 and rep["model"]["config"]["dit"]["dim"] == 32
    assert rep["nan_check"] == {"ok": True, "nan_fields": []}

    f = rep["flops_per_frame"]
    assert f["env"]["env_frame_total"] > 0 and f["cache"]["dit_uncached"]["total"] > f["cache"]["dit_cached"]["total"]

    def positive(x):
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    r = rep["results"]
    env = r["env"]
    assert positive(env["frames_per_s"])
    for part in ("end_to_end", "generate", "decode", "conditioning_hook"):
        assert positive(env[part]["median_ms"]), part
    cache = r["cache"]
    assert cache["context"] == 16
    assert positive(cache["cached"]["median_ms"]) and positive(cache["uncached"]["median_ms"])
    assert positive(cache["speedup"])
    flat = r["flat"]
    for point in ("short", "long"):
        assert positive(flat[point]["median_ms"]) and positive(flat[point]["rss_bytes"])
        assert positive(flat[point]["cache_bytes"])
    assert flat["long"]["frame"] == 300 and positive(flat["ratio"]) and positive(flat["ratio_interleaved"])
    assert flat["cache_bytes_equal"] is True  # a property of the ring cache, not a timing
    assert [row["batch"] for row in r["batch"]["rows"]] == [1, 8, 64]
    assert all(positive(row["env_frames_per_s"]) for row in r["batch"]["rows"])
    assert set(rep["targets"]) == {"env_frames_per_s>=15", "kv_cache_speedup>=5x", "flat_cost_within_10%"}
    assert all(isinstance(t["pass"], bool) for t in rep["targets"].values())


def _tiny_model_dir(tmp_path):
    from simcore.checkpoint import save_model
    from simcore.model import WorldModel, config_for

    cfg = config_for("tiny", scenes=("simcore/BouncingBalls-v0", "simcore/Pong-v0"), num_actions=3,
                     cond_dims={"scene_params": 4})
    cfg.dit.target, cfg.dit.action_tokens = "x0", True
    return save_model(WorldModel(cfg), tmp_path / "tiny_model")


def _run_script(tmp_path, script: str, *args: str) -> dict:
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / f"{script}.json"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_pong_dream_report_measures_control_visibility_and_psnr(tmp_path):
    model = str(_tiny_model_dir(tmp_path))
    rep = _run_script(tmp_path, "pong_dream_report.py", "--model", model, "--rollouts", "2", "--horizon", "4",
                      "--threads", "1")
    assert rep["rollouts"] == 2 and rep["machine"]["simd"]
    assert rep["ball_visible"]["n"] == 2 and 0.0 <= rep["ball_visible"]["value"] <= 1.0
    assert set(rep["psnr_at"]) == {"1", "4", "8", "16"} and rep["psnr_at"]["1"]["n"] == 2
    assert rep["psnr_at"]["8"]["n"] == 0  # a 4-step horizon has no step 8
    assert 0.0 <= rep["p7_direction_accuracy"]["value"] <= 1.0 and rep["p7_direction_accuracy"]["n"] == 2


def test_dream_speed_compare_times_models_side_by_side(tmp_path):
    model = str(_tiny_model_dir(tmp_path))
    rep = _run_script(tmp_path, "dream_speed_compare.py", "--model", model, "--model", model, "--steps", "5",
                      "--warmup", "1", "--threads", "1")
    assert [r["model"] for r in rep["rows"]] == [model, model]
    assert rep["rows"][0]["relative_to_first"] == 1.0
    assert all(r["frames_per_s"] > 0 for r in rep["rows"]) and rep["machine"]["simd"]
