"""Built-in recorder plugin: records a live session's episodes to msgpack files.

Active for sessions whose ``config["record"]["dir"]`` is set (``simcore play
--record DIR``); the display's C key (``session.toggle_recording()``) starts and
stops it. Each recorded stretch becomes one file ``<scene>-<time>-<n>.msgpack``.
"""
from __future__ import annotations

import time
from pathlib import Path

from simcore.capture import EpisodeRecorder
from simcore.hookspecs import hookimpl
from simcore.recording import RecordingWriter


class _SessionRecorder:
    def __init__(self, session, directory: Path):
        self.session = session
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.count = 0
        self.recorder: EpisodeRecorder | None = None
        self.files: list[str] = []

    def on_transition(self, transition) -> None:
        want = self.session.recording
        if not want:
            self.close()
            return
        if self.recorder is None or self.recorder.t is None:
            self.close()
            slug = self.session.world.scene_id.replace("/", "_")
            path = self.dir / f"{slug}-{self.stamp}-{self.count:03d}.msgpack"
            self.count += 1
            self.recorder = EpisodeRecorder(RecordingWriter(path), self.session.world)
            self.recorder.begin(seed=getattr(self.session, "seed", None))
        self.recorder.add(transition)
        if self.recorder.t is None:  # the episode ended: finish the file
            self.close()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.end(stopped=self.recorder.t is not None)
            self.recorder.writer.close()
            self.files.append(self.recorder.writer.path)
            self.recorder = None


_active: dict[int, _SessionRecorder] = {}  # id(world) -> recorder of the session running it


@hookimpl
def simcore_session_start(session) -> None:
    directory = (session.config.get("record") or {}).get("dir")
    if directory:
        _active[id(session.world)] = _SessionRecorder(session, Path(directory))
        session.recording = True


@hookimpl
def simcore_after_step(world, transition) -> None:
    rec = _active.get(id(world))
    if rec is not None:
        rec.on_transition(transition)


@hookimpl
def simcore_session_finish(session, summary) -> None:
    rec = _active.pop(id(session.world), None)
    if rec is not None:
        rec.close()
        summary["recordings"] = rec.files
