"""The built-in display plugin: real pygame on SDL's dummy video driver."""
from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens a display
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

import simcore  # noqa: E402
from simcore import hookimpl  # noqa: E402
from simcore.errors import SimcoreError  # noqa: E402
from simcore.loop import Session  # noqa: E402
from simcore.plugins import display  # noqa: E402
from simcore.plugins.display import GAP, Window, auto_headless, keys_to_action  # noqa: E402

SCALE = 2


class KeyPresser:
    """Posts pygame KEYDOWN events while frame ``n`` renders (before the display reads
    them) and records what the session looked like at each frame."""

    def __init__(self, keys: dict[int, int]):
        self.keys = keys
        self.log: list[dict] = []

    @hookimpl(tryfirst=True)
    def simcore_render(self, session, frames):
        self.log.append({"steps": session.steps, "t": session.world.t, "paused": session.paused,
                         "recording": session.recording})
        key = self.keys.get(session.frames)
        if key is not None:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))


def pong(pm, **kw):
    return simcore.make("simcore/Pong-v0", plugin_manager=pm, **kw)


def test_headless_session_writes_a_gif_of_the_window(pm, tmp_path):
    out = tmp_path / "s.gif"
    world = pong(pm)
    session = Session(world, policy=world.scene.demo_policy(0), seed=0, realtime=False, max_steps=9,
                      config={"display": {"headless": True, "out": str(out), "scale": SCALE}})
    summary = session.run()
    assert summary["video"] == str(out)
    video = iio.imread(out, index=None)
    h, w = world.frame_size
    # one frame per rendered tick (the HUD's step counter makes each one different)
    assert video.shape[0] == summary["frames"] == 10
    assert video.shape[2] == w * SCALE
    assert video.shape[1] > h * SCALE  # labels and HUD around the scaled frame
    assert "display" not in session.plugin_state
    assert not pygame.display.get_init()  # the window was closed


def test_window_shows_the_scaled_frame_and_captures_it():
    frame = np.zeros((16, 24, 3), np.uint8)
    frame[:8, :12] = (230, 60, 60)
    frame[8:, 12:] = (60, 200, 80)
    with Window(scale=3, headless=True) as window:
        window.show({"world": frame}, hud={"scene": "x", "step": 3, "PAUSED": True, "REC": False})
        shot = window.capture()
        assert shot.shape == (window.size[1], window.size[0], 3) and shot.dtype == np.uint8
        x, y, w, h = window.frame_rects["world"]
        assert (w, h) == (72, 48) and shot.shape[0] > y + h
        expected = frame.repeat(3, axis=0).repeat(3, axis=1)
        np.testing.assert_array_equal(shot[y:y + h, x:x + w], expected)
        assert shot[:y].std() > 0  # a label was drawn
        assert shot[y + h:].std() > 0  # the HUD was drawn
    assert window.closed


def test_hud_wraps_to_the_window_width():
    frame = np.zeros((16, 16, 3), np.uint8)
    with Window(scale=2, headless=True) as window:
        window.show({"world": frame}, hud={"step": 1})
        one_line = window.size
        window.show({"world": frame}, hud={f"key{i}": "value" for i in range(8)})
        assert window.size[0] == one_line[0] == 32  # the frames set the width
        assert window.size[1] > one_line[1] + 3 * 10  # several more HUD lines
        taller = window.size
        window.show({"world": frame}, hud={"step": 2})
        assert window.size == taller  # the HUD never shrinks (videos keep one size)


def test_window_resizes_when_the_layout_changes():
    a = np.zeros((16, 16, 3), np.uint8)
    with Window(scale=2, headless=True) as window:
        window.show({"world": a})
        single = window.size
        window.show({"world": a, "compare": a})
        assert window.size[0] == 2 * single[0] + GAP
        assert window.capture().shape[1] == window.size[0]
        assert window.frame_rects["compare"][0] == 32 + GAP


def test_keys_drive_the_session(pm):
    presser = KeyPresser({2: pygame.K_p, 4: pygame.K_n, 6: pygame.K_r, 7: pygame.K_c, 9: pygame.K_ESCAPE})
    pm.register(presser)
    world = pong(pm)
    session = Session(world, seed=0, realtime=False, max_frames=50,
                      config={"display": {"headless": True, "scale": 1}})
    summary = session.run()
    log = presser.log
    assert summary["frames"] == 9  # Esc at frame 9 quit long before max_frames
    assert [e["paused"] for e in log] == [False, False] + [True] * 7  # P at frame 2
    assert [e["steps"] for e in log] == [0, 1, 1, 1, 2, 2, 2, 2, 2]  # N at frame 4: one step
    assert log[6]["t"] == 0 and log[5]["t"] == 2  # R at frame 6: reset on the next tick
    assert [e["recording"] for e in log][6:] == [False, True, True]  # C at frame 7


def test_space_resumes_and_window_close_quits(pm):
    presser = KeyPresser({1: pygame.K_SPACE, 3: pygame.K_SPACE})
    pm.register(presser)
    stopper = QuitAt(5)
    pm.register(stopper)
    session = Session(pong(pm), seed=0, realtime=False, max_frames=50, config={"display": {"headless": True}})
    summary = session.run()
    assert summary["frames"] == 5
    assert [e["steps"] for e in presser.log] == [0, 0, 0, 1, 2]


class QuitAt:
    def __init__(self, frame):
        self.frame = frame

    @hookimpl(tryfirst=True)
    def simcore_render(self, session, frames):
        if session.frames == self.frame:
            pygame.event.post(pygame.event.Event(pygame.QUIT))


def test_compare_world_is_shown_side_by_side(pm, tmp_path):
    out = tmp_path / "cmp.gif"
    world, compare = pong(pm), pong(pm)
    session = Session(world, compare=compare, seed=1, realtime=False, max_steps=3,
                      config={"display": {"headless": True, "out": str(out), "scale": SCALE}})
    sizes = []

    class Peek:
        @hookimpl(trylast=True)
        def simcore_render(self, session, frames):
            state = session.plugin_state["display"]
            sizes.append(state.window.size)
            assert set(state.window.frame_rects) == {"world (sim)", "compare (sim)"}

    pm.register(Peek())
    session.run()
    w = world.frame_size[1] * SCALE
    assert sizes and all(s[0] == 2 * w + GAP for s in sizes)
    assert iio.imread(out, index=None).shape[2] == 2 * w + GAP


def test_keys_to_action_translates_the_keymap():
    pygame.display.init()
    try:
        keymap = {"up": 1, "w": 1, "down": 2, "s": 2}
        held = set()

        def pressed(code):
            return code in held

        assert keys_to_action(pressed, keymap, 0) == 0
        held.add(pygame.K_DOWN)
        assert keys_to_action(pressed, keymap, 0) == 2
        held.add(pygame.K_w)  # both: the first key in keymap order wins
        assert keys_to_action(pressed, keymap, 0) == 1
        held.clear()
        held.add(pygame.K_s)
        assert keys_to_action(pressed, keymap, "noop") == 2
        assert keys_to_action(pressed, {}, "noop") == "noop"
        with pytest.raises(SimcoreError, match="no-such-key"):
            keys_to_action(pressed, {"no-such-key": 1}, 0)
    finally:
        pygame.display.quit()


def test_window_action_with_no_key_held_is_the_noop():
    with Window(scale=1, headless=True) as window:
        window.show({"world": np.zeros((8, 8, 3), np.uint8)})
        assert window.action({"up": 1, "down": 2}, 0) == 0
        assert window.events() == []


def test_headless_windows_give_no_keyboard_action(pm):
    answers = []

    class Watch:
        @hookimpl
        def simcore_render(self, session, frames):
            assert "display" in session.plugin_state  # a (headless) window is open
            answers.append(pm.hook.simcore_action(session=session, observation=None, info={}))

    pm.register(Watch())
    Session(pong(pm), seed=0, realtime=False, max_steps=3, config={"display": {"headless": True}}).run()
    assert answers == [None] * 4


def test_no_display_config_opens_no_window(pm):
    world = pong(pm)
    summary = Session(world, seed=0, realtime=False, max_steps=3).run()
    assert "video" not in summary
    assert not pygame.display.get_init()
    world.reset(seed=0)
    world.step(1)  # plain World.step outside a session: the plugin stays out of the way
    assert not pygame.display.get_init()


def test_bad_display_config(pm, tmp_path):
    with pytest.raises(SimcoreError, match="suffix"):
        Session(pong(pm), seed=0, realtime=False, max_steps=1,
                config={"display": {"headless": True, "out": str(tmp_path / "x.webm")}}).run()
    assert not pygame.display.get_init()
    with pytest.raises(SimcoreError, match="scale"):
        Window(scale=0, headless=True)


def test_auto_headless(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    assert auto_headless()
    monkeypatch.delenv("SDL_VIDEODRIVER")
    monkeypatch.setattr(display.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert auto_headless()
    monkeypatch.setenv("DISPLAY", ":0")
    assert not auto_headless()


def test_world_render_human_uses_the_window(pm):
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm, render_mode="human")
    try:
        world.reset(seed=0)
        world.step(0)
        assert pygame.display.get_init() and pygame.display.get_surface() is not None
    finally:
        world.close()
    assert not pygame.display.get_init()


def test_hud_shows_probe_readouts(pm):
    """Probe plugins' metrics of the last step appear in the HUD."""
    import simcore
    from simcore.loop import Session
    from simcore.plugins.display import hud

    class Probe:
        @simcore.hookimpl
        def simcore_probe(self, world, transition):
            return {"probe_speed": 1.25, "count": 3}

    pm.register(Probe(), name="testprobe")
    world = simcore.make("simcore/BouncingBalls-v0", plugin_manager=pm)
    session = Session(world, seed=0, realtime=False, max_steps=2)
    session.run()
    entries = hud(session)
    assert entries["speed"] == "1.25" and entries["count"] == 3
