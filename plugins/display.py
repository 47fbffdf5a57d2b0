"""Built-in display plugin: a pygame window for sessions (installed as
``simcore.plugins.display``; disable with ``--disable display``).

A :class:`~simcore.loop.Session` whose ``config`` has a ``"display"`` entry gets a
window showing its frames side by side (``world``, ``compare``), each scaled up and
labelled, above a HUD (scene, backend, step, measured FPS, reward, return and the
PAUSED / REC flags). Keys, read once per rendered frame:

    Esc, Q        quit                Space, P   pause / resume
    N, .          step once (pauses)  R          reset (new episode)
    C             toggle recording    the scene's keymap (arrows, W/S...) -> action
    F5            quick-save          F9         quick-load (the last quick-save)
    Backspace, B  rewind N steps      F6         fork a branch (shown side by side)
    Tab           switch the controls between world and branch
    F7            close the branch
    G / A / K     world events: flip gravity, add a ball, recolour ball 1 (simcore.events)

``config["display"]`` (a dict; ``True`` or ``{}`` for the defaults):

    headless  bool  no real window (SDL's dummy driver); default: automatic, True when
                    ``$SDL_VIDEODRIVER`` is "dummy" or, on Linux, neither ``$DISPLAY``
                    nor ``$WAYLAND_DISPLAY`` is set
    out       path  write what the window shows to a .gif/.mp4 (``simcore.video``),
                    one video frame per rendered tick; summary["video"] = the path
    scale     int   pixels per frame pixel (default 8)
    title     str   window title (default "simcore — <scene id>")
    save_dir  path  where F5/F9 write/read ``quicksave.simsave`` (default: the current dir)
    rewind    int   steps that Backspace/B rewinds (default 30)

pygame is imported only when a window opens, so the plugin costs nothing elsewhere;
plain ``World.step`` calls outside a session never reach it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping

import numpy as np

from simcore.errors import SimcoreError
from simcore.hookspecs import hookimpl

NAME = "display"

#: command -> pygame key names that send it (see :meth:`Window.events`)
COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "quit": ("escape", "q"),
    "pause": ("space", "p"),
    "step": ("n", "."),
    "reset": ("r",),
    "record": ("c",),
    "save": ("f5",),
    "load": ("f9",),
    "rewind": ("backspace", "b"),
    "branch": ("f6",),
    "switch": ("tab",),
    "close_branch": ("f7",),
    "gravity_flip": ("g",),  # world events (simcore.events.key_event)
    "add_ball": ("a",),
    "recolor": ("k",),
}

QUICKSAVE = "quicksave.simsave"  # the quick-save slot's file name in save_dir
DEFAULT_REWIND = 30  # steps one rewind key press goes back

BACKGROUND = (40, 40, 50)
TEXT = (225, 225, 230)
DIM = (150, 150, 160)
FLAG_COLORS = {"PAUSED": (240, 210, 60), "REC": (235, 70, 70)}
LABEL_SIZE = 18  # font size of the labels above the frames
HUD_SIZE = 18
GAP = 4  # pixels between frames


def auto_headless() -> bool:
    """True when there is no screen to open a window on."""
    if os.environ.get("SDL_VIDEODRIVER", "").lower() in ("dummy", "offscreen"):
        return True
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def _import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as exc:  # pragma: no cover - pygame is a dependency
        raise SimcoreError(f"the display needs pygame: pip install pygame ({exc})") from exc
    return pygame


def keys_to_action(
    pressed: Callable[[int], bool],
    keymap: Mapping[str, Any],
    noop: Any,
    key_code: Callable[[str], int] | None = None,
) -> Any:
    """The action of the first key of ``keymap`` (pygame key names -> action, in
    order) that ``pressed(key_code)`` reports held; ``noop`` when none is.

    ``key_code`` turns a key name into a pygame key code (default
    ``pygame.key.key_code``); an unknown name raises :class:`SimcoreError`.
    """
    if not keymap:
        return noop
    if key_code is None:
        key_code = _import_pygame().key.key_code
    for name, action in keymap.items():
        try:
            code = key_code(name)
        except ValueError:
            raise SimcoreError(f"keymap names an unknown pygame key {name!r}") from None
        if pressed(code):
            return action
    return noop


def _format_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.2f}"
    return str(value)


class Window:
    """A pygame window showing frames side by side, scaled, labelled, with a HUD.

    There is one pygame display per process, so one Window at a time.
    """

    def __init__(self, title: str = "simcore", scale: int = 8, fps: float = 20, headless: bool | None = None):
        if int(scale) < 1:
            raise SimcoreError(f"display scale must be a positive integer, got {scale!r}")
        self.title = title
        self.scale = int(scale)
        self.fps = float(fps)
        self.headless = auto_headless() if headless is None else bool(headless)
        pygame = self._pg = _import_pygame()
        if self.headless:
            driver_wanted = os.environ.get("SDL_VIDEODRIVER", "").lower() not in ("dummy", "offscreen")
            if driver_wanted:
                os.environ["SDL_VIDEODRIVER"] = "dummy"
                if pygame.display.get_init() and pygame.display.get_driver() not in ("dummy", "offscreen"):
                    pygame.display.quit()  # re-open on the dummy driver
        pygame.display.init()
        pygame.font.init()
        self._label_font = pygame.font.Font(None, LABEL_SIZE)
        self._hud_font = pygame.font.Font(None, HUD_SIZE)
        self._clock = pygame.time.Clock()
        self._screen = None
        self._layout: tuple | None = None
        self._hud_lines = 1  # grows as needed, never shrinks (stable video size)
        self.size: tuple[int, int] = (0, 0)  # (width, height) of the window
        #: label -> (x, y, width, height) of each scaled frame in the last show()
        self.frame_rects: dict[str, tuple[int, int, int, int]] = {}
        self.closed = False

    # -- drawing ------------------------------------------------------------------------
    def _hud_items(self, hud: Mapping[str, Any] | None) -> list[tuple[str, tuple[int, int, int]]]:
        items = []
        for key, value in (hud or {}).items():
            if value is True:  # a flag: shown by name while set
                items.append((str(key), FLAG_COLORS.get(str(key), TEXT)))
            elif value is False or value is None:
                continue
            else:
                items.append((f"{key}: {_format_value(value)}", TEXT))
        return items

    def _wrap(self, items, width: int) -> list[list[tuple[Any, int]]]:
        """Greedy line-wrap of rendered HUD items to ``width`` pixels."""
        space = self._hud_font.size("   ")[0]
        lines: list[list[tuple[Any, int]]] = [[]]
        x = 4
        for text, color in items:
            surf = self._hud_font.render(text, True, color)
            w = surf.get_width()
            if lines[-1] and x + w > width - 4:
                lines.append([])
                x = 4
            lines[-1].append((surf, x))
            x += w + space
        return lines

    def show(self, frames: Mapping[str, np.ndarray], hud: Mapping[str, Any] | None = None) -> None:
        """Draw ``frames`` (label -> (H, W, 3) uint8) left to right and ``hud``
        (key -> value; ``True`` values are flags shown by name, False/None hidden)."""
        if self.closed:
            raise SimcoreError("the window is closed")
        pygame = self._pg
        arrays = []
        for label, frame in frames.items():
            arr = np.asarray(frame)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise SimcoreError(f"frame {label!r} must be (H, W, 3), got shape {arr.shape}")
            arrays.append((str(label), arr.astype(np.uint8, copy=False)))
        if not arrays:
            raise SimcoreError("show() needs at least one frame")
        s = self.scale
        label_h = self._label_font.get_linesize() + 4
        line_h = self._hud_font.get_linesize() + 2
        frames_w = sum(a.shape[1] * s for _, a in arrays) + GAP * (len(arrays) - 1)
        frames_h = max(a.shape[0] * s for _, a in arrays)
        lines = self._wrap(self._hud_items(hud), frames_w)
        self._hud_lines = max(self._hud_lines, len(lines))
        width, height = frames_w, label_h + frames_h + self._hud_lines * line_h + 6
        layout = (tuple((lbl, a.shape) for lbl, a in arrays), width, height)
        if self._screen is None or layout != self._layout:
            if self._screen is None or (width, height) != self.size:
                self._screen = pygame.display.set_mode((width, height))
                pygame.display.set_caption(self.title)
                self.size = (width, height)
            self._layout = layout
        screen = self._screen
        screen.fill(BACKGROUND)
        x = 0
        self.frame_rects = {}
        for label, arr in arrays:
            h, w = arr.shape[:2]
            self.frame_rects[label] = (x, label_h, w * s, h * s)
            surf = pygame.surfarray.make_surface(np.ascontiguousarray(arr.transpose(1, 0, 2)))
            if s != 1:
                surf = pygame.transform.scale(surf, (w * s, h * s))
            screen.blit(surf, (x, label_h))
            text = self._label_font.render(label, True, DIM)
            screen.blit(text, (x + 4, 2), area=pygame.Rect(0, 0, max(0, w * s - 4), label_h))
            x += w * s + GAP
        y = label_h + frames_h + 4
        for line in lines:
            for surf, lx in line:
                screen.blit(surf, (lx, y))
            y += line_h
        pygame.display.flip()

    # -- input ------------------------------------------------------------------------------
    def events(self) -> list[str]:
        """Commands from the event queue since the last call: "quit", "pause",
        "step", "reset", "record" (see ``COMMAND_KEYS``)."""
        pygame = self._pg
        if self.closed or not pygame.display.get_init():
            return []
        by_key = {pygame.key.key_code(name): cmd for cmd, names in COMMAND_KEYS.items() for name in names}
        commands = []
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                commands.append("quit")
            elif event.type == pygame.KEYDOWN and event.key in by_key:
                commands.append(by_key[event.key])
        return commands

    def action(self, keymap: Mapping[str, Any], noop: Any) -> Any:
        """The action for the keys held now (first match in ``keymap`` order)."""
        pygame = self._pg
        if self.closed or not keymap:
            return noop
        pressed = pygame.key.get_pressed()
        return keys_to_action(lambda code: bool(pressed[code]), keymap, noop, pygame.key.key_code)

    def capture(self) -> np.ndarray:
        """The whole window as (H, W, 3) uint8."""
        if self._screen is None:
            raise SimcoreError("nothing shown yet: call show() first")
        return np.ascontiguousarray(self._pg.surfarray.array3d(self._screen).transpose(1, 0, 2))

    def tick(self) -> None:
        """Wait for the next frame at ``fps`` and keep the window responsive
        (for ``World.render()`` in "human" mode, which has no loop of its own)."""
        if self.closed:
            return
        self._pg.event.pump()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._screen = None
            self._pg.display.quit()

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Plugin hooks
# ---------------------------------------------------------------------------


class DisplayState:
    """What the plugin keeps per session (``session.plugin_state["display"]``)."""

    def __init__(self, window: Window, writer=None, out: str | None = None, save_dir: str | None = None,
                 rewind: int = DEFAULT_REWIND):
        self.window = window
        self.writer = writer
        self.out = out
        self.save_dir = save_dir or "."
        self.rewind = rewind

    @property
    def quicksave(self) -> str:
        """The quick-save file F5 writes and F9 reads."""
        return os.path.join(self.save_dir, QUICKSAVE)


def _state(session) -> DisplayState | None:
    state = getattr(session, "plugin_state", {}).get(NAME)
    return state if isinstance(state, DisplayState) else None


def _config(session) -> dict[str, Any] | None:
    config = getattr(session, "config", None) or {}
    if NAME not in config:
        return None
    cfg = config[NAME]
    if cfg is None or cfg is True:
        return {}
    if cfg is False:
        return None
    if not isinstance(cfg, Mapping):
        raise SimcoreError(f'config["display"] must be a dict, got {cfg!r}')
    return dict(cfg)


@hookimpl
def simcore_session_start(session) -> None:
    cfg = _config(session)
    if cfg is None:
        return
    world = session.world
    rewind = cfg.get("rewind", DEFAULT_REWIND)
    if isinstance(rewind, bool) or not isinstance(rewind, int) or rewind < 1:
        raise SimcoreError(f'config["display"]["rewind"] must be a positive number of steps, got {rewind!r}')
    window = Window(
        title=cfg.get("title") or f"simcore — {world.scene_id}",
        scale=cfg.get("scale", 8),
        fps=session.target_fps,
        headless=cfg.get("headless"),
    )
    state = DisplayState(window, save_dir=cfg.get("save_dir"), rewind=rewind)
    session.plugin_state[NAME] = state
    out = cfg.get("out")
    if out:
        from simcore.video import VideoWriter

        try:
            state.writer = VideoWriter(out, fps=session.target_fps)
        except Exception:
            window.close()
            del session.plugin_state[NAME]
            raise
        state.out = str(out)


def _labels(session, frames: Mapping[str, Any]) -> dict[str, Any]:
    worlds = {"world": session.world, "compare": getattr(session, "compare", None),
              "branch": getattr(session, "branch_world", None)}
    shown = {}
    for key, frame in frames.items():
        if frame is None:
            continue
        w = worlds.get(key)
        shown[f"{key} ({w.backend})" if w is not None and len(frames) > 1 else key] = frame
    return shown


def hud(session) -> dict[str, Any]:
    """The HUD entries for ``session``, then the running probe readouts of the last step
    (``info["probes"]``, from any ``simcore_probe`` plugin)."""
    entries = {
        "scene": session.world.scene_id,
        "backend": session.world.backend,
        "step": session.world.t,
        "episode": session.episodes,
        "FPS": f"{session.fps:.1f}",
        "reward": float(session.last_reward),
        "return": float(session.episode_return),
        "PAUSED": bool(session.paused),
        "REC": bool(session.recording),
    }
    if getattr(session, "branch_world", None) is not None:
        entries["controls"] = session.control + (" (branch ended)" if session.branch_done else "")
    if getattr(session, "last_event", None):
        entries["event"] = session.last_event
    probes = (session.info or {}).get("probes") or {}
    for name, value in probes.items():
        label = name.removeprefix("probe_")
        entries[label] = f"{value:.2f}" if isinstance(value, float) else value
    return entries


COMMANDS = {
    "quit": "stop",
    "pause": "toggle_pause",
    "step": "step_once",
    "reset": "request_reset",
    "record": "toggle_recording",
    "branch": "branch",
    "switch": "switch_control",
    "close_branch": "close_branch",
}


def run_command(session, state: DisplayState, command: str) -> None:
    """Carry out one key command on ``session``. Save/load/rewind/branch failures (a
    corrupt quick-save, nothing to rewind...) are shown in the HUD, not raised: a key
    press must not end a live session."""
    try:
        if command == "save":
            session.save(state.quicksave)
        elif command == "load":
            if not os.path.isfile(state.quicksave):
                session.last_event = f"no quick-save yet ({state.quicksave}); F5 writes one"
            else:
                session.load(state.quicksave)
        elif command == "rewind":
            session.rewind(state.rewind)
        elif command in ("gravity_flip", "add_ball", "recolor"):
            from simcore.events import key_event, session_event

            session_event(session, key_event(session.world, command))
        else:
            getattr(session, COMMANDS[command])()
    except SimcoreError as exc:
        if command in ("quit", "pause", "step", "reset", "record"):
            raise
        session.last_event = f"{command} failed: {exc}"


@hookimpl
def simcore_render(session, frames) -> None:
    state = _state(session)
    if state is None or state.window.closed:
        return
    window = state.window
    window.show(_labels(session, frames), hud=hud(session))
    if state.writer is not None:
        state.writer.append(window.capture())
    for command in window.events():
        run_command(session, state, command)


@hookimpl
def simcore_action(session, observation, info) -> Any | None:
    state = _state(session)
    if state is None or state.window.closed or state.window.headless:
        return None
    scene = session.world.scene
    if not scene.keymap:
        return None  # nothing to play with the keyboard: let other plugins answer
    return state.window.action(scene.keymap, scene.noop_action)


@hookimpl
def simcore_session_finish(session, summary) -> None:
    state = _state(session)
    if state is None:
        return
    del session.plugin_state[NAME]
    try:
        if state.writer is not None:
            state.writer.close()
            if state.writer.frames:
                summary["video"] = state.out
    finally:
        state.window.close()
