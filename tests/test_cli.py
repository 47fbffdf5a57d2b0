"""The simcore command line, end to end (real files, real pygame under the dummy driver)."""
from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import pytest
from typer.testing import CliRunner

from simcore.cli import app, parse_frame_size, parse_options
from simcore.errors import SimcoreError
from simcore.recording import read_episodes

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    return result


def test_help_on_every_command():
    for cmd in ([], ["scenes"], ["play"], ["collect"], ["replay"], ["plugins"]):
        result = run(*cmd, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_scenes_lists_every_scene_with_options():
    result = run("scenes", "--options")
    assert result.exit_code == 0
    for sid in ("simcore/Pong-v0", "simcore/BouncingBalls-v0", "simcore/Occlusion-v0"):
        assert sid in result.output
    assert "speed_range" in result.output and "noop, up, down" in result.output


def test_play_headless_writes_a_gif(tmp_path):
    out = tmp_path / "pong.gif"
    result = run("play", "simcore/Pong-v0", "--backend", "sim", "--headless", "--frames", "12", "--out", str(out), "--scale", "4")
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert frames.shape[0] >= 5 and frames.shape[2] == 256  # 64 px x scale 4 wide


def test_play_with_no_arguments_plays_the_shipped_model(tmp_path, monkeypatch):
    """The quick start: `simcore play` dreams Pong with the shipped model, simulator alongside."""
    from simcore.checkpoint import load_card, resolve

    assert resolve("default").is_file(), "the shipped default model is missing"
    assert {"simcore/Pong-v0", "simcore/BouncingBalls-v0"} <= set(load_card("default")["scenes"])
    monkeypatch.chdir(tmp_path)
    result = run("play", "--frames", "8")  # headless under the dummy driver: writes simcore-play.gif
    assert result.exit_code == 0, result.output
    frames = iio.imread(tmp_path / "simcore-play.gif", index=None)
    assert frames.shape[2] > 2 * 64 * 6  # model and simulator side by side, 6x scale


def test_play_with_scripted_agent_and_recording(tmp_path):
    agent = tmp_path / "my_agent.py"
    agent.write_text("def always_up(obs, info):\n    return 1\n")
    rec = tmp_path / "rec"
    result = run("play", "simcore/Pong-v0", "--backend", "sim", "--headless", "--frames", "8", "--out", str(tmp_path / "a.gif"),
                 "--agent", f"{agent}:always_up", "--record", str(rec), "-o", "points_to_win=0")
    assert result.exit_code == 0, result.output
    files = sorted(rec.glob("*.msgpack"))
    assert len(files) == 1
    ep = read_episodes(files[0])[0]
    assert ep.actions[0] is None and set(ep.actions[1:]) == {1}
    assert len(ep) == 9


def test_play_user_scene_via_plugin_file(tmp_path):
    plugin = tmp_path / "my_scene.py"
    plugin.write_text(
        "import simcore\nfrom simcore.balls import BallScene, common_options\n"
        "class Mine(BallScene):\n    id = 'user/Mine-v0'\n    options = common_options(count=(3, 3))\n"
        "@simcore.hookimpl\ndef simcore_register_scenes(registry):\n    registry.register(Mine)\n"
    )
    result = run("--plugin", str(plugin), "play", "user/Mine-v0", "--backend", "sim", "--headless", "--frames", "3",
                 "--out", str(tmp_path / "m.gif"))
    assert result.exit_code == 0, result.output
    result = run("--plugin", str(plugin), "scenes")
    assert "user/Mine-v0" in result.output


def test_collect_then_replay(tmp_path):
    out = tmp_path / "data"
    result = run("collect", "simcore/BouncingBalls-v0", "--episodes", "3", "--steps", "5", "--out", str(out),
                 "--shard-size", "2", "--no-progress", "-o", "count=2")
    assert result.exit_code == 0, result.output
    shards = sorted(out.glob("*.msgpack"))
    assert len(shards) == 2
    gif = tmp_path / "replay.gif"
    result = run("replay", str(shards[0]), "--out", str(gif), "--headless", "--scale", "2")
    assert result.exit_code == 0, result.output
    assert "12 frames from 2 episode(s)" in result.output
    assert iio.imread(gif, index=None).shape[0] >= 6


def test_replay_of_a_cut_off_recording_says_so(tmp_path):
    out = tmp_path / "data"
    run("collect", "simcore/Pong-v0", "--episodes", "1", "--steps", "10", "--out", str(out), "--no-progress")
    shard = next(out.glob("*.msgpack"))
    data = shard.read_bytes()
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(data[: len(data) - 5000])
    result = run("replay", str(cut), "--out", str(tmp_path / "cut.gif"), "--headless")
    assert result.exit_code == 0, result.output
    assert "truncated" in result.output


def test_plugins_lists_builtins_and_extension():
    result = run("plugins")
    assert result.exit_code == 0
    for name in ("scenes", "display", "recorder", "native extension"):
        assert name in result.output


def test_disable_plugin_flag():
    result = run("--disable", "recorder", "plugins")
    assert result.exit_code == 0
    assert "recorder" in result.output and "(disabled)" in result.output


def test_option_and_frame_size_parsing():
    assert parse_options(["count=3", "radius_range=[4, 6]", "collisions=false", "colors=red"]) == {
        "count": 3, "radius_range": [4, 6], "collisions": False, "colors": "red"}
    assert parse_frame_size("48x96") == (48, 96)
    with pytest.raises(SimcoreError, match="NAME=VALUE"):
        parse_options(["count"])
    with pytest.raises(SimcoreError, match="HEIGHTxWIDTH"):
        parse_frame_size("big")


@pytest.mark.parametrize(
    "args, message",
    [
        (["play", "simcore/Nope-v0", "--headless"], "unknown scene 'simcore/Nope-v0'"),
        (["play", "simcore/Pong-v0", "--headless", "-o", "warp=9"], "unknown option 'warp'"),
        (["play", "simcore/Pong-v0", "--headless", "--frame-size", "60x64"], "divisible by 8"),
        (["play", "simcore/Pong-v0", "--backend", "sim", "--headless", "--agent", "nomodule_xyz:f"], "cannot import agent"),
        (["play", "simcore/Pong-v0", "--headless", "--model", "/nonexistent/model"], "no model at"),
        (["replay", "/nonexistent/file.msgpack"], "file.msgpack"),
        (["--disable", "nosuch", "scenes"], "unknown plugin"),
    ],
)
def test_errors_are_one_clear_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "simcore", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
