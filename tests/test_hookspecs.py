"""The plugin system: hookspecs documented, built-ins, entry points, disabling, user scenes."""
from __future__ import annotations

import importlib.metadata
import inspect
import textwrap

import pytest

import simcore
from simcore import hookspecs
from simcore.errors import PluginError, UnknownSceneError
from simcore.plugin_manager import create_plugin_manager, get_registry

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("simcore_")]


def test_required_hooks_exist():
    for name in ("simcore_configure", "simcore_register_scenes", "simcore_session_start", "simcore_session_finish",
                 "simcore_after_step", "simcore_conditioning", "simcore_probe"):
        assert name in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_and_typed(name):
    fn = getattr(hookspecs, name)
    assert fn.__doc__ and len(fn.__doc__.strip()) > 30, f"{name} needs a docstring"
    sig = inspect.signature(fn)
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name
    assert sig.return_annotation is not inspect.Signature.empty, name
    assert hasattr(fn, "simcore_spec"), f"{name} is not marked as a hookspec"


def test_builtins_registered_by_name(pm):
    names = dict(pm.list_name_plugin())
    assert {"scenes", "display", "recorder"} <= set(names)


def test_disable_builtin_by_name():
    pm = create_plugin_manager(autoload=False, disable=["recorder"])
    assert pm.get_plugin("recorder") is None and pm.is_blocked("recorder")


def test_disable_unknown_name_is_an_error():
    with pytest.raises(PluginError, match="unknown plugin.*nosuch"):
        create_plugin_manager(autoload=False, disable=["nosuch"])


def test_disable_from_environment(monkeypatch):
    monkeypatch.setenv("SIMCORE_DISABLE_PLUGINS", "display")
    pm = create_plugin_manager(autoload=False)
    assert pm.get_plugin("display") is None


def test_disabling_scenes_leaves_an_empty_registry():
    pm = create_plugin_manager(autoload=False, disable=["scenes"])
    with pytest.raises(UnknownSceneError, match="unknown scene 'simcore/Pong-v0'"):
        simcore.make("simcore/Pong-v0", plugin_manager=pm)


USER_SCENE = textwrap.dedent('''
    import numpy as np
    import simcore
    from simcore.balls import BallScene, common_options

    class Lonely(BallScene):
        """A single slow ball (a user's own scene)."""
        id = "user/Lonely-v0"
        options = common_options(count=(1, 1), speed_range=(5.0, 5.0))

    @simcore.hookimpl
    def simcore_register_scenes(registry):
        registry.register(Lonely)

    SEEN = []

    @simcore.hookimpl
    def simcore_after_step(world, transition):
        SEEN.append(transition.step)

    @simcore.hookimpl
    def simcore_probe(world, transition):
        return {"ball_x": float(transition.info["objects"]["pos"][0][0])}
''')


def test_user_scene_file_registers_like_a_builtin(tmp_path):
    path = tmp_path / "my_scene.py"
    path.write_text(USER_SCENE)
    pm = create_plugin_manager(autoload=False, plugins=[str(path)])
    assert "user/Lonely-v0" in get_registry(pm)
    world = simcore.make("user/Lonely-v0", plugin_manager=pm)
    _, info = world.reset(seed=1)
    _, _, _, _, info2 = world.step(0)
    plugin = pm.get_plugin("my_scene")
    assert plugin.SEEN == [0, 1]
    assert info2["probes"]["ball_x"] == pytest.approx(info2["objects"]["pos"][0][0])


def test_entry_point_plugins_load_and_can_be_disabled(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_plugin.py").write_text(USER_SCENE)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="thirdparty", value="thirdparty_plugin", group="simcore")

    def fake_entry_points(group=None, **kw):
        return [ep] if group == "simcore" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    pm = create_plugin_manager(autoload=True)
    assert pm.get_plugin("thirdparty") is not None
    assert "user/Lonely-v0" in get_registry(pm)
    pm2 = create_plugin_manager(autoload=True, disable=["thirdparty"])
    assert pm2.get_plugin("thirdparty") is None
    # the suite's default (SIMCORE_DISABLE_PLUGIN_AUTOLOAD=1) loads no entry points at all
    assert create_plugin_manager().get_plugin("thirdparty") is None


def test_broken_plugin_file_names_the_problem(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="broken.py.*boom"):
        create_plugin_manager(autoload=False, plugins=[str(path)])
    with pytest.raises(PluginError, match="does not exist"):
        create_plugin_manager(autoload=False, plugins=[str(tmp_path / "missing.py")])


def test_duplicate_scene_id_is_rejected():
    from simcore.registry import SceneRegistry
    from simcore.scenes import Pong

    reg = SceneRegistry()
    reg.register(Pong)

    class Impostor(Pong):
        pass

    with pytest.raises(PluginError, match="registered twice"):
        reg.register(Impostor)


def test_register_scene_decorator_uses_default_registry():
    from simcore.balls import BallScene

    @simcore.register_scene
    class Tiny(BallScene):
        id = "test/Tiny-v0"

    assert "test/Tiny-v0" in simcore.list_scenes()
    simcore.make("test/Tiny-v0").reset(seed=0)
