"""Dreamed frames/s of two or more world models through ``World.step``, side by side in
one process (steps interleaved model by model, so a change in machine load hits every
model alike). Used to check that a retrained model dreams no slower than the one it
replaces.

    python benchmarks/dream_speed_compare.py --model OLD --model NEW [--steps N] [--out JSON]

Each model plays ``simcore/Pong-v0`` at 64x64, batch 1, with its own default denoising
steps (and action guidance, when its config sets one), through the prompt frames and
then ``--warmup`` untimed and ``--steps`` timed dreamed steps with random actions.
Figures: median ms per step and frames/s per model, and each model's frames/s relative
to the first. The machine (CPU model and SIMD level, threads) goes into the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import simcore
from simcore.dream import get_model
from simcore.machine import describe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="model name or path (repeat, first = reference)")
    ap.add_argument("--scene", default="simcore/Pong-v0")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    worlds = []
    for name in args.model:
        w = simcore.make(args.scene, backend="model", model=get_model(name))
        w.reset(seed=1_000_000)
        while not w.dreaming:
            w.step(0)
        for _ in range(args.warmup):
            w.step(int(rng.integers(3)))
        worlds.append(w)
    times: list[list[float]] = [[] for _ in worlds]
    for _ in range(args.steps):
        a = int(rng.integers(3))
        for i, w in enumerate(worlds):
            t0 = time.perf_counter()
            w.step(a)
            times[i].append(time.perf_counter() - t0)
    rows = []
    for name, w, ts in zip(args.model, worlds, times):
        ms = 1000 * float(np.median(ts))
        cfg = w.dreamer.model.cfg
        rows.append({"model": name, "median_ms": round(ms, 2), "frames_per_s": round(1000 / ms, 1),
                     "denoise_steps": w.dreamer.denoise_steps, "guidance": cfg.guidance, "window": cfg.dit.window})
    for r in rows:
        r["relative_to_first"] = round(r["frames_per_s"] / rows[0]["frames_per_s"], 3)
        print(f"{r['model']:<40} {r['frames_per_s']:7.1f} frames/s  ({r['median_ms']:.1f} ms, x{r['relative_to_first']:.2f}"
              f" vs first; {r['denoise_steps']} steps, guidance {r['guidance']}, window {r['window']})")
    rep = {"command": " ".join(["python", "benchmarks/dream_speed_compare.py"] + (argv or sys.argv[1:])),
           "machine": describe("cpu"), "scene": args.scene, "steps": args.steps, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rep, indent=1) + "\n")
        print(f"wrote {args.out}")
    for w in worlds:
        w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
