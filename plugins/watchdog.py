"""Drift watchdog: notice when a dreaming world model drifts, and pull it back.

A world model rolled out on its own output drifts: balls blur away, jump, or the
latents run off the scale they were trained on. The watchdog watches each dreamed
frame of a ``model`` World and, when a signal crosses its threshold, *re-anchors*:

* with a simulator in lockstep (a ``sim`` World of the same scene stepped with the
  same actions, e.g. ``simcore play``'s compare twin), it re-encodes the simulator's
  current frame into the model's context in place of the dreamed one
  (:meth:`simcore.dream.ModelBackend.reanchor`) — the next frame starts from the truth;
* without one, it raises the context noise for a few frames
  (:meth:`simcore.dream.ModelBackend.boost_context_noise`), so the model leans less on
  its own drifted picture.

Signals, per dreamed frame (thresholds in :class:`WatchdogSettings`):

  ==========  ==========================================================================
  position    lockstep only: objects read out of the frame by colour unmixing
              (:func:`simcore.perception.detect`, the probes' readout) against the
              simulator's table; median error over the visible objects, in radii (an
              object the truth shows but the frame lost counts as infinitely far, as in
              P8). Fires after ``patience`` frames above ``position_radii``.
  vanish      an object the truth shows (lockstep) or the prompt showed (the live probe's
              ``probe_objects_seen < probe_objects_expected``) missing ``vanish_frames``
              frames in a row.
  latent      the newest context latent against the statistics of the encoded
              simulator frames of this rollout (the model's measured latent scale): RMS off
              by more than ``latent_rms_ratio``x, a channel mean more than
              ``latent_channel_sigma`` reference stds away, values pinned at the model's
              ``latent_clip``, or anything non-finite.
  ==========  ==========================================================================

Every event is kept (``watchdog.events``: step, reasons, action, readings) and logged
on the ``simcore.watchdog`` logger. Off unless enabled: ``simcore play --watchdog``,
a session's ``config={"watchdog": True | {settings}}``, the run configuration
``{"watchdog": ...}`` (``simcore_configure``), or :func:`attach` for an API World.
"""
from __future__ import annotations

import dataclasses
import logging
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from simcore import perception
from simcore.errors import SimcoreError
from simcore.hookspecs import hookimpl
from simcore.scene import BACKGROUND

log = logging.getLogger("simcore.watchdog")

ACTIONS = ("auto", "reanchor", "context_noise")


@dataclass
class WatchdogSettings:
    """Thresholds and actions of the drift watchdog (see the module docstring)."""

    position_radii: float = 0.75  # median position error (radii) that counts as drift (P8's H* uses 1)
    patience: int = 1  # consecutive frames over position_radii before firing
    vanish_frames: int = 2  # consecutive frames an expected object is missing before firing
    latent_rms_ratio: float = 2.0  # latent RMS / reference RMS beyond this (or below its inverse)
    latent_channel_sigma: float = 4.0  # |channel mean - reference| / reference channel std beyond this
    clip_fraction: float = 0.01  # fraction of latent values pinned at latent_clip beyond this
    action: str = "auto"  # auto: reanchor when a simulator runs in lockstep, else context_noise
    noise_level: float = 0.1  # context noise while boosted (training saw up to max(0.1, 2·ctx_noise))
    noise_frames: int = 4  # dreamed frames the boost lasts
    cooldown: int = 0  # dreamed frames after an event during which no new event fires
    latent: bool = True  # watch the latent statistics
    objects: bool = True  # watch the objects (positions, vanishing)

    @classmethod
    def from_config(cls, config: Any) -> "WatchdogSettings":
        """From ``True`` (defaults), a settings object or a dict of field names; unknown
        names and bad values are errors that name the problem."""
        if isinstance(config, cls):
            return config
        if config is True or config is None:
            return cls()
        if not isinstance(config, dict):
            raise SimcoreError(f"watchdog settings are True or a dict of {', '.join(cls.names())}; got {config!r}")
        unknown = sorted(set(config) - set(cls.names()) - {"enabled"})
        if unknown:
            raise SimcoreError(f"unknown watchdog setting(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        settings = cls(**{k: v for k, v in config.items() if k != "enabled"})
        settings.validate()
        return settings

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        for name in ("position_radii", "latent_rms_ratio", "latent_channel_sigma"):
            if not float(getattr(self, name)) > 0:
                raise SimcoreError(f"watchdog {name} must be positive, got {getattr(self, name)!r}")
        if not float(self.latent_rms_ratio) > 1:
            raise SimcoreError(f"watchdog latent_rms_ratio must be above 1, got {self.latent_rms_ratio!r}")
        for name in ("patience", "vanish_frames", "noise_frames"):
            if int(getattr(self, name)) < 1:
                raise SimcoreError(f"watchdog {name} must be at least 1, got {getattr(self, name)!r}")
        if int(self.cooldown) < 0:
            raise SimcoreError(f"watchdog cooldown must be >= 0, got {self.cooldown!r}")
        if not 0 <= float(self.clip_fraction) < 1:
            raise SimcoreError(f"watchdog clip_fraction must be in [0, 1), got {self.clip_fraction!r}")
        if not 0 <= float(self.noise_level) < 1:
            raise SimcoreError(f"watchdog noise_level must be in [0, 1), got {self.noise_level!r}")
        if self.action not in ACTIONS:
            raise SimcoreError(f"watchdog action must be one of {', '.join(ACTIONS)}, got {self.action!r}")


# ---------------------------------------------------------------------------
# readings
# ---------------------------------------------------------------------------


def _hidden(state: dict | None) -> dict:
    """Unmixing extras for a scene with an occluder band (as the live probe does)."""
    if state and "occluder" in state:
        from simcore.plugins.probes import _occluder_color

        return {"distractors": [_occluder_color()], "ignore": [tuple(float(v) for v in state["occluder"])]}
    return {}


def position_errors(frame: np.ndarray, table: dict, background=BACKGROUND, **hidden: Any) -> dict[str, Any]:
    """Objects of ``table`` (the simulator's, same step) read out of ``frame`` (H, W, 3):
    per-object error in radii (inf where the truth shows it and the frame lost it; NaN
    where the truth hides it), their median, and which objects are missing."""
    det = perception.detect(frame, table["color"], background, **hidden)
    pos = np.asarray(table["pos"], float)  # (K, 2)
    radius = np.asarray(table["radius"], float)  # (K,)
    shown = np.asarray(table.get("visible", np.ones(len(pos), bool)), bool)
    err = np.hypot(*(det.pos - pos).T) / np.maximum(radius, 1e-6)
    err = np.where(det.visible, err, np.inf)
    err = np.where(shown, err, np.nan)
    missing = shown & ~det.visible
    finite = err[~np.isnan(err)]
    median = float(np.median(finite)) if len(finite) else 0.0
    return {"errors": err, "median": median, "missing": missing}


def latent_outlier(stats: dict[str, Any], reference: list[dict[str, Any]], settings: WatchdogSettings) -> str | None:
    """Why a latent's statistics (``simcore.dream.latent_stats``) are off the reference
    (stats of encoded simulator frames), or None."""
    if not stats.get("finite", True):
        return "non-finite latent"
    if stats.get("clip_fraction", 0.0) > settings.clip_fraction:
        return f"{stats['clip_fraction']:.1%} of latent values at the clip"
    if not reference:
        return None
    ref_rms = float(np.mean([r["rms"] for r in reference]))
    ratio = stats["rms"] / max(ref_rms, 1e-6)
    if ratio > settings.latent_rms_ratio or ratio < 1.0 / settings.latent_rms_ratio:
        return f"latent RMS {stats['rms']:.2f} vs {ref_rms:.2f} measured on simulator frames"
    ref_mean = np.mean([r["channel_mean"] for r in reference], axis=0)  # (C,)
    ref_std = np.mean([r["channel_std"] for r in reference], axis=0)  # (C,)
    dev = np.abs(stats["channel_mean"] - ref_mean) / np.maximum(ref_std, 1e-3)
    if float(dev.max()) > settings.latent_channel_sigma:
        c = int(dev.argmax())
        return f"latent channel {c} mean off by {float(dev[c]):.1f} reference stds"
    return None


# ---------------------------------------------------------------------------
# the watchdog
# ---------------------------------------------------------------------------


class DriftWatchdog:
    """Watches one ``model`` World (and, optionally, a ``sim`` reference World stepped in
    lockstep with it); acts when its dreamed frames drift.

    Feed it every transition of both worlds (:meth:`observe`; the plugin does this from
    ``simcore_after_step``). A frame is judged once both worlds have reached the same
    step, whichever steps first.
    """

    def __init__(self, world, reference=None, settings: Any = None):
        if getattr(world, "dreamer", None) is None:
            raise SimcoreError(f"the drift watchdog watches a backend='model' World; {world.scene_id!r} "
                               f"runs backend {world.backend!r}")
        if reference is not None:
            if reference is world or getattr(reference, "backend", None) != "sim":
                raise SimcoreError("the watchdog's reference must be a separate backend='sim' World")
            if reference.scene_id != world.scene_id or tuple(reference.frame_size) != tuple(world.frame_size):
                raise SimcoreError(f"the watchdog's reference runs {reference.scene_id!r} at {reference.frame_size}; "
                                   f"the model world runs {world.scene_id!r} at {world.frame_size}")
        self.settings = WatchdogSettings.from_config(settings)
        self.settings.validate()
        if self.settings.action == "reanchor" and reference is None:
            raise SimcoreError("the watchdog can only re-anchor on a simulator running in lockstep: give it a "
                               "reference world, or use action='context_noise' (or 'auto')")
        self.world = world
        self.reference = reference
        self.events: list[dict[str, Any]] = []
        self.checked = 0  # dreamed frames judged
        self.last_reading: dict[str, Any] = {}
        self._model_t: tuple[int, Any] | None = None  # (step, transition) of the model world
        self._ref_t: tuple[int, Any] | None = None
        self._over = 0  # consecutive frames over position_radii
        self._missing: np.ndarray | None = None  # consecutive missing frames per object
        self._cooldown = 0

    @property
    def action(self) -> str:
        if self.settings.action != "auto":
            return self.settings.action
        return "reanchor" if self.reference is not None else "context_noise"

    def observe(self, world, transition) -> dict[str, Any] | None:
        """Take a transition of the model or the reference world; returns the event when
        this transition completed a step that fired."""
        if transition.action is None:  # a reset: a new episode starts clean
            self._over, self._missing, self._cooldown = 0, None, 0
            if world is self.world:
                self._model_t = None
            else:
                self._ref_t = None
            return None
        if world is self.world:  # a simulated prompt frame is not judged
            self._model_t = (transition.step, transition) if transition.info.get("dream") else None
        elif world is self.reference:
            self._ref_t = (transition.step, transition)
        else:
            return None
        if self._model_t is None:
            return None
        if self.reference is not None:
            if self._ref_t is None or self._ref_t[0] != self._model_t[0]:
                return None  # wait for the other world to reach this step
            event = self.check(self._model_t[1], self._ref_t[1])
            self._model_t = None  # judged
            return event
        if world is self.world:
            event = self.check(transition, None)
            self._model_t = None
            return event
        return None

    def check(self, transition, ref_transition=None) -> dict[str, Any] | None:
        """Judge one dreamed frame (``transition`` of the model world) against the
        reference's transition of the same step (or the live probes alone); act and
        return the event if a threshold is crossed."""
        from simcore.dream import latent_stats

        s, dreamer = self.settings, self.world.dreamer
        step = int(transition.step)
        self.checked += 1
        reasons: list[str] = []
        reading: dict[str, Any] = {"step": step}
        if s.objects:
            table = ref_transition.info.get("objects") if ref_transition is not None else None
            if table is not None:
                pe = position_errors(transition.observation, table,
                                     getattr(self.world.scene, "background", BACKGROUND),
                                     **_hidden(self.reference.state))
                reading["position_err_radii"] = pe["median"]
                self._over = self._over + 1 if pe["median"] > s.position_radii else 0
                if self._over >= s.patience:
                    reasons.append(f"position error {pe['median']:.2f} radii > {s.position_radii} "
                                   f"for {self._over} frames")
                missing = pe["missing"]
            else:
                probes = transition.info.get("probes") or {}
                seen, expected = probes.get("probe_objects_seen"), probes.get("probe_objects_expected")
                missing = None
                if seen is not None and expected is not None:
                    reading["objects_seen"], reading["objects_expected"] = seen, expected
                    missing = np.array([seen < expected])
            if missing is not None:
                if self._missing is None or self._missing.shape != missing.shape:
                    self._missing = np.zeros(missing.shape, int)
                self._missing = np.where(missing, self._missing + 1, 0)
                gone = np.flatnonzero(self._missing >= s.vanish_frames)
                if len(gone):
                    reasons.append("object(s) vanished: " + ", ".join(str(int(k)) for k in gone)
                                   if ref_transition is not None else
                                   f"{int(reading['objects_expected'] - reading['objects_seen'])} object(s) "
                                   f"vanished")
        if s.latent and dreamer.last_latent is not None:
            stats = latent_stats(dreamer.last_latent, float(self.world.dreamer.model.cfg.latent_clip))
            reading["latent_rms"] = stats["rms"]
            why = latent_outlier(stats, list(dreamer.reference_stats), s)
            if why:
                reasons.append(why)
        self.last_reading = reading
        if self._cooldown > 0:
            self._cooldown -= 1
            return None
        if not reasons:
            return None
        return self._act(step, reasons, reading, ref_transition)

    def _act(self, step: int, reasons: list[str], reading: dict, ref_transition) -> dict[str, Any]:
        s, dreamer = self.settings, self.world.dreamer
        action = self.action
        if action == "reanchor":
            dreamer.reanchor(ref_transition.observation)
            self._over, self._missing = 0, None
            self._cooldown = s.cooldown
        else:
            dreamer.boost_context_noise(s.noise_level, s.noise_frames)
            self._over, self._missing = 0, None
            self._cooldown = max(s.cooldown, s.noise_frames)
        event = {"step": step, "reason": "; ".join(reasons), "action": action,
                 **{k: v for k, v in reading.items() if k != "step"}}
        self.events.append(event)
        log.warning("watchdog: %s at step %d: %s -> %s", self.world.scene_id, step, event["reason"], action)
        return event

    def summary(self) -> dict[str, Any]:
        return {"events": len(self.events), "checked": self.checked,
                "reanchors": sum(e["action"] == "reanchor" for e in self.events),
                "context_noise": sum(e["action"] == "context_noise" for e in self.events),
                "log": list(self.events)}


# ---------------------------------------------------------------------------
# wiring: API and hooks
# ---------------------------------------------------------------------------

#: world (model or reference) -> its watchdog
_watchers: "weakref.WeakKeyDictionary[Any, DriftWatchdog]" = weakref.WeakKeyDictionary()
#: settings from the run configuration; not None: watch every dreaming world
_global: WatchdogSettings | None = None


def attach(world, reference=None, **settings: Any) -> DriftWatchdog:
    """Watch ``world`` (backend ``model``), re-anchoring on ``reference`` (a ``sim``
    World the caller steps in lockstep) when given. Returns the watchdog (its
    ``events`` list is the log). Replaces an earlier watchdog of ``world``."""
    detach(world)
    dog = DriftWatchdog(world, reference, settings or None)
    _watchers[world] = dog
    if reference is not None:
        _watchers[reference] = dog
    return dog


def detach(world) -> DriftWatchdog | None:
    """Stop watching ``world``; returns its watchdog, if it had one."""
    dog = _watchers.pop(world, None)
    if dog is not None:
        for w in (dog.world, dog.reference):
            if w is not None and _watchers.get(w) is dog:
                del _watchers[w]
    return dog


def watchdog_of(world) -> DriftWatchdog | None:
    return _watchers.get(world)


def configure(settings: Any) -> None:
    """Watch every dreaming world from now on (``settings``: True or a dict), or, with
    ``False``/``None``, stop doing so (attached watchdogs stay)."""
    global _global
    _global = None if settings is False or settings is None else WatchdogSettings.from_config(settings)


@hookimpl
def simcore_configure(config: dict[str, Any]) -> None:
    if "watchdog" in config:
        configure(config["watchdog"])


@hookimpl
def simcore_session_start(session) -> None:
    wanted = session.config.get("watchdog", None)
    if wanted is None and _global is None:
        return
    if wanted is False:
        return
    world = session.world
    if getattr(world, "dreamer", None) is None:
        if wanted is not None:
            raise SimcoreError(f"the drift watchdog needs backend='model'; this session runs {world.backend!r}")
        return
    twin = session.compare if getattr(session.compare, "backend", None) == "sim" else None
    settings = _global if wanted is None or wanted is True and _global is not None else wanted
    session.plugin_state["watchdog"] = attach(world, twin, **dataclasses.asdict(
        WatchdogSettings.from_config(settings)))


@hookimpl
def simcore_after_step(world, transition) -> None:
    dog = _watchers.get(world)
    if dog is None and _global is not None and getattr(world, "dreamer", None) is not None:
        dog = attach(world, None, **dataclasses.asdict(_global))
    if dog is not None:
        dog.observe(world, transition)


@hookimpl
def simcore_session_finish(session, summary: dict[str, Any]) -> None:
    dog = session.plugin_state.get("watchdog")
    if dog is not None:
        summary["watchdog"] = dog.summary()
        detach(session.world)
