"""Creating the pluggy PluginManager: built-ins from ``simcore.plugins.BUILTIN``,
third parties from the ``simcore`` entry-point group, extra modules or files named
on the command line, minus the ones disabled by name."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable

import pluggy

from simcore import hookspecs
from simcore.errors import PluginError
from simcore.registry import SceneRegistry

ENTRYPOINT_GROUP = "simcore"
#: set to 1 to skip third-party entry points (the test suite does, like pytest's
#: PYTEST_DISABLE_PLUGIN_AUTOLOAD)
AUTOLOAD_ENV = "SIMCORE_DISABLE_PLUGIN_AUTOLOAD"
#: comma-separated plugin names to disable
DISABLE_ENV = "SIMCORE_DISABLE_PLUGINS"

_default_pm: pluggy.PluginManager | None = None


def _import_plugin(spec: str):
    """Import a plugin given as a module name or a path to a ``.py`` file."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"plugin file {spec!r} does not exist")
        name = f"simcore_userplugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"plugin file {spec!r} failed to load: {exc!r}") from exc
        return module, path.stem
    try:
        return importlib.import_module(spec), spec.rsplit(".", 1)[-1]
    except ImportError as exc:
        raise PluginError(f"cannot import plugin module {spec!r}: {exc}") from exc


def create_plugin_manager(
    *,
    disable: Iterable[str] = (),
    plugins: Iterable[str] = (),
    autoload: bool | None = None,
) -> pluggy.PluginManager:
    """A fresh PluginManager with simcore's hookspecs and plugins registered.

    disable:  plugin names not to register (built-in short names, entry-point names,
              or names of ``plugins``); also read from ``$SIMCORE_DISABLE_PLUGINS``.
    plugins:  extra plugin modules or ``.py`` files to register (a user's scene file).
    autoload: load third-party entry points; default: unless ``$SIMCORE_DISABLE_PLUGIN_AUTOLOAD``.
    """
    from simcore.plugins import BUILTIN

    pm = pluggy.PluginManager("simcore")
    pm.add_hookspecs(hookspecs)
    disabled = {d.strip() for d in disable if d.strip()}
    disabled |= {d.strip() for d in os.environ.get(DISABLE_ENV, "").split(",") if d.strip()}
    for name in disabled:
        pm.set_blocked(name)
    seen: set[str] = set()

    for name, module_name in BUILTIN:
        seen.add(name)
        if name not in disabled:
            pm.register(importlib.import_module(module_name), name=name)

    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRYPOINT_GROUP):
            seen.add(ep.name)
            if ep.name in disabled or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}") from exc
            pm.register(plugin, name=ep.name)

    for spec in plugins:
        module, name = _import_plugin(spec)
        seen.add(name)
        if name not in disabled and pm.get_plugin(name) is None:
            pm.register(module, name=name)

    unknown = disabled - seen
    if unknown:
        raise PluginError(
            f"cannot disable unknown plugin(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(seen))}"
        )
    pm.check_pending()
    pm._simcore_extra = list(plugins)  # so worker processes can load the same extras
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide PluginManager used when none is passed explicitly."""
    global _default_pm
    if _default_pm is None:
        _default_pm = create_plugin_manager()
    return _default_pm


def set_plugin_manager(pm: pluggy.PluginManager | None) -> None:
    """Replace (or with ``None``, forget) the process-wide PluginManager."""
    global _default_pm
    _default_pm = pm


def get_registry(pm: pluggy.PluginManager | None = None) -> SceneRegistry:
    """The scene registry of ``pm``, filled by ``simcore_register_scenes`` on first use."""
    pm = pm or get_plugin_manager()
    registry = getattr(pm, "_simcore_registry", None)
    if registry is None:
        registry = SceneRegistry()
        pm.hook.simcore_register_scenes(registry=registry)
        pm._simcore_registry = registry
        register_with_gymnasium(registry)
    return registry


def register_with_gymnasium(registry: SceneRegistry) -> None:
    """Make ``gymnasium.make("simcore/Pong-v0")`` work for every registered scene
    (through the default plugin manager)."""
    import gymnasium

    for sid in registry.ids():
        if sid not in gymnasium.registry:
            gymnasium.register(id=sid, entry_point="simcore.world:make", kwargs={"scene_id": sid})


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    return [name for name, _ in pm.list_name_plugin()]
