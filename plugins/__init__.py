"""Built-in plugins (installed as ``simcore.plugins``).

They are registered from ``BUILTIN`` exactly like third-party plugins are from the
``simcore`` entry-point group; each can be disabled by its short name
(``simcore --disable display ...`` or ``SIMCORE_DISABLE_PLUGINS=display``).
"""

#: short name -> module, in registration order
BUILTIN: tuple[tuple[str, str], ...] = (
    ("scenes", "simcore.scenes"),
    ("display", "simcore.plugins.display"),
    ("recorder", "simcore.plugins.recorder"),
    ("conditioning", "simcore.plugins.conditioning"),
    ("probes", "simcore.plugins.probes"),
    ("governor", "simcore.plugins.governor"),  # active with a target FPS only
    ("watchdog", "simcore.plugins.watchdog"),  # active when enabled only
)
