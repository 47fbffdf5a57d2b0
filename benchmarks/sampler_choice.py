"""Pick a trained model's sampler: its held-out learning-curve figures (the same clips
and P7 seeds as its training curves) for each number of Euler steps per frame and each
context-noise level, side by side.

    python benchmarks/sampler_choice.py --run RUN --data DATA [DATA ...] \\
        --steps 1 2 4 --ctx-noise 0.02 0.1 --out benchmarks/results/sampler_choice_default.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity_ablations import _trainer_for  # noqa: E402

from simcore.machine import describe  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--ctx-noise", type=float, nargs="+", default=[0.02])
    ap.add_argument("--p7-rollouts", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for noise in args.ctx_noise:
        for n in args.steps:
            with tempfile.TemporaryDirectory() as tmp:
                tr = _trainer_for(args.run, args.data, tmp, eval_steps=n, p7_rollouts=args.p7_rollouts,
                                  model_set={**json.loads((args.run / "model_card.json").read_text())["training"]
                                             ["config"].get("model_set", {}), "ctx_noise": noise})
                point = tr.curve_point()
            rows.append({"steps": n, "ctx_noise": noise, "scenes": point})
            figs = "; ".join(f"{sid.split('/')[-1]} tf1 {f['tf1_psnr']:.1f} @1/8/16 {f['rollout_psnr@1']:.1f}/"
                             f"{f['rollout_psnr@8']:.1f}/{f['rollout_psnr@16']:.1f}"
                             + (f" P7 {f['p7_accuracy']:.2f}" if "p7_accuracy" in f else "")
                             for sid, f in point.items())
            print(f"steps {n} ctx_noise {noise}: {figs}", flush=True)
    rep = {"run": args.run.name, "machine": describe("cpu"), "p7_rollouts": args.p7_rollouts, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rep, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
