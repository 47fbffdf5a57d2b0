"""Batched ``model`` envs for agents: env-frames/s of dreamed steps at several batch sizes.

    python benchmarks/batched_model_envs.py [--device cpu|cuda] [--batches 1 8 64] [--steps 20]

For each batch size B it times ``--steps`` dreamed steps (after the simulated
opening) of :class:`simcore.batched.BatchedModelEnv` (B envs, one batched rollout
and one batched decode per step) and, for B up to ``--baseline-max``, of B
separate ``simcore.make(..., backend="model")`` worlds stepped one after the other
(what ``simcore.make_vec(..., backend="model")`` does). Frames/s counts env-frames:
B per step. Writes benchmarks/results/batched_model_envs_<device>.json with the
machine described.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import simcore
from simcore.batched import BatchedModelEnv
from simcore.machine import describe as describe_machine


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _row(mode: str, b: int, steps: int, walls: list[float]) -> dict:
    """Best of the repeats (the least disturbed by other jobs) and the median."""
    best, med = min(walls), float(np.median(walls))
    return {"mode": mode, "batch": b, "steps": steps, "repeats": len(walls), "seconds_best": round(best, 3),
            "env_frames_per_s": round(b * steps / best, 1), "env_frames_per_s_median": round(b * steps / med, 1),
            "ms_per_step": round(1000 * best / steps, 2)}


def bench_batched(scene: str, b: int, steps: int, args) -> dict:
    env = BatchedModelEnv(scene, b, model=args.model, device=args.device, denoise_steps=args.denoise_steps)
    rng = np.random.default_rng(0)
    n = env.single_action_space.n
    env.reset(seed=0)
    for _ in range(env.prompt_frames + 1):  # simulated opening + one dreamed warm-up step
        env.step(rng.integers(0, n, size=b))
    walls = []
    for _ in range(args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(rng.integers(0, n, size=b))
        _sync(args.device)
        walls.append(time.perf_counter() - t0)
    env.close()
    return _row("batched", b, steps, walls)


def bench_separate(scene: str, b: int, steps: int, args) -> dict:
    worlds = [simcore.make(scene, backend="model", model=args.model, device=args.device,
                           denoise_steps=args.denoise_steps) for _ in range(b)]
    rng = np.random.default_rng(0)
    n = worlds[0].action_space.n
    for i, w in enumerate(worlds):
        w.reset(seed=i)
        for _ in range(w.dreamer.prompt_frames + 1):
            w.step(int(rng.integers(n)))
    walls = []
    for _ in range(args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            for w in worlds:
                w.step(int(rng.integers(n)))
        _sync(args.device)
        walls.append(time.perf_counter() - t0)
    return _row("separate", b, steps, walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scene", default="simcore/Pong-v0")
    ap.add_argument("--model", default="default")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--steps", type=int, default=20, help="Timed dreamed steps per batch size (per repeat).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed repeats; the best and the median are reported.")
    ap.add_argument("--denoise-steps", type=int, default=4)
    ap.add_argument("--baseline-max", type=int, default=8, help="Largest B timed as B separate worlds too.")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    results = []
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    for b in args.batches:
        for fn in ([bench_batched, bench_separate] if b <= args.baseline_max else [bench_batched]):
            row = fn(args.scene, b, args.steps, args)
            results.append(row)
            print(f"{row['mode']:<9} B={b:<4} {row['env_frames_per_s']:>9.1f} env-frames/s best, "
                  f"{row['env_frames_per_s_median']:>9.1f} median  ({row['ms_per_step']:.1f} ms per step of all "
                  f"B envs)", flush=True)
    card = json.loads((simcore.checkpoint.resolve(args.model).parent / "model_card.json").read_text()) \
        if args.model == "default" else {}
    report = {
        "benchmark": "batched_model_envs",
        "command": "python benchmarks/batched_model_envs.py --device {} --batches {} --steps {} --repeats {} "
                   "--baseline-max {}{}".format(args.device, " ".join(map(str, args.batches)), args.steps,
                                                args.repeats, args.baseline_max,
                                                f" --threads {args.threads}" if args.threads else ""),
        "scene": args.scene,
        "model": {"name": args.model, "size": card.get("training", {}).get("config", {}).get("size")},
        "denoise_steps": args.denoise_steps,
        "machine": describe_machine(args.device),
        # 1-minute load average before/after: other jobs on a shared machine depress CPU figures
        "load_average_1min": {"before": load_before and round(load_before[0], 2),
                              "after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "results": results,
        "speedup_batched_over_separate": {},
        "note": "env-frames/s (best of the repeats; the median too) of dreamed steps (each one denoise of `denoise_steps` DiT calls and a decode), "
                "after the simulated opening; 'separate' = B single model worlds stepped in turn, as make_vec "
                "does. Measured on a machine shared with other jobs: treat CPU figures as indicative.",
    }
    sep = {r["batch"]: r["env_frames_per_s"] for r in results if r["mode"] == "separate"}
    report["speedup_batched_over_separate"] = {str(r["batch"]): round(r["env_frames_per_s"] / sep[r["batch"]], 2)
                                               for r in results if r["mode"] == "batched" and r["batch"] in sep}
    out = Path(args.out or Path(__file__).parent / "results" / f"batched_model_envs_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
