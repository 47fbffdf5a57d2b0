"""What saving, loading, snapshotting and rewinding cost with the shipped world model.

A Pong session dreamed by ``simcore/models/default`` with its simulator twin runs
STEPS steps; then we time one model step, one rewind-ring snapshot (what the session
adds per step), ``session.save``, ``load_session`` in this process (model already
cached) and ``rewind(30)`` (from step STEPS+2) with snapshots every step and every 5
steps (then up to 4 steps are re-simulated), and report the
file size and the ring's bytes per snapshot. Writes
benchmarks/results/save_rewind.json with the machine described.

    python benchmarks/save_rewind.py [--steps 60] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import simcore
from simcore.loop import Session
from simcore.machine import describe as describe_machine


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def session(steps: int, every: int) -> Session:
    world = simcore.make("simcore/Pong-v0", "model")
    twin = simcore.make("simcore/Pong-v0")
    s = Session(world, compare=twin, policy=world.scene.demo_policy(0), seed=0, realtime=False, max_steps=steps,
                rewind_every=every)
    s.run()
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "save_rewind.json"))
    args = ap.parse_args()

    s = session(args.steps, 1)
    world = s.world
    step_ms = timed(lambda: world.step(0), args.repeats)
    snapshot_ms = timed(lambda: s._record(force=True), args.repeats)
    entry_bytes = s._ring[-1].nbytes
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pong.simsave"
        save_ms = timed(lambda: s.save(path), args.repeats)
        size = path.stat().st_size
        load_ms = timed(lambda: simcore.load_session(path), args.repeats)

    rewind = {}
    for every in (1, 5):
        ms = []
        for _ in range(args.repeats):
            r = session(args.steps + 2, every)  # the target (step steps-28) falls between keyframes of 5
            t0 = time.perf_counter()
            assert r.rewind(30) == 30
            ms.append((time.perf_counter() - t0) * 1000)
        rewind[f"every_{every}"] = statistics.median(ms)

    result = {
        "benchmark": "save_rewind",
        "command": "python benchmarks/save_rewind.py" + (f" --steps {args.steps}" if args.steps != 60 else ""),
        "setup": f"simcore/Pong-v0, backend model (simcore/models/default) + sim twin, {args.steps} steps, "
                 f"median of {args.repeats}",
        "model_step_ms": round(step_ms, 2),
        "ring_snapshot_ms": round(snapshot_ms, 2),
        "ring_bytes_per_snapshot": entry_bytes,
        "snapshots_in_default_256MiB": (256 * 2**20) // entry_bytes,
        "save_ms": round(save_ms, 2),
        "file_bytes": size,
        "load_ms_model_cached": round(load_ms, 2),
        "kernels": __import__("simcore.kernels", fromlist=["describe"]).describe(),
        "rewind_30_ms": {k: round(v, 2) for k, v in rewind.items()},
        "machine": describe_machine("cpu"),
        "torch_threads": torch.get_num_threads(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
