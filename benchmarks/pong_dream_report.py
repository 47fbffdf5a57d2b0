"""The dreamed Pong figures a world model is held to, on held-out seeds, with 95 %
bootstrap intervals over rollouts:

* P7 control (``simcore.plugins.probes.control``): direction accuracy of the dreamed
  paddle against the commanded action, and ΔPSNR true vs shuffled actions;
* ball visibility: the share of dreamed frames (``--horizon`` steps per rollout,
  random actions held 3-6 steps) in which perception finds the ball, counted where the
  simulator twin's ball is on screen;
* PSNR of dreamed vs simulated frames at steps 1, 8, 16 and the horizon.

    python benchmarks/pong_dream_report.py --model default --rollouts 16 --horizon 64 \\
        --out benchmarks/results/pong_dream_default.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import simcore
from simcore import bootstrap
from simcore.dream import get_model
from simcore.evaluate import frame_psnr
from simcore.machine import describe
from simcore.perception import detect
from simcore.plugins.probes import control, held_actions

SCENE = "simcore/Pong-v0"


def rollout(model, seed: int, horizon: int) -> dict:
    """One lockstep rollout: per dreamed step, ball seen in the model frame / the sim frame, PSNR."""
    mw = simcore.make(SCENE, backend="model", model=model)
    sw = simcore.make(SCENE)
    try:
        mw.reset(seed=seed)
        sw.reset(seed=seed)
        cols = [sw.scene.colors["ball"], sw.scene.colors["player"], sw.scene.colors["opponent"]]
        bg = sw.scene.background
        actions = held_actions(np.random.default_rng(seed), horizon + 8)
        seen_m, seen_s, psnr = [], [], []
        k = 0
        while len(psnr) < horizon:
            a = int(actions[k])
            k += 1
            om, *_ = mw.step(a)
            os_, _, term, trunc, _ = sw.step(a)
            if term or trunc:
                break
            if not mw.dreaming:
                continue
            seen_m.append(bool(detect(om, cols, bg).visible[0]))
            seen_s.append(bool(detect(os_, cols, bg).visible[0]))
            psnr.append(float(np.minimum(frame_psnr(om[None], os_[None])[0], 100.0)))
        return {"seen_model": seen_m, "seen_sim": seen_s, "psnr": psnr}
    finally:
        mw.close()
        sw.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = get_model(args.model)
    rows = [rollout(m, args.seed + i, args.horizon) for i in range(args.rollouts)]
    visible = []
    for r in rows:
        both = [vm for vm, vs in zip(r["seen_model"], r["seen_sim"]) if vs]
        visible.append(float(np.mean(both)) if both else None)
    psnr_at = {}
    for h in sorted({1, 8, 16, args.horizon}):
        psnr_at[str(h)] = bootstrap.summary([r["psnr"][h - 1] if len(r["psnr"]) >= h else None for r in rows])
    p7 = control(m, scene=SCENE, rollouts=args.rollouts, horizon=16, seed=args.seed)
    acc = [r["accuracy"] for r in p7["per_rollout"]]
    dps = [r["delta_psnr"] for r in p7["per_rollout"]]
    rep = {
        "command": " ".join(["python", "benchmarks/pong_dream_report.py"] + (argv if argv is not None else sys.argv[1:])),
        "model": str(args.model), "machine": describe("cpu"), "seed": args.seed, "rollouts": args.rollouts,
        "horizon": args.horizon, "denoise_steps": m.cfg.sample_steps, "guidance": m.cfg.guidance,
        "ball_visible": bootstrap.summary(visible),
        "psnr_at": psnr_at,
        "p7_direction_accuracy": {**bootstrap.summary(acc), "pooled": p7["accuracy"], "per_action": p7["per_action"]},
        "p7_delta_psnr": {**bootstrap.summary(dps), "pooled": p7["delta_psnr"]},
        "notes": "ball visible: dreamed frames where perception finds the ball, among those where the simulator's "
                 "ball is on screen, mean over rollouts; intervals: 95 % bootstrap over rollouts",
    }
    fmt = lambda s: f"{s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"  # noqa: E731
    print(f"ball visible {fmt(rep['ball_visible'])}; P7 {fmt(rep['p7_direction_accuracy'])}; "
          f"dPSNR {fmt(rep['p7_delta_psnr'])} dB; PSNR@16 {fmt(psnr_at['16'])} dB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rep, indent=1, default=float) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
