"""``simcore replay``: play a recording back in a window, or write it as a video."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simcore.errors import RecordingError
from simcore.recording import read_episodes


def replay(path, *, episode: int | None = None, fps: float | None = None, headless: bool = False,
           out=None, scale: int = 8) -> dict[str, Any]:
    """Show every step of the recording at ``path`` (HUD: episode, t, action, reward).

    Headless (or without a display) the window is drawn offscreen and captured into
    ``out`` (default: the recording's name with ``.gif``). Returns a summary.
    """
    import warnings

    from simcore.plugins.display import Window, auto_headless
    from simcore.recording import RecordingTruncatedWarning
    from simcore.video import VideoWriter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordingTruncatedWarning)
        episodes = read_episodes(path)
    truncated = any(issubclass(w.category, RecordingTruncatedWarning) for w in caught)
    if not episodes:
        raise RecordingError(f"{path}: the recording holds no episode")
    if episode is not None:
        if not 0 <= episode < len(episodes):
            raise RecordingError(f"{path}: episode {episode} does not exist (the file holds {len(episodes)})")
        episodes = [episodes[episode]]
    rate = float(fps or episodes[0].header.get("fps") or 20)
    headless = headless or auto_headless()
    name = os.fspath(path)
    window = Window(title=f"simcore replay — {Path(name).name}", scale=scale, fps=rate, headless=headless)
    writer = None
    if headless:
        out = Path(out) if out else Path(name.removesuffix(".tmp")).with_suffix(".gif")
        writer = VideoWriter(out, fps=rate)
    shown, quit_ = 0, False
    try:
        for ep_index, ep in enumerate(episodes):
            scene = ep.header.get("scene", "?")
            for step in ep.steps:
                hud = {"scene": scene, "episode": ep_index, "t": step["t"], "action": step.get("action"),
                       "reward": step.get("reward", 0.0)}
                window.show({"recording": step["frame"]}, hud=hud)
                shown += 1
                if writer is not None:
                    writer.append(window.capture())
                else:
                    if "quit" in window.events():
                        quit_ = True
                        break
                    window.tick()
            if quit_:
                break
    finally:
        if writer is not None:
            writer.close()
        window.close()
    return {"frames": shown, "episodes": len(episodes), "video": str(out) if writer else None,
            "truncated": truncated}
