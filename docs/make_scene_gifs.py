"""Regenerate the per-scene GIFs shown in the README: python docs/make_scene_gifs.py"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import simcore
from simcore.video import write_video

OUT = Path(__file__).parent / "media"


def main(frames: int = 60, scale: int = 2) -> None:
    OUT.mkdir(exist_ok=True)
    for sid in simcore.list_scenes():
        world = simcore.make(sid)
        obs, info = world.reset(seed=1)
        policy = world.scene.demo_policy(1)
        clip = [obs]
        for _ in range(frames - 1):
            obs, _, term, trunc, info = world.step(policy(obs, info))
            clip.append(obs)
        clip = [np.kron(f, np.ones((scale, scale, 1), dtype=np.uint8)) for f in clip]
        path = OUT / f"{sid.split('/')[-1].lower()}.gif"
        write_video(path, clip, fps=world.metadata["render_fps"])
        print(path, path.stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
