"""``simcore collect``: record many episodes of a scene to msgpack shards, in parallel.

Episodes are numbered 0..N-1; episode ``i`` uses seed ``seed + i`` for both the
world and its policy, and shard ``k`` holds episodes ``k*shard_size ...``. So the
files do not depend on how many workers wrote them, nor on what kind of worker:
local processes (``workers=K``) or Ray actors on a cluster (``ray=ADDRESS``, see
:func:`_collect_ray`). A shard is the unit of work, and the unit that is redone
when a worker dies before finishing it.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from simcore.agents import HeldRandomPolicy, load_policy
from simcore.capture import EpisodeRecorder
from simcore.errors import SimcoreError
from simcore.recording import RecordingWriter
from simcore.world import Transition

POLICIES = ("demo", "random", "noop", "sticky")


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
    if job.policy == "sticky":
        return HeldRandomPolicy(world.action_space, seed=seed, hold=(3, 8))
    if job.policy == "noop":
        return lambda obs, info: world.scene.noop_action
    return load_policy(job.policy)


def shard_path(job: CollectJob, first: int) -> Path:
    return Path(job.out_dir) / f"{job.scene_id.replace('/', '_')}-{first:06d}.msgpack"


def _make_world(job: CollectJob):
    import simcore

    pm = simcore.create_plugin_manager(plugins=job.plugins) if job.plugins else None
    return simcore.make(job.scene_id, frame_size=job.frame_size, max_episode_steps=job.steps,
                        plugin_manager=pm, **job.options)


def _record_shard(job: CollectJob, world, path: Path, first: int, count: int,
                  after_episode: Callable[[int], None] | None = None) -> int:
    """Record episodes ``first .. first+count-1`` of ``world`` into the shard ``path``;
    returns the number of frames. Every episode is reset with its own seed, so the
    result does not depend on what the world did before."""
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
            if after_episode is not None:
                after_episode(i)
    return frames


def write_shard(job: CollectJob, first: int, count: int) -> tuple[str, int]:
    """Record episodes ``first .. first+count-1`` into one shard; returns (path, frames)."""
    world = _make_world(job)
    path = shard_path(job, first)
    frames = _record_shard(job, world, path, first, count)
    world.close()
    return str(path), frames


class ShardActor:
    """One Ray worker: owns a World of the job's scene and records whole shards with it.

    The shard is written to a scratch directory on the actor's own node and its
    bytes are returned, so the driver alone writes ``out_dir`` (no shared file
    system needed across machines, and a dead actor never leaves a half-written
    shard there). ``worker`` is the actor's index; a rebuilt actor gets the same
    index and clears what its dead predecessor left in the scratch directory.

    ``crash_marker`` is a test-only hook (set from ``SIMCORE_TEST_CRASH_ONCE``): the
    first actor that can create that file exits abruptly after the first episode
    of its first shard, so the recovery path is exercised for real.
    """

    def __init__(self, job: CollectJob, worker: int, run_id: str, crash_marker: str | None = None):
        import shutil
        import tempfile

        self.job, self.worker, self.crash_marker = job, worker, crash_marker
        self.scratch = Path(tempfile.gettempdir()) / f"simcore-ray-{run_id}-w{worker}"
        shutil.rmtree(self.scratch, ignore_errors=True)  # a dead predecessor's partial shard
        self.scratch.mkdir(parents=True)
        self.world = _make_world(job)

    def _maybe_crash(self, episode: int) -> None:
        if not self.crash_marker:
            return
        try:
            fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"worker {self.worker} crashed after episode {episode}\n".encode())
        os.close(fd)
        os._exit(17)

    def write(self, first: int, count: int) -> tuple[str, bytes, int]:
        """(shard file name, its bytes, frames) for episodes ``first .. first+count-1``."""
        path = self.scratch / shard_path(self.job, first).name
        frames = _record_shard(self.job, self.world, path, first, count, after_episode=self._maybe_crash)
        data = path.read_bytes()
        path.unlink()
        return path.name, data, frames

    def close(self) -> None:
        import shutil

        self.world.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


RAY_INSTALL_HINT = "pip install 'simcore[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SimcoreError(f"--ray needs the ray package, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def ray_init(**kwargs: Any) -> None:
    """``ray.init`` from a neutral working directory.

    Ray puts the driver's working directory on every worker's ``sys.path``. Started from
    a source checkout (the repository root, where CI and most users run), the workers
    would import the checkout's ``simcore/`` — which lacks ``simcore.plugins`` and
    ``simcore.scenes``, mapped in only at install time — instead of the installed package,
    and every actor would die on import. Connecting from the temp directory avoids that.
    """
    import tempfile

    ray = _import_ray()
    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        ray.init(**kwargs)
    finally:
        os.chdir(here)


def _collect_ray(job: CollectJob, tasks: list[tuple[int, int]], workers: int, address: str, bar,
                 max_restarts: int) -> tuple[list[str], int, int]:
    """Record ``tasks`` (first, count) with ``workers`` Ray actors; returns (files, frames, restarts).

    ``address`` is ``local`` (start a Ray instance on this machine), ``auto`` or a
    cluster address (``ray://host:10001`` or ``host:6379``). If this process is
    already connected to Ray (``ray.init`` was called), that connection is used
    and left open. Each shard goes to the next idle actor; when an actor dies
    (``RayActorError``) it is rebuilt with the same index and its shard is queued
    again, at most ``max_restarts`` times in all.
    """
    import uuid

    ray = _import_ray()
    from ray.exceptions import RayActorError

    started = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray_init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
            else:
                ray_init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SimcoreError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        started = True
    crash_marker = os.environ.get("SIMCORE_TEST_CRASH_ONCE") or None
    run_id = uuid.uuid4().hex[:8]
    remote_cls = ray.remote(num_cpus=1, max_restarts=0)(ShardActor)

    def build(worker: int):
        return remote_cls.options(name=f"simcore-collect-{run_id}-w{worker}").remote(job, worker, run_id,
                                                                                     crash_marker)

    files: list[str] = []
    frames = restarts = 0
    actors: list[Any] = []
    try:
        actors += [build(w) for w in range(workers)]
        queue = list(reversed(tasks))  # pop() from the end: shards go out in order
        running: dict[Any, tuple[int, tuple[int, int]]] = {}  # object ref -> (worker, task)
        idle = list(range(workers))[::-1]
        while queue or running:
            while queue and idle:
                worker, task = idle.pop(), queue.pop()
                running[actors[worker].write.remote(*task)] = (worker, task)
            done, _ = ray.wait(list(running), num_returns=1)
            worker, task = running.pop(done[0])
            try:
                name, data, n = ray.get(done[0])
            except RayActorError as exc:
                restarts += 1
                if restarts > max_restarts:
                    raise SimcoreError(f"Ray worker {worker} died while recording episodes {task[0]}.."
                                       f"{sum(task) - 1} and the restart budget ({max_restarts}) is spent: "
                                       f"{exc}") from None
                ray.kill(actors[worker])
                actors[worker] = build(worker)  # a fresh World; the shard is redone from its first episode
                queue.append(task)
                idle.append(worker)
                continue
            path = Path(job.out_dir) / name
            _write_atomic(path, data)
            files.append(str(path))
            frames += n
            bar.update(task[1])
            idle.append(worker)
        for a in actors:  # best effort: the files are written, a late death changes nothing
            try:
                ray.get(a.close.remote())
            except RayActorError:
                pass
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
    return files, frames, restarts


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
    ray: str | None = None,
    max_restarts: int = 3,
) -> dict[str, Any]:
    """Record ``episodes`` episodes of up to ``steps`` steps each into ``out_dir``.

    ``ray``: run the ``workers`` as Ray actors instead of local processes: ``"local"``
    starts Ray on this machine, anything else is a cluster address (``"auto"``,
    ``"ray://head:10001"``); needs the ``ray`` extra. Dead actors are rebuilt and
    their shard redone, ``max_restarts`` times in all. The shards are the same as
    without Ray.

    Returns a summary: files, episodes, frames, seconds, frames_per_s, restarts.
    """
    import simcore

    if episodes < 1 or steps < 1 or workers < 1 or shard_size < 1:
        raise SimcoreError("episodes, steps, workers and shard_size must all be at least 1")
    if max_restarts < 0:
        raise SimcoreError(f"max_restarts must be 0 or more, got {max_restarts}")
    if ray is not None:
        if not str(ray).strip():
            raise SimcoreError("--ray takes 'local' or a Ray cluster address (e.g. auto, ray://head:10001)")
        _import_ray()  # a missing extra is reported before anything is written
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
    files, frames, restarts = [], 0, 0
    start = time.perf_counter()
    if ray is not None:
        files, frames, restarts = _collect_ray(job, tasks, workers, str(ray).strip(), bar, max_restarts)
    elif workers == 1:
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
            "frames_per_s": frames / seconds if seconds > 0 else float("inf"), "restarts": restarts}
