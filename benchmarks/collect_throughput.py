"""Collection throughput: frames/s written to msgpack shards at 64x64.

    python benchmarks/collect_throughput.py [--workers 2] [--episodes 64] [--steps 200]

Runs `simcore.collect.collect` (the code behind `simcore collect`) for every scene
and writes benchmarks/results/collect_throughput.json with the machine described.
Target (issue 2): >= 3,000 frames/s for the ball scenes on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import simcore
from simcore.collect import collect
from simcore.machine import describe as describe_machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "collect_throughput.json"))
    args = ap.parse_args()

    results = []
    for scene in simcore.list_scenes():
        tmp = tempfile.mkdtemp(prefix="simcore-bench-")
        try:
            t0 = time.perf_counter()
            s = collect(scene, episodes=args.episodes, steps=args.steps, out_dir=tmp, workers=args.workers,
                        progress=False)
            wall = time.perf_counter() - t0
            size = sum(os.path.getsize(f) for f in s["files"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row = {"scene": scene, "frames": s["frames"], "seconds": round(wall, 3),
               "frames_per_s": round(s["frames"] / wall, 1), "bytes_per_frame": round(size / s["frames"], 1)}
        results.append(row)
        print(f"{scene:<28} {row['frames_per_s']:>9.0f} frames/s  ({row['frames']} frames, {wall:.2f} s, "
              f"{row['bytes_per_frame']:.0f} B/frame)")
    report = {
        "benchmark": "collect_throughput",
        "command": f"python benchmarks/collect_throughput.py --workers {args.workers} --episodes {args.episodes} "
                   f"--steps {args.steps}",
        "frame_size": [64, 64],
        "workers": args.workers,
        "machine": describe_machine(),
        "target_frames_per_s_ball_scenes": 3000,
        "results": results,
        "note": "wall time includes starting the worker processes and writing the shards to a temp dir",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
