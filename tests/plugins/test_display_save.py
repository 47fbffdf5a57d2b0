"""Save / load / rewind / branch keys of the display plugin, with real pygame key events
on SDL's dummy video driver."""
from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens a display
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

import simcore  # noqa: E402
from simcore import hookimpl  # noqa: E402
from simcore.errors import SimcoreError  # noqa: E402
from simcore.loop import Session  # noqa: E402
from simcore.plugins.display import QUICKSAVE, hud  # noqa: E402


class Keys:
    """Posts KEYDOWN events while frame n renders (before the display reads them) and
    logs what the session and the window looked like at every frame."""

    def __init__(self, keys: dict[int, int]):
        self.keys = keys
        self.log: list[dict] = []

    @hookimpl(tryfirst=True)
    def simcore_render(self, session, frames):
        state = session.plugin_state.get("display")
        # panels: what the window drew at the previous frame (this frame is drawn after us)
        self.log.append({"t": session.world.t, "event": session.last_event, "control": session.control,
                         "panels": sorted(state.window.frame_rects) if state else [],
                         "frame": frames["world"].copy(), "hud": hud(session)})
        key = self.keys.get(session.frames)
        if key is not None:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))


def run(pm, keys, tmp_path, steps=20, **display):
    presser = Keys(keys)
    pm.register(presser)
    world = simcore.make("simcore/Pong-v0", plugin_manager=pm)
    session = Session(world, policy=lambda obs, info: [1, 2, 0][world.t % 3], seed=0, realtime=False,
                      max_steps=steps, config={"display": {"headless": True, "scale": 1, "save_dir": str(tmp_path),
                                                           **display}})
    session.run()
    return session, presser.log


def test_quick_save_quick_load_and_rewind_keys(pm, tmp_path):
    keys = {3: pygame.K_F5, 7: pygame.K_F9, 11: pygame.K_BACKSPACE, 14: pygame.K_b}
    session, log = run(pm, keys, tmp_path, rewind=2)
    assert (tmp_path / QUICKSAVE).is_file()
    # F5 at frame 3 (t=2) saves; the next frame's HUD says so
    assert log[3]["event"] == f"saved {QUICKSAVE} at step 2" and log[3]["hud"]["event"] == log[3]["event"]
    # F9 at frame 7 (t=6) loads t=2 back: frame 8 shows t=3, made from the loaded state
    assert log[7]["event"] == f"loaded {QUICKSAVE} (step 2)" and log[7]["t"] == 3
    np.testing.assert_array_equal(log[7]["frame"], log[3]["frame"])
    # Backspace at frame 11 (t=6) rewinds 2 steps: frame 12 shows t=5 again, same picture
    assert log[11]["event"] == "rewound 2 steps" and log[11]["t"] == 5
    np.testing.assert_array_equal(log[11]["frame"], log[9]["frame"])
    # B at frame 14 (t=7) rewinds too
    assert log[14]["event"] == "rewound 2 steps" and log[14]["t"] == 6


def test_branch_keys_fork_switch_and_close_the_side_by_side_view(pm, tmp_path):
    keys = {3: pygame.K_F6, 6: pygame.K_TAB, 9: pygame.K_F7}
    session, log = run(pm, keys, tmp_path, steps=12)
    # log[n]["panels"] is frame n's window: F6 at frame 3 adds the branch from frame 4 on
    assert [e["panels"] for e in log[3:5]] == [["world"], ["branch (sim)", "world (sim)"]]
    assert log[3]["event"] == "branch opened at step 2" and log[3]["hud"]["controls"] == "branch"
    # the keyboard/policy drives the branch while the main world holds at t=2
    assert [e["t"] for e in log[2:6]] == [2, 2, 2, 2]
    assert log[6]["control"] == "world" and log[6]["t"] == 3  # Tab: the main world moves again
    assert log[9]["panels"] == ["branch (sim)", "world (sim)"] and log[10]["panels"] == ["world"]
    assert log[9]["event"] == "branch closed"
    assert session.branch_world is None


def test_bad_or_missing_quick_saves_show_in_the_hud_and_the_session_goes_on(pm, tmp_path):
    keys = {2: pygame.K_F9, 4: pygame.K_F5, 6: pygame.K_F9}
    session, log = run(pm, keys, tmp_path, steps=8)
    assert log[2]["event"].startswith("no quick-save yet")
    (tmp_path / QUICKSAVE).write_bytes(b"garbage")
    session2, log2 = run(pm, {2: pygame.K_F9}, tmp_path, steps=4)
    assert log2[2]["event"].startswith("load failed: ") and QUICKSAVE in log2[2]["event"]
    assert "truncated or corrupt" in log2[2]["event"] and session2.summary["steps"] == 4


def test_rewind_setting_is_checked(pm, tmp_path):
    with pytest.raises(SimcoreError, match="rewind"):
        run(pm, {}, tmp_path, steps=1, rewind=0)
