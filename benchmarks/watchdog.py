"""Drift watchdog evaluation: long rollouts of a world model with and without it.

    python benchmarks/watchdog.py [--model default] [--steps 1200] [--seeds 2]
    python benchmarks/watchdog.py --quick --model /tmp/tiny --out /tmp/w.json   # smoke run

For each scene, held-out seed and condition, a ``model`` World and a ``sim`` World
are reset with the same seed and stepped in lockstep with the scene's demo policy
(reading the simulator) for ``--steps`` steps:

  off            no watchdog
  reanchor       the watchdog with the simulator as its reference (lockstep): on drift
                 it re-encodes the simulator's frame into the context
  context_noise  the watchdog without a reference (it sees only the live probes and the
                 latent statistics): on drift it raises the context noise

The same seed gives every condition the same start and the same actions up to the
first event. Afterwards the frames are probed offline against the simulator's
object tables (``simcore.plugins.probes``): P8 drift — H* = first dreamed step whose
median position error exceeds one radius, the fraction of dreamed steps over one
radius — and P5 permanence violations (vanish/appear/teleport/resize events not also
shown by the ground-truth floor), plus the mean PSNR against the simulator.

Writes benchmarks/results/watchdog.json (--out) with the machine described, after
every rollout (a cut-off run keeps what it measured).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from simcore.plugins import probes, watchdog

import simcore
from simcore.evaluate import frame_psnr
from simcore.jsonable import jsonable
from simcore.machine import describe as describe_machine

CONDITIONS = ("off", "reanchor", "context_noise")
SCENES = ("simcore/BouncingBalls-v0", "simcore/Pong-v0")
FIRST_SEED = 1_000_000  # held out: training data uses seeds < 200000


def rollout(scene: str, model: Any, seed: int, steps: int, condition: str, pm, settings: dict) -> dict[str, Any]:
    """One lockstep rollout; returns frames, truth tables and the watchdog's log."""
    mw = simcore.make(scene, backend="model", model=model, plugin_manager=pm)
    sw = simcore.make(scene, plugin_manager=pm)
    dog = None
    try:
        obs_s, info_s = sw.reset(seed=seed)
        obs_m, _ = mw.reset(seed=seed)
        if condition == "reanchor":
            dog = watchdog.attach(mw, sw, **settings)
        elif condition == "context_noise":
            dog = watchdog.attach(mw, None, **settings)
        policy = sw.scene.demo_policy(seed)
        frames, sims, tables, dreamed = [obs_m], [obs_s], [info_s["objects"]], [False]
        t0 = time.perf_counter()
        for _ in range(steps):
            action = policy(obs_s, info_s)
            obs_m, *_ = mw.step(action)
            obs_s, _, _, _, info_s = sw.step(action)  # the sim keeps going past an episode's end
            frames.append(obs_m)
            sims.append(obs_s)
            tables.append(info_s["objects"])
            dreamed.append(mw.dreaming)
        wall = time.perf_counter() - t0
        return {"frames": np.stack(frames), "sims": np.stack(sims), "tables": tables, "dreamed": np.array(dreamed),
                "events": list(dog.events) if dog else [], "checked": dog.checked if dog else 0,
                "options": dict(sw.options), "fps": float(sw.metadata["render_fps"]), "wall_s": wall,
                "frame_size": tuple(sw.frame_size)}
    finally:
        if dog is not None:
            watchdog.detach(mw)
        mw.close()
        sw.close()


def score(run: dict[str, Any], scene: str) -> dict[str, Any]:
    """P8 and P5 of one rollout against its ground truth (offline probes), PSNR."""
    truth = probes.truth_from_tables(run["tables"])
    params = probes.scene_params(scene, run["options"], run["frame_size"], run["fps"])
    floor_track = probes.perceive(probes.render_truth(truth, params), truth, params)
    track = probes.perceive(run["frames"], truth, params)
    p8 = probes.drift(track, truth)
    p5 = probes.permanence(track, floor_track, truth.equivalent_radius[0])
    first = int(np.argmax(run["dreamed"]))  # index of the first dreamed frame
    med = np.asarray(p8["median_err"], float)[first:]
    over = np.flatnonzero(med > 1.0)
    psnr = frame_psnr(run["frames"][first:], run["sims"][first:])
    return {
        "h_star": int(over[0]) + 1 if len(over) else len(med),  # dreamed steps, 1 = first dreamed frame
        "horizon": len(med),
        "frac_steps_over_1_radius": float(np.mean(med > 1.0)),
        "median_err_radii_p50": float(np.nanmedian(med)) if np.isfinite(np.nanmedian(med)) else "inf",
        "p5_violations": int(sum(p5["events"].values())),
        "p5_events": p5["events"],
        "psnr_mean_db": float(np.mean(np.minimum(psnr, 100.0))),
        "events": len(run["events"]),
        "reanchors": sum(e["action"] == "reanchor" for e in run["events"]),
        "context_noise": sum(e["action"] == "context_noise" for e in run["events"]),
        "first_events": run["events"][:5],
        "wall_s": run["wall_s"],
    }


def interval(values: list[float]) -> dict[str, Any]:
    """Mean, and a 95 % percentile-bootstrap interval of it when there are >= 3 values."""
    v = np.asarray(values, float)
    out: dict[str, Any] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": len(v)}
    if len(v) >= 3:
        rng = np.random.default_rng(0)
        boots = rng.choice(v, size=(2000, len(v))).mean(1)
        out["ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes", default=",".join(SCENES))
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--seeds", default="2,1", help="held-out seeds per scene: one number, or one per scene "
                    "(comma-separated, in --scenes order)")
    ap.add_argument("--first-seed", type=int, default=FIRST_SEED)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 steps, one seed")
    ap.add_argument("--resume", action="store_true", help="keep the rollouts already in --out (same model and "
                    "steps) and run only the missing ones")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "watchdog.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 40, "1"
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    seeds = [int(n) for n in str(args.seeds).split(",")]
    if len(seeds) == 1:
        seeds = seeds * len(scenes)
    if len(seeds) != len(scenes) or min(seeds) < 1:
        ap.error(f"--seeds: give one positive number, or one per scene ({len(scenes)}), got {args.seeds!r}")
    torch.set_num_threads(max(1, args.threads))
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    bad = sorted(set(conditions) - set(CONDITIONS))
    if bad:
        ap.error(f"unknown condition(s) {', '.join(bad)}; known: {', '.join(CONDITIONS)}")
    pm = simcore.create_plugin_manager(autoload=False)
    settings: dict[str, Any] = {}  # the watchdog's defaults
    report: dict[str, Any] = {
        "benchmark": "watchdog",
        "command": shlex.join(["python", "benchmarks/watchdog.py"] + (sys.argv[1:] if argv is None else argv)),
        "machine": {**describe_machine("cpu"), "loadavg_start": list(os.getloadavg())},
        "model": args.model, "steps": args.steps, "seeds_per_scene": dict(zip(scenes, seeds)), "first_seed": args.first_seed,
        "watchdog_settings": watchdog.WatchdogSettings().__dict__,
        "definitions": {
            "h_star": "first dreamed step (1 = first) whose median position error over objects exceeds one "
                      "radius (P8); the horizon if none",
            "p5_violations": "P5 vanish/appear/teleport/resize events in the model's frames not also shown "
                             "(within one step) by the same probe on ground-truth frames",
        },
        "runs": [], "summary": {},
    }
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("model") == args.model and old.get("steps") == args.steps:
            report["runs"] = old["runs"]
            report["resumed_from"] = {"command": old.get("command"), "machine": old.get("machine"),
                                      "rollouts": len(old["runs"])}
    done = {(r["scene"], r["seed"], r["condition"]) for r in report["runs"]}
    for scene, n_seeds in zip(scenes, seeds):
        for i in range(n_seeds):
            seed = args.first_seed + i
            for cond in conditions:
                if (scene, seed, cond) in done:
                    continue
                run = rollout(scene, args.model, seed, args.steps, cond, pm, settings)
                res = {"scene": scene, "seed": seed, "condition": cond, **score(run, scene)}
                report["runs"].append(res)
                print(f"{scene} seed {seed} {cond:<13} H*={res['h_star']:>4}/{res['horizon']} "
                      f"over1r={res['frac_steps_over_1_radius']:.2f} P5={res['p5_violations']:>3} "
                      f"PSNR={res['psnr_mean_db']:.1f} events={res['events']} ({res['wall_s']:.0f}s)", flush=True)
                summarize(report)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(jsonable(report), indent=1))
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    summarize(report)
    args.out.write_text(json.dumps(jsonable(report), indent=1))
    print(f"wrote {args.out}")
    return 0


def summarize(report: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    for r in report["runs"]:
        out.setdefault(r["scene"], {}).setdefault(r["condition"], []).append(r)
    report["summary"] = {
        scene: {cond: {"rollouts": len(rs),
                       "h_star": interval([r["h_star"] for r in rs]),
                       "frac_steps_over_1_radius": interval([r["frac_steps_over_1_radius"] for r in rs]),
                       "p5_violations": interval([r["p5_violations"] for r in rs]),
                       "psnr_mean_db": interval([r["psnr_mean_db"] for r in rs]),
                       "events": interval([r["events"] for r in rs])}
                for cond, rs in conds.items()}
        for scene, conds in out.items()}


if __name__ == "__main__":
    sys.exit(main())
