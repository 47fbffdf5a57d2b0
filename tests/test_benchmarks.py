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
