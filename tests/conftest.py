"""Test defaults: no installed third-party plugins, no windows, a fresh plugin manager."""
from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ["SIMCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("SIMCORE_DISABLE_PLUGINS", None)
# Processes the tests start (python -m simcore, benchmark scripts) must import the installed
# package, not the source tree of a clone they happen to start in (it has no simcore.plugins
# or simcore.scenes: only the wheel maps them in). Python 3.11+ honours this.
os.environ["PYTHONSAFEPATH"] = "1"
# training runs cache latents; tests keep theirs out of the user's cache directory
os.environ["SIMCORE_CACHE_DIR"] = __import__("tempfile").mkdtemp(prefix="simcore-test-latents-")

import pytest  # noqa: E402

import simcore  # noqa: E402
from simcore.plugin_manager import set_plugin_manager  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_default_plugin_manager():
    """Each test starts with a new process-wide plugin manager (built lazily)."""
    set_plugin_manager(None)
    yield
    set_plugin_manager(None)


@pytest.fixture
def pm():
    return simcore.create_plugin_manager(autoload=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one intra-op thread (no thread-pool overhead), and the
    DDP test's worker processes share the two cores; restore the count afterwards."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def run_benchmark(tmp_path):
    """``run_benchmark(script, *args)``: run ``benchmarks/<script>`` end to end with
    ``--quick`` on a tiny random model saved under ``tmp_path`` (smoke runs: the report's
    shape is checked, never its timings); returns the JSON report it wrote."""
    return lambda script, *args: _run_benchmark(tmp_path, script, *args)


def _run_benchmark(tmp_path, script: str, *args: str) -> dict:
    import json
    import subprocess
    import sys
    from pathlib import Path

    from simcore.checkpoint import save_model
    from simcore.model import WorldModel, config_for

    cfg = config_for("tiny", scenes=("simcore/BouncingBalls-v0", "simcore/Pong-v0"), num_actions=3,
                     cond_dims={"scene_params": 4})
    model_dir = save_model(WorldModel(cfg), tmp_path / "tiny_model")
    out = tmp_path / "report.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--quick", "--model", str(model_dir),
                           "--out", str(out), *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())
