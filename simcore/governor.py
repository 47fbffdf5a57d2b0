"""Frame-deadline governor: hold a target frame rate by adapting the model's work.

A dreamed frame costs ``steps + 1`` DiT passes (``steps`` Euler steps, plus one pass
that writes the finished frame's keys/values into the KV cache) plus a fixed part
(decoding, conditioning, probes, the display). The Euler steps are the knob: on the
shipped default model (2 CPU cores, one thread, a quiet machine) a pass is ~4.6 ms and
the fixed part ~16 ms, so 1..8 steps span ~24..59 ms a frame. The governor picks the
most steps (sharper frames with more of their objects drawn; see
``docs/governor-watchdog.md`` for what each setting costs) that keep the measured frame
time under the frame budget ``1 / target_fps``.

Controller (:class:`StepGovernor`), once per dreamed frame:

* an EMA of the measured frame time (``alpha``) and of the cost of one DiT pass
  (the backend's ``generate`` time / (steps + 1));
* over budget — EMA above ``high`` x budget: drop at once as many steps as the pass
  cost says are needed to land in the middle of the band (fast reaction to load);
* headroom — the *predicted* time with one more step (EMA + one pass) under ``low``
  x budget, and ``raise_after`` frames since the last change: one step up (slow,
  quality-seeking);
* after a change the EMA is shifted by the predicted difference, so it describes
  the new level at once and one slow frame is not counted twice.

The gap between ``low`` and ``high`` is the hysteresis: a raise is only taken when
its predicted cost lands 10 % under the point where a drop would fire, so the
steps do not flip back and forth on noise. Steps never leave
``[min_steps, max_steps]``.

Context window: not adapted. Attending fewer of the live KV slots would need the
rollout to mask slots (``simcore.rollout`` owns that), and evicting slots destroys
context for good; on the default model a window of 2 instead of 8 saves only ~20 %
of a pass, while one Euler step is a whole pass.

Use: ``simcore play --target-fps F``; a Session's ``config={"governor": {"target_fps":
F}}``; or :func:`attach` (``simcore.plugins.governor``) for a World stepped by your
own loop.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from simcore.errors import SimcoreError


@dataclass
class GovernorSettings:
    """What the governor aims at, and how hard it steers."""

    target_fps: float
    min_steps: int = 1
    max_steps: int = 8
    alpha: float = 0.2  # EMA weight of the newest frame time
    high: float = 0.95  # drop steps when the EMA frame time exceeds high x budget
    low: float = 0.85  # raise when the predicted time with one more step is under low x budget
    raise_after: int = 5  # frames since the last change before a raise
    start_steps: int | None = None  # default: the backend's steps at start, clamped to the range

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_config(cls, config: Any) -> "GovernorSettings":
        """From a settings object, a number (the target FPS) or a dict of field names."""
        if isinstance(config, cls):
            config.validate()
            return config
        if isinstance(config, (int, float)) and not isinstance(config, bool):
            config = {"target_fps": config}
        if not isinstance(config, dict):
            raise SimcoreError(f"governor settings are a target FPS or a dict of {', '.join(cls.names())}; "
                               f"got {config!r}")
        unknown = sorted(set(config) - set(cls.names()))
        if unknown:
            raise SimcoreError(f"unknown governor setting(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        if "target_fps" not in config:
            raise SimcoreError("the governor needs target_fps (frames per second to hold)")
        settings = cls(**config)
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            fps = float(self.target_fps)
        except (TypeError, ValueError):
            raise SimcoreError(f"target FPS must be a positive number, got {self.target_fps!r}") from None
        if not fps > 0 or math.isinf(fps):
            raise SimcoreError(f"target FPS must be a positive number, got {self.target_fps!r}")
        if int(self.min_steps) < 1 or int(self.max_steps) < int(self.min_steps):
            raise SimcoreError(f"governor steps range must satisfy 1 <= min_steps <= max_steps, got "
                               f"{self.min_steps}..{self.max_steps}")
        if not 0 < float(self.alpha) <= 1:
            raise SimcoreError(f"governor alpha must be in (0, 1], got {self.alpha!r}")
        if not 0 < float(self.low) < float(self.high) <= 1.5:
            raise SimcoreError(f"governor thresholds must satisfy 0 < low < high <= 1.5, got low={self.low!r} "
                               f"high={self.high!r}")
        if int(self.raise_after) < 1:
            raise SimcoreError(f"governor raise_after must be at least 1, got {self.raise_after!r}")
        if self.start_steps is not None and not int(self.min_steps) <= int(self.start_steps) <= int(self.max_steps):
            raise SimcoreError(f"governor start_steps {self.start_steps} is outside {self.min_steps}..{self.max_steps}")

    @property
    def budget(self) -> float:
        """Seconds a frame may take."""
        return 1.0 / float(self.target_fps)


class StepGovernor:
    """The controller: feed it each frame's measured time, read back the steps to use.

        gov = StepGovernor(GovernorSettings(target_fps=15), steps=4)
        steps = gov.update(frame_seconds=0.071, pass_seconds=0.0046)
    """

    def __init__(self, settings: GovernorSettings | dict | float, steps: int = 4, *, history: int = 100_000):
        self.settings = s = GovernorSettings.from_config(settings)
        start = s.start_steps if s.start_steps is not None else steps
        self.steps = int(min(max(int(start), s.min_steps), s.max_steps))
        self.ema: float | None = None  # seconds per frame, at the current steps
        self.pass_ema: float | None = None  # seconds per DiT pass
        self.frames = 0
        self.changes = 0
        self.since_change = 0
        self.saturated = False  # over budget at min_steps: the target cannot be held
        #: per frame: (measured seconds, EMA after the update, steps for the next frame)
        self.history: collections.deque = collections.deque(maxlen=history)

    def _pass_cost(self) -> float:
        """Seconds one more (or one fewer) Euler step costs."""
        if self.pass_ema is not None:
            return self.pass_ema
        return self.ema / (self.steps + 1)  # nothing measured: assume all the time scales with passes

    def update(self, frame_seconds: float, pass_seconds: float | None = None) -> int:
        """One frame took ``frame_seconds`` at the current steps (``pass_seconds``: the
        measured cost of one DiT pass, if known); returns the steps for the next frame."""
        s = self.settings
        x = float(frame_seconds)
        if not math.isfinite(x) or x < 0:
            raise SimcoreError(f"frame time must be a finite number >= 0 seconds, got {frame_seconds!r}")
        a = float(s.alpha)
        self.ema = x if self.ema is None else (1 - a) * self.ema + a * x
        if pass_seconds is not None and math.isfinite(pass_seconds) and pass_seconds > 0:
            self.pass_ema = pass_seconds if self.pass_ema is None else (1 - a) * self.pass_ema + a * pass_seconds
        self.frames += 1
        self.since_change += 1
        budget, c = s.budget, self._pass_cost()
        new = self.steps
        if self.ema > s.high * budget:
            if self.steps > s.min_steps:
                mid = 0.5 * (s.high + s.low) * budget
                drop = max(1, math.ceil((self.ema - mid) / max(c, 1e-9)))
                new = max(s.min_steps, self.steps - drop)
            self.saturated = new == s.min_steps and self.ema - (self.steps - new) * c > s.high * budget
        elif (self.since_change >= s.raise_after and self.steps < s.max_steps
              and self.ema + c <= s.low * budget):
            new = self.steps + 1
            self.saturated = False
        else:
            self.saturated = False
        if new != self.steps:
            self.ema += (new - self.steps) * c  # describe the new level at once
            self.steps = new
            self.changes += 1
            self.since_change = 0
        self.history.append((x, self.ema, self.steps))
        return self.steps

    def summary(self) -> dict[str, Any]:
        steps = [h[2] for h in self.history]
        return {"target_fps": float(self.settings.target_fps), "frames": self.frames, "steps": self.steps,
                "mean_steps": sum(steps) / len(steps) if steps else None, "changes": self.changes,
                "frame_ms_ema": None if self.ema is None else 1000 * self.ema,
                "pass_ms": None if self.pass_ema is None else 1000 * self.pass_ema,
                "saturated": self.saturated,
                "range": [int(self.settings.min_steps), int(self.settings.max_steps)]}
