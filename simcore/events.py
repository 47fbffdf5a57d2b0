"""World events: structured changes to a running world — gravity changes, an added
ball, a recoloured ball — from the API, a key, or a text prompt.

    world.event("add a red ball")                       # text, parsed by parse_event
    world.event(Event("gravity", gravity=150.0))        # structured
    world.event({"type": "recolor", "index": 0, "color": "blue"})

Why events are structured: the simulator must apply them exactly (the ``sim`` and
``render`` backends), recordings must carry them (``info["events"]`` of the step
they happen on, so a world model can learn them), and a model must receive them as
a vector (:func:`event_vector`, the ``event`` conditioning, on that step). Text is
only a front end: a small rule-based parser maps many phrasings to the same event.

Units are those of scene options: lengths in pixels of a 64-pixel frame, speeds in
px/s, gravity in px/s² (positive pulls down). Text prompts number balls from 1
("ball 1" is the first ball = index 0); structured events use 0-based ``index``.
An event as *applied* (returned by ``World.event`` and recorded) has relative
changes resolved and defaults filled in.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from simcore.errors import SimcoreError
from simcore.hookspecs import hookimpl
from simcore.scene import PALETTE

#: event types, in the order of the one-hot part of the event vector
EVENT_TYPES = ("gravity", "add_ball", "recolor")
#: [one-hot type (3), gravity/100, x/64, y/64, vx/100, vy/100, r, g, b (/255), radius/10, index/8]
EVENT_DIM = len(EVENT_TYPES) + 10
GRAVITY_LIMIT = 2000.0  # |gravity| bound, as the scenes' gravity option
DEFAULT_GRAVITY = 120.0  # "turn gravity on"
DEFAULT_SPEED = 40.0  # "add a ball moving left"
MAX_BALLS = 16  # the ball scenes' count bound

#: colour words the parser knows beyond the palette's own names
COLOR_SYNONYMS = {
    "purple": "magenta", "pink": "magenta", "violet": "magenta", "fuchsia": "magenta",
    "teal": "cyan", "aqua": "cyan", "turquoise": "cyan", "gold": "yellow", "golden": "yellow",
    "amber": "orange", "crimson": "red", "scarlet": "red", "navy": "blue", "azure": "blue",
    "lime": "green", "emerald": "green",
}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
            "eighth": 8, "ninth": 9, "tenth": 10, "last": -1}


class EventError(SimcoreError, ValueError):
    """An event that is malformed, not understood, or not applicable to the scene."""


# ---------------------------------------------------------------------------
# the event
# ---------------------------------------------------------------------------


def _pair(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise EventError(f"{name} must be an (x, y) pair of numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise EventError(f"{name} must be finite, got {value!r}")
    return (a, b)


def _color(value: Any) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        name = COLOR_SYNONYMS.get(value.lower(), value.lower())
        if name not in PALETTE:
            raise EventError(f"unknown colour {value!r}; known: {', '.join(list(PALETTE) + sorted(COLOR_SYNONYMS))}")
        return tuple(PALETTE[name])
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise EventError(f"a colour is a name or an (r, g, b) triple, got {value!r}") from None
    if len(rgb) != 3 or any(not 0 <= v <= 255 for v in rgb):
        raise EventError(f"an RGB colour needs three values in 0..255, got {value!r}")
    return rgb


@dataclass(frozen=True)
class Event:
    """One world event. Which fields apply depends on ``type``:

    gravity   ``gravity`` (new value) or ``factor`` (new = factor × current)
    add_ball  optional ``pos``, ``vel``, ``radius``, ``color`` (random when missing)
    recolor   ``index`` (0-based; -1 = the last ball) and ``color``
    """

    type: str
    gravity: float | None = None
    factor: float | None = None
    pos: tuple[float, float] | None = None
    vel: tuple[float, float] | None = None
    radius: float | None = None
    color: tuple[int, int, int] | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)
        if self.type not in EVENT_TYPES:
            raise EventError(f"unknown event type {self.type!r}; known: {', '.join(EVENT_TYPES)}")
        given = {k for k, v in asdict(self).items() if v is not None and k != "type"}
        allowed = {"gravity": {"gravity", "factor"}, "add_ball": {"pos", "vel", "radius", "color"},
                   "recolor": {"index", "color"}}[self.type]
        if given - allowed:
            raise EventError(f"a {self.type!r} event takes {sorted(allowed)}, not {sorted(given - allowed)}")
        for k in ("gravity", "factor", "radius"):
            v = getattr(self, k)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                    raise EventError(f"{self.type} event: {k} must be a finite number, got {v!r}")
                set_(k, float(v))
        set_("pos", _pair(self.pos, "pos"))
        set_("vel", _pair(self.vel, "vel"))
        set_("color", _color(self.color))
        if self.type == "gravity":
            if (self.gravity is None) == (self.factor is None):
                raise EventError("a gravity event needs exactly one of gravity= (new value) or factor= (relative)")
            if self.gravity is not None and abs(self.gravity) > GRAVITY_LIMIT:
                raise EventError(f"gravity must be within ±{GRAVITY_LIMIT:g} px/s², got {self.gravity:g}")
        if self.radius is not None and not 1.0 <= self.radius <= 24.0:
            raise EventError(f"a ball's radius must be in [1, 24] px (64-px frame), got {self.radius:g}")
        if self.type == "recolor":
            if self.index is None or self.color is None:
                raise EventError("a recolor event needs index= (0-based ball index) and color=")
            if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)):
                raise EventError(f"recolor index must be an integer, got {self.index!r}")
            set_("index", int(self.index))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (recordings, JSON): None fields left out, tuples as lists."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        if not isinstance(d, dict) or "type" not in d:
            raise EventError(f"an event dict needs a 'type' key, got {d!r}")
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - fields)
        if unknown:
            raise EventError(f"unknown event field(s) {unknown}; fields: {sorted(fields)}")
        return cls(**d)


def coerce_event(event: Any) -> Event:
    """An Event from an Event, a dict or a text prompt."""
    if isinstance(event, Event):
        return event
    if isinstance(event, dict):
        return Event.from_dict(event)
    if isinstance(event, str):
        return parse_event(event)
    raise EventError(f"an event is an Event, a dict or a text prompt, got {type(event).__name__}")


# ---------------------------------------------------------------------------
# the conditioning vector
# ---------------------------------------------------------------------------


def event_vector(events: list[Event | dict[str, Any]] | None) -> np.ndarray:
    """The events of one step as a (EVENT_DIM,) float32 vector: the sum of their
    one-hot types, then the parameters of the (last) applied event of each kind:
    gravity/100, pos/64, vel/100, colour/255, radius/10, index/8. Zeros: no event."""
    out = np.zeros(EVENT_DIM, dtype=np.float32)
    for e in events or []:
        e = coerce_event(e)
        out[EVENT_TYPES.index(e.type)] += 1.0
        p = len(EVENT_TYPES)
        if e.gravity is not None:
            out[p] = e.gravity / 100.0
        if e.pos is not None:
            out[p + 1:p + 3] = np.asarray(e.pos) / 64.0
        if e.vel is not None:
            out[p + 3:p + 5] = np.asarray(e.vel) / 100.0
        if e.color is not None:
            out[p + 5:p + 8] = np.asarray(e.color) / 255.0
        if e.radius is not None:
            out[p + 8] = e.radius / 10.0
        if e.index is not None:
            out[p + 9] = e.index / 8.0
    return out


# ---------------------------------------------------------------------------
# text prompts
# ---------------------------------------------------------------------------

_NUM = r"[-+]?\d+(?:\.\d+)?"
_EXAMPLES = "'gravity 120', 'make gravity stronger', 'add a red ball', 'turn ball 2 blue'"


def _find_color(words: list[str]) -> str | None:
    for w in words:
        if w in PALETTE or w in COLOR_SYNONYMS:
            return COLOR_SYNONYMS.get(w, w)
    return None


def _ball_index(text: str) -> int | None:
    """1-based ball number in the prompt ("ball 2", "ball #2", "2nd ball", "the second ball", "last ball")."""
    m = re.search(r"\bball\s*(?:#|no\.?\s*|number\s*)?(\d+)\b", text) or re.search(r"\b(\d+)(?:st|nd|rd|th)\s+ball", text)
    if m:
        return int(m.group(1))
    m = re.search(r"\b(" + "|".join(ORDINALS) + r")\s+(?:\w+\s+)?ball", text)
    if m:
        return ORDINALS[m.group(1)]
    return None


def _parse_gravity(text: str, words: list[str]) -> Event:
    up = bool(re.search(r"\b(up|upward|upwards|ceiling)\b", text)) and not re.search(r"\b(turn|crank|ramp|speed)\s+up\b", text)
    words_num = {"two": "2", "three": "3", "four": "4", "five": "5", "ten": "10"}
    text = re.sub(r"\b(" + "|".join(words_num) + r")\s+times\b", lambda mm: words_num[mm.group(1)] + " times", text)
    m = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:x|times)(?!\w)|\b(?:x|times)\s*(\d+(?:\.\d+)?)", text)
    if m:  # "gravity 2x", "three times stronger", "gravity times 0.5": relative
        return Event("gravity", factor=float(m.group(1) or m.group(2)))
    m = re.search(r"(?<![\w.])(" + _NUM + r")(?![\w.])", text)  # a prompt about gravity with a number sets it
    if m:
        value = float(m.group(1))
        return Event("gravity", gravity=-abs(value) if up else value)
    if re.search(r"\b(off|zero|no|none|disable|remove|weightless|zero-g)\b", text):
        return Event("gravity", gravity=0.0)
    if re.search(r"\b(reverse|flip|invert|inverted|upside|opposite|anti|negate)\b", text) or up:
        return Event("gravity", factor=-1.0)
    if re.search(r"\b(double|twice)\b", text):
        return Event("gravity", factor=2.0)
    if re.search(r"\b(triple|thrice)\b", text):
        return Event("gravity", factor=3.0)
    if re.search(r"\b(halve|half)\b", text):
        return Event("gravity", factor=0.5)
    if re.search(r"\b(strong|stronger|increase|increased|more|higher|heavier|raise|boost|crank|ramp|intensify|bigger)\b",
                 text):
        return Event("gravity", factor=1.5)
    if re.search(r"\b(weak|weaker|decrease|decreased|less|lower|lighter|reduce|reduced|weaken|soften|smaller)\b", text):
        return Event("gravity", factor=0.5)
    if re.search(r"\b(on|enable|add|normal|restore)\b", text):
        return Event("gravity", gravity=DEFAULT_GRAVITY)
    raise EventError(f"cannot tell what to do with gravity in {text!r}; try 'gravity 120', 'stronger gravity', "
                     "'weaker gravity', 'flip gravity' or 'no gravity'")


def _parse_add(text: str, words: list[str]) -> Event:
    kw: dict[str, Any] = {}
    color = _find_color(words)
    if color:
        kw["color"] = color
    m = re.search(r"\bat\s*\(?\s*(" + _NUM + r")\s*[, ]\s*(" + _NUM + r")\s*\)?", text)
    if m:
        kw["pos"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(r"\bvel(?:ocity)?\s*\(?\s*(" + _NUM + r")\s*[, ]\s*(" + _NUM + r")\s*\)?", text)
    if m:
        kw["vel"] = (float(m.group(1)), float(m.group(2)))
    else:
        speed = DEFAULT_SPEED
        ms = re.search(r"\bspeed\s*(?:of\s*)?(" + _NUM + r")", text) or re.search(r"(" + _NUM + r")\s*px/s\b", text)
        if ms:
            speed = abs(float(ms.group(1)))
        direction = re.search(r"\b(left|right|up|upward|upwards|down|downward|downwards)\b", text)
        if direction:
            d = direction.group(1)
            kw["vel"] = {"left": (-speed, 0.0), "right": (speed, 0.0)}.get(d, (0.0, -speed) if d.startswith("up")
                                                                        else (0.0, speed))
    m = re.search(r"\bradius\s*(?:of\s*)?(" + _NUM + r")", text)
    if m:
        kw["radius"] = float(m.group(1))
    elif re.search(r"\b(small|tiny|little|smaller)\b", text):
        kw["radius"] = 4.0
    elif re.search(r"\b(big|large|huge|bigger|giant)\b", text):
        kw["radius"] = 7.0
    return Event("add_ball", **kw)


def parse_event(text: str) -> Event:
    """A text prompt -> an Event (rule-based). Understood, among other phrasings:
    'gravity 120', 'set gravity to -40', 'make gravity stronger', 'no gravity',
    'flip gravity'; 'add a red ball', 'spawn a small blue ball at 20 30 moving left';
    'turn ball 2 blue', 'paint the first ball green'. Raises EventError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise EventError(f"an event prompt must be non-empty text, got {text!r}; try {_EXAMPLES}")
    t = text.lower().replace("colour", "color").replace("grey", "gray")
    t = re.sub(r"[!?;\"']", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # full stops, not decimal points
    words = re.findall(r"[a-z]+", t)
    if "gravity" in words or re.search(r"\bg\s*[=:]", t):
        return _parse_gravity(t, words)
    if not re.search(r"\bballs?\b", t):
        raise EventError(f"cannot understand the event prompt {text!r}: it names neither gravity nor a ball; "
                         f"try {_EXAMPLES}")
    adding = re.search(r"\b(add|adds|adding|spawn|create|drop|insert|new|another|throw|launch|put|place|introduce"
                       r"|extra|more|appear)\b", t)
    index = None if adding else _ball_index(t)
    color = _find_color(words)
    if index is not None:
        if index == 0:
            raise EventError(f"{text!r}: prompts number balls from 1 (ball 1 is the first ball)")
        if color is None:
            raise EventError(f"{text!r} names ball {index} but no colour to give it; "
                             f"colours: {', '.join(PALETTE)}")
        return Event("recolor", index=index - 1 if index > 0 else -1, color=color)
    if adding:
        return _parse_add(t, words)
    raise EventError(f"cannot understand the event prompt {text!r}; try {_EXAMPLES}")


# ---------------------------------------------------------------------------
# applying events to scenes
# ---------------------------------------------------------------------------


def supported_events(scene: Any) -> tuple[str, ...]:
    return tuple(getattr(scene, "supported_events", ()))


def apply_event(scene: Any, state: dict[str, Any], event: Event | dict | str,
                rng: np.random.Generator) -> tuple[dict[str, Any], Event]:
    """Apply ``event`` to a scene's state: (new state, the event as applied). The
    scene implements it (``scene.apply_event``); scenes without support raise EventError."""
    event = coerce_event(event)
    supported = supported_events(scene)
    if event.type not in supported:
        raise EventError(f"{scene.id} does not support {event.type!r} events"
                         + (f"; it supports: {', '.join(supported)}" if supported else " (it supports none)"))
    return scene.apply_event(state, event, rng)


# ---------------------------------------------------------------------------
# live play: keys -> events
# ---------------------------------------------------------------------------

#: display command -> what its key does (keys in ``simcore.plugins.display.COMMAND_KEYS``)
KEY_EVENTS = {"gravity_flip": "G: flip gravity (or switch it on)", "add_ball": "A: add a ball",
              "recolor": "K: recolour ball 1"}


def key_event(world: Any, command: str) -> Event:
    """The event a live-play key sends: G flips gravity (switches it on when it is off),
    A adds a random ball, K gives the first ball the next palette colour."""
    if command == "gravity_flip":
        g = float(world.state["gravity"][1]) if world.state is not None and "gravity" in world.state else 0.0
        return Event("gravity", gravity=DEFAULT_GRAVITY) if abs(g) < 1e-9 else Event("gravity", factor=-1.0)
    if command == "add_ball":
        return Event("add_ball")
    if command == "recolor":
        colors = [tuple(c) for c in PALETTE.values()]
        current = tuple(int(v) for v in world.state["color"][0]) if world.state is not None and len(
            world.state.get("color", ())) else colors[-1]
        nxt = colors[(colors.index(current) + 1) % len(colors)] if current in colors else colors[0]
        return Event("recolor", index=0, color=nxt)
    raise EventError(f"no event key command {command!r}; known: {', '.join(KEY_EVENTS)}")


def session_event(session: Any, event: Event | dict | str) -> Event:
    """Apply an event to a live session's world and, as applied (so exactly the same
    change), to its lockstep compare world; note it in ``session.last_event``."""
    applied = session.world.event(event)
    compare = getattr(session, "compare", None)
    if compare is not None and compare.state is not None:
        compare.event(applied)
    session.last_event = "event: " + ", ".join(f"{k}={v}" for k, v in applied.to_dict().items())
    return applied


class ScheduledEvents:
    """Issues text or structured events at given steps of a live session (``simcore play
    --event STEP:PROMPT``): registered as a plugin, it applies each event to the world
    right after its step ``STEP - 1`` (so it takes effect on step ``STEP``) and, as
    applied, to the session's compare twin right after the twin's same step. Events are parsed up front, so a bad prompt fails
    before the window opens."""

    def __init__(self, schedule: dict[int, list[Any]]):
        self.schedule = {int(k): [coerce_event(e) for e in v] for k, v in schedule.items()}
        if any(k < 1 for k in self.schedule):
            raise EventError("events are scheduled at steps >= 1 (they happen before that step)")
        self.session = None
        self._twin: dict[int, list[Event]] = {}  # step -> events as applied to the world, for the compare twin

    @classmethod
    def from_specs(cls, specs: list[str]) -> ScheduledEvents:
        """From ``["20:add a red ball", "40:gravity 150"]``."""
        schedule: dict[int, list[Any]] = {}
        for spec in specs:
            step, sep, text = spec.partition(":")
            try:
                k = int(step)
            except ValueError:
                k = None
            if not sep or k is None or not text.strip():
                raise EventError(f"an --event is STEP:PROMPT (e.g. '20:add a red ball'), got {spec!r}")
            schedule.setdefault(k, []).append(text.strip())
        return cls(schedule)

    @hookimpl
    def simcore_session_start(self, session) -> None:
        self.session, self._twin = session, {}

    @hookimpl
    def simcore_after_step(self, world, transition) -> None:
        s = self.session
        if s is None:
            return
        if world is s.world:
            applied = []
            for event in self.schedule.get(transition.step + 1, []):
                try:
                    applied.append(world.event(event))
                    s.last_event = "event: " + ", ".join(f"{k}={v}" for k, v in applied[-1].to_dict().items())
                except EventError as exc:  # e.g. a recolour of a ball that does not exist: shown, not fatal
                    s.last_event = f"event failed: {exc}"
            if applied and getattr(s, "compare", None) is not None:
                self._twin[transition.step] = applied  # the twin steps after the world: apply once it has
        elif world is getattr(s, "compare", None):
            for event in self._twin.pop(transition.step, []):
                world.event(event)
