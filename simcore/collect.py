"""``simcore collect``: record many episodes of a scene to msgpack shards, in parallel.

Episodes are numbered 0..N-1; episode ``i`` uses seed ``seed + i`` for both the
world and its policy, and shard ``k`` holds episodes ``k*shard_size ...``. So the
files do not depend on how many workers wrote them.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simcore.agents import load_policy
from simcore.capture import EpisodeRecorder
from simcore.errors import SimcoreError
from simcore.recording import RecordingWriter
from simcore.world import Transition

POLICIES = ("demo", "random", "noop")


@dataclass
class CollectJob:
    scene_id: str
    steps: int
    out_dir: str
    seed: int = 0
    policy: str = "demo"
    frame_size: tuple[int, int] = (64, 64)
    options: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()


def _make_policy(job: CollectJob, world, seed: int):
    if job.policy == "demo":
        return world.scene.demo_policy(seed)
    if job.policy == "random":
        world.action_space.seed(seed)
        return lambda obs, info: world.action_space.sample()
    if job.policy == "noop":
        return lambda obs, info: world.scene.noop_action
    return load_policy(job.policy)


def shard_path(job: CollectJob, first: int) -> Path:
    return Path(job.out_dir) / f"{job.scene_id.replace('/', '_')}-{first:06d}.msgpack"


def write_shard(job: CollectJob, first: int, count: int) -> tuple[str, int]:
    """Record episodes ``first .. first+count-1`` into one shard; returns (path, frames)."""
    import simcore

    pm = simcore.create_plugin_manager(plugins=job.plugins) if job.plugins else None
    world = simcore.make(job.scene_id, frame_size=job.frame_size, max_episode_steps=job.steps,
                         plugin_manager=pm, **job.options)
    path = shard_path(job, first)
    frames = 0
    with RecordingWriter(path, shard=True) as writer:
        recorder = EpisodeRecorder(writer, world)
        for i in range(first, first + count):
            seed = job.seed + i
            policy = _make_policy(job, world, seed)
            obs, info = world.reset(seed=seed)
            recorder.begin(seed, episode=i)
            recorder.add(Transition(0, obs, None, 0.0, False, False, info))
            for _ in range(job.steps):
                action = policy(obs, info)
                obs, reward, terminated, truncated, info = world.step(action)
                recorder.add(Transition(world.t, obs, action, reward, terminated, truncated, info))
                if terminated or truncated:
                    break
            recorder.end()
            frames += world.t + 1
    world.close()
    return str(path), frames


def collect(
    scene_id: str,
    *,
    episodes: int,
    steps: int,
    out_dir: str | os.PathLike,
    workers: int = 1,
    seed: int = 0,
    policy: str = "demo",
    frame_size=(64, 64),
    options: dict[str, Any] | None = None,
    shard_size: int = 16,
    plugins: tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Record ``episodes`` episodes of up to ``steps`` steps each into ``out_dir``.

    Returns a summary: files, episodes, frames, seconds, frames_per_s.
    """
    import simcore

    if episodes < 1 or steps < 1 or workers < 1 or shard_size < 1:
        raise SimcoreError("episodes, steps, workers and shard_size must all be at least 1")
    if policy not in POLICIES and ":" not in policy:
        raise SimcoreError(f"policy must be one of {', '.join(POLICIES)} or module:function, got {policy!r}")
    job = CollectJob(scene_id, steps, os.fspath(out_dir), seed, policy, tuple(frame_size), dict(options or {}),
                     tuple(plugins))
    # validate everything here, where the error is readable, before starting workers
    pm = simcore.create_plugin_manager(plugins=plugins) if plugins else None
    simcore.make(scene_id, frame_size=frame_size, plugin_manager=pm, **job.options).reset(seed=seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for first in range(0, episodes, shard_size):
        if shard_path(job, first).exists():
            raise SimcoreError(f"{shard_path(job, first)} already exists; choose another --out or remove it")

    tasks = [(first, min(shard_size, episodes - first)) for first in range(0, episodes, shard_size)]
    from tqdm import tqdm

    bar = tqdm(total=episodes, unit="ep", desc=f"collect {scene_id}", disable=not progress)
    files, frames = [], 0
    start = time.perf_counter()
    if workers == 1:
        for first, count in tasks:
            path, n = write_shard(job, first, count)
            files.append(path)
            frames += n
            bar.update(count)
    else:
        ctx = multiprocessing.get_context("spawn")  # no inherited state (torch threads, windows)
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(write_shard, job, first, count): count for first, count in tasks}
            for fut in cf.as_completed(futures):
                path, n = fut.result()
                files.append(path)
                frames += n
                bar.update(futures[fut])
    bar.close()
    seconds = time.perf_counter() - start
    return {"files": sorted(files), "episodes": episodes, "frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds if seconds > 0 else float("inf")}
