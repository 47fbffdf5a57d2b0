"""Training data from recordings: frames, actions, scene indices and conditioning
vectors of every episode in a set of msgpack shards, held in memory as tensors.

Conditioning comes in two kinds. ``scene_params`` is one vector per episode (from the
header's options). **Per-step conditions** are one vector per step, computed from
each recorded step by a function registered in :data:`STEP_CONDITIONS` — built in:
``state`` (the engine state, ``simcore.render.state_vector`` of the step's ``state``)
and ``event`` (the world events of the step, ``simcore.events.event_vector`` of
``info["events"]``). A model trained with a per-step condition receives it from the
``simcore_conditioning`` hook at play time under the same name."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from simcore.errors import RecordingError
from simcore.plugins.conditioning import NAME as COND_NAME
from simcore.plugins.conditioning import scene_params
from simcore.recording import read_episodes


def find_shards(paths) -> list[Path]:
    """Files given directly, plus every ``*.msgpack`` under given directories (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob("*.msgpack"))
        elif p.is_file():
            out.append(p)
        else:
            raise RecordingError(f"training data {os.fspath(p)!r} does not exist")
    if not out:
        raise RecordingError(f"no recordings (*.msgpack) found in {', '.join(map(str, paths))}")
    return out


def _state_condition(step: dict, header: dict) -> np.ndarray:
    from simcore.render import state_vector

    return state_vector(step.get("state") or {}, tuple(header["frame_size"]))


def _event_condition(step: dict, header: dict) -> np.ndarray:
    from simcore.events import event_vector

    return event_vector((step.get("info") or {}).get("events") or [])


def _state_size() -> int:
    from simcore.render import STATE_DIM

    return STATE_DIM


def _event_size() -> int:
    from simcore.events import EVENT_DIM

    return EVENT_DIM


#: per-step condition name -> (size (a callable, so the modules load lazily),
#: function (step record, episode header) -> (size,) float32 vector)
STEP_CONDITIONS: dict[str, tuple[Callable[[], int], Callable[[dict, dict], np.ndarray]]] = {
    "state": (_state_size, _state_condition),
    "event": (_event_size, _event_condition),
}


@dataclass
class EpisodeData:
    frames: torch.Tensor  # (T, H, W, 3) uint8
    actions: torch.Tensor  # (T,) long; 0 = none (first frame), a + 1 = action a
    scene: int  # index into Dataset.scenes
    cond: torch.Tensor  # (n,) float32 scene_params
    steps: dict[str, torch.Tensor] = field(default_factory=dict)  # per-step conditions, name -> (T, n) float32
    file: int = 0  # index into Dataset.files of the recording it came from


class Dataset:
    """All episodes of some recordings, with the scene list and action count they imply."""

    def __init__(self, paths, scenes: list[str] | None = None, step_conditions: tuple[str, ...] | list[str] = ()):
        unknown = sorted(set(step_conditions) - set(STEP_CONDITIONS))
        if unknown:
            raise RecordingError(f"unknown per-step condition(s) {unknown}; known: {', '.join(sorted(STEP_CONDITIONS))}")
        self.step_conditions = tuple(step_conditions)
        self.files = find_shards(paths)
        per_file = [read_episodes(f) for f in self.files]
        raw = [ep for eps in per_file for ep in eps]
        origin = [i for i, eps in enumerate(per_file) for _ in eps]  # per episode: index into self.files
        if not raw:
            raise RecordingError("the recordings hold no episode")
        self.scenes = list(scenes) if scenes else sorted({ep.header["scene"] for ep in raw})
        sizes = {tuple(ep.header["frame_size"]) for ep in raw}
        if len(sizes) != 1:
            raise RecordingError(f"recordings mix frame sizes {sorted(sizes)}; train one model per size")
        self.frame_size = sizes.pop()
        self.num_actions = 1
        self.episodes: list[EpisodeData] = []
        self.options: dict[str, list[dict]] = {}
        for file, ep in zip(origin, raw):
            sid = ep.header["scene"]
            if sid not in self.scenes:
                raise RecordingError(f"recording of {sid!r} is not among the model's scenes {self.scenes}")
            space = ep.header.get("action_space") or {}
            self.num_actions = max(self.num_actions, int(space.get("n", 1)))
            acts = [0] + [int(a) + 1 for a in ep.actions[1:]]
            steps = {}
            for name in self.step_conditions:
                size, fn = STEP_CONDITIONS[name]
                if name == "state" and ep.steps and not ep.steps[0].get("state"):
                    raise RecordingError(f"episode of {sid!r} in the recordings carries no per-step 'state' "
                                         "(recorded without object states?); it cannot train a render model")
                vecs = np.stack([np.asarray(fn(st, ep.header), dtype=np.float32).reshape(-1) for st in ep.steps])
                if vecs.shape[1] != size():
                    raise RecordingError(f"per-step condition {name!r} gave {vecs.shape[1]} values, expected {size()}")
                steps[name] = torch.from_numpy(vecs)  # (T, n)
            self.episodes.append(EpisodeData(
                frames=torch.from_numpy(ep.frames),
                actions=torch.tensor(acts, dtype=torch.long),
                scene=self.scenes.index(sid),
                cond=torch.from_numpy(scene_params(ep.header.get("options") or {})),
                steps=steps,
                file=file,
            ))
            self.options.setdefault(sid, []).append(ep.header.get("options") or {})
        self.lengths = np.array([len(e.frames) for e in self.episodes])

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def cond_dims(self) -> dict[str, int]:
        dims = {COND_NAME: int(self.episodes[0].cond.numel())}
        dims.update({name: STEP_CONDITIONS[name][0]() for name in self.step_conditions})
        return dims

    def extra(self, episode: int, start: int, length: int) -> dict[str, torch.Tensor]:
        """Every conditioning vector of frames start..start+length-1 of an episode:
        name -> (length, n) (scene_params repeated, per-step conditions sliced)."""
        ep = self.episodes[episode]
        out = {COND_NAME: ep.cond[None].expand(length, -1)}
        for name, vecs in ep.steps.items():
            out[name] = vecs[start:start + length]
        return out

    def holdout(self, fraction: float) -> np.ndarray:
        """Episode indices kept out of training: the last ``fraction`` of each scene's
        episodes (at least one where a scene has two or more; none for fraction 0)."""
        out: list[int] = []
        if fraction <= 0:
            return np.zeros(0, dtype=np.int64)
        for k in range(len(self.scenes)):
            eps = [i for i, e in enumerate(self.episodes) if e.scene == k]
            n = min(len(eps) - 1, max(1, int(round(fraction * len(eps)))))
            out += eps[len(eps) - n:] if n > 0 else []
        return np.asarray(sorted(out), dtype=np.int64)

    def random_frames(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """(n, H, W, 3) uint8 frames drawn uniformly over all frames."""
        idx = rng.integers(self.num_frames, size=n)
        starts = np.concatenate([[0], np.cumsum(self.lengths)])
        ep = np.searchsorted(starts, idx, side="right") - 1
        return torch.stack([self.episodes[e].frames[i - starts[e]] for e, i in zip(ep, idx)])

    def clip_index(self, length: int, n: int, rng: np.random.Generator,
                   among: np.ndarray | None = None) -> list[tuple[int, int]]:
        """n (episode, start) pairs of clips of ``length`` frames (episodes long enough;
        only episodes in ``among`` when given)."""
        ok = np.nonzero(self.lengths >= length)[0]
        if among is not None:
            ok = np.intersect1d(ok, among)
        if len(ok) == 0:
            raise RecordingError(f"no episode has {length} frames; record longer episodes (--steps)")
        eps = rng.choice(ok, size=n)
        return [(int(e), int(rng.integers(self.lengths[e] - length + 1))) for e in eps]
