"""`simcore bench`: the quick run end to end (real kernels, real default model), its
JSON schema, and `--which`. Timings are not checked (the machine is shared), only that
every figure is a positive finite number and the report says what ran."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from simcore import kernels


def _simcore(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simcore", *args], check=False, capture_output=True, text=True, timeout=timeout)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_which_names_the_active_path():
    proc = _simcore("bench", "--which")
    assert proc.returncode == 0, proc.stderr
    assert f"cpu: {kernels.active_path('cpu')}" in proc.stdout
    assert "native extension:" in proc.stdout


def test_bench_quick_writes_a_complete_report(tmp_path):
    out = tmp_path / "bench.json"
    proc = _simcore("bench", "--quick", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(out.read_text())
    assert rep["benchmark"] == "simcore bench" and rep["quick"] is True
    assert "--quick" in rep["command"]
    for key in ("cpu", "cores", "torch", "torch_threads"):
        assert key in rep["machine"]
    assert rep["machine"]["torch_threads"] == 1
    assert rep["paths"]["cpu"] == kernels.active_path("cpu") == rep["attention_cpu"]["path"]

    att = rep["attention_cpu"]
    assert len(att["rows"]) == att["summary"]["configs"] >= 2
    for row in att["rows"]:
        assert row["keys"] == (row["context"] + 1) * row["patches"]
        for key in ("kernel_ms", "sdpa_ms", "unfused_ms", "ratio_vs_sdpa", "ratio_vs_unfused", "flops"):
            assert _positive(row[key]), (key, row[key])
        assert row["reps"] >= 5
        assert row["max_abs_diff_vs_sdpa"] < 1e-4  # the kernel computed the same attention
    for key in ("geomean_vs_sdpa", "min_vs_sdpa", "geomean_vs_unfused", "min_vs_unfused"):
        assert _positive(att["summary"][key])
    assert att["summary"]["min_vs_sdpa"] <= att["summary"]["geomean_vs_sdpa"]

    e2e = rep["end_to_end_cpu"]
    assert e2e["model"] == "default" and e2e["batch"] == 1 and e2e["denoise_steps"] == 4
    assert e2e["frame_size"] == [64, 64]
    for side in ("kernels", "pytorch"):
        assert _positive(e2e["frames_per_s"][side])
        assert e2e["env_step"][side]["n"] >= 5
    assert _positive(e2e["speedup_vs_pytorch"]) and _positive(e2e["generate_speedup_vs_pytorch"])

    assert set(rep["targets"]) >= {"attention_geomean_vs_sdpa>=1.0", "e2e_frames_per_s>=30"}
    for t in rep["targets"].values():
        assert _positive(t["value"]) and t["pass"] == (t["value"] >= t["threshold"])
