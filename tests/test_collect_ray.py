"""simcore collect --ray: Ray actors write the same shards as local processes, and a
worker that dies is rebuilt and its shard redone. A local Ray cluster (2 CPUs) is
started by the module fixture and shut down after."""
from __future__ import annotations

import numpy as np
import pytest

from simcore.collect import collect, ray_init
from simcore.errors import SimcoreError
from simcore.recording import read_episodes

SCENE = "simcore/BouncingBalls-v0"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray_init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _episodes(files):
    return [ep for f in files for ep in read_episodes(f)]


def _equal(x, y) -> bool:
    """Deep equality of decoded records (dicts, lists, numpy arrays, scalars)."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(_equal, x, y))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(x, y)
    return x == y


def _same_recordings(a_files, b_files):
    """Record-for-record equality, except the two fields that are wall-clock readings
    (header ``created``, footer ``wall_time``)."""
    a, b = _episodes(a_files), _episodes(b_files)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert _equal({k: v for k, v in x.header.items() if k != "created"},
                      {k: v for k, v in y.header.items() if k != "created"})
        assert np.array_equal(x.frames, y.frames) and len(x.frames) > 1
        assert _equal(x.actions, y.actions)
        assert _equal(x.steps, y.steps)
        assert _equal({k: v for k, v in x.footer.items() if k != "wall_time"},
                      {k: v for k, v in y.footer.items() if k != "wall_time"})


def test_ray_actors_write_the_same_shards_as_processes(tmp_path, ray_cluster):
    kw = dict(episodes=5, steps=6, shard_size=2, seed=3, policy="random", options={"count": 2}, progress=False)
    procs = collect(SCENE, out_dir=tmp_path / "procs", workers=2, **kw)
    actors = collect(SCENE, out_dir=tmp_path / "ray", workers=2, ray="local", **kw)
    assert [p.rsplit("/", 1)[1] for p in actors["files"]] == [p.rsplit("/", 1)[1] for p in procs["files"]]
    assert actors["frames"] == procs["frames"] and actors["restarts"] == 0
    _same_recordings(procs["files"], actors["files"])
    assert not list((tmp_path / "ray").glob("*.tmp"))
    assert ray_cluster.is_initialized()  # an existing connection is used and left open


def test_a_crashed_actor_is_rebuilt_and_its_shard_redone(tmp_path, ray_cluster, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SIMCORE_TEST_CRASH_ONCE", str(marker))
    kw = dict(episodes=4, steps=5, shard_size=2, seed=7, progress=False)
    summary = collect(SCENE, out_dir=tmp_path / "ray", workers=2, ray="local", **kw)
    assert marker.read_text().startswith("worker ")  # one actor really died mid-shard (after episode 1 of 2)
    assert summary["restarts"] == 1
    assert [ep.header["episode"] for ep in _episodes(summary["files"])] == [0, 1, 2, 3]
    monkeypatch.delenv("SIMCORE_TEST_CRASH_ONCE")
    _same_recordings(collect(SCENE, out_dir=tmp_path / "one", **kw)["files"], summary["files"])


def test_a_spent_restart_budget_is_a_clear_error(tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setenv("SIMCORE_TEST_CRASH_ONCE", str(tmp_path / "crashed"))
    with pytest.raises(SimcoreError, match="restart budget"):
        collect(SCENE, episodes=2, steps=3, out_dir=tmp_path / "x", workers=1, ray="local", max_restarts=0,
                progress=False)
    assert not list((tmp_path / "x").iterdir())  # nothing half-written in the output directory


def test_missing_ray_is_reported_with_the_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SimcoreError, match=r"pip install 'simcore\[ray\]'"):
        collect(SCENE, episodes=1, steps=1, out_dir=tmp_path / "x", ray="local", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_collect_with_ray(tmp_path, ray_cluster):
    from typer.testing import CliRunner

    from simcore.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["collect", SCENE, "--episodes", "3", "--steps", "4", "--out", str(out),
                                      "--workers", "2", "--shard-size", "2", "--ray", "local", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "in 2 shard(s)" in result.output
    assert [ep.header["seed"] for ep in _episodes(sorted(map(str, out.glob("*.msgpack"))))] == [0, 1, 2]
