"""Training data from recordings: frames, actions, scene indices and conditioning
vectors of every episode in a set of msgpack shards, held in memory as tensors."""
from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass
class EpisodeData:
    frames: torch.Tensor  # (T, H, W, 3) uint8
    actions: torch.Tensor  # (T,) long; 0 = none (first frame), a + 1 = action a
    scene: int  # index into Dataset.scenes
    cond: torch.Tensor  # (n,) float32 scene_params


class Dataset:
    """All episodes of some recordings, with the scene list and action count they imply."""

    def __init__(self, paths, scenes: list[str] | None = None):
        self.files = find_shards(paths)
        raw = [ep for f in self.files for ep in read_episodes(f)]
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
        for ep in raw:
            sid = ep.header["scene"]
            if sid not in self.scenes:
                raise RecordingError(f"recording of {sid!r} is not among the model's scenes {self.scenes}")
            space = ep.header.get("action_space") or {}
            self.num_actions = max(self.num_actions, int(space.get("n", 1)))
            acts = [0] + [int(a) + 1 for a in ep.actions[1:]]
            self.episodes.append(EpisodeData(
                frames=torch.from_numpy(ep.frames),
                actions=torch.tensor(acts, dtype=torch.long),
                scene=self.scenes.index(sid),
                cond=torch.from_numpy(scene_params(ep.header.get("options") or {})),
            ))
            self.options.setdefault(sid, []).append(ep.header.get("options") or {})
        self.lengths = np.array([len(e.frames) for e in self.episodes])

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def cond_dims(self) -> dict[str, int]:
        return {COND_NAME: int(self.episodes[0].cond.numel())}

    def random_frames(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """(n, H, W, 3) uint8 frames drawn uniformly over all frames."""
        idx = rng.integers(self.num_frames, size=n)
        starts = np.concatenate([[0], np.cumsum(self.lengths)])
        ep = np.searchsorted(starts, idx, side="right") - 1
        return torch.stack([self.episodes[e].frames[i - starts[e]] for e, i in zip(ep, idx)])

    def clip_index(self, length: int, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """n (episode, start) pairs of clips of ``length`` frames (episodes long enough)."""
        ok = np.nonzero(self.lengths >= length)[0]
        if len(ok) == 0:
            raise RecordingError(f"no episode has {length} frames; record longer episodes (--steps)")
        eps = rng.choice(ok, size=n)
        return [(int(e), int(rng.integers(self.lengths[e] - length + 1))) for e in eps]
