"""Collect the world-model recipe ablations into one table.

Each row is one `simcore train` run with the same training budget (``--max-minutes``
on the dynamics stage, evaluation time excluded) on the same recordings and held-out
episodes; only the setting named in the row differs from its parent row. The figures
are the run's last learning-curve point (``curves.jsonl``: teacher-forced one-step
PSNR and the copy-last-frame baseline, rollout PSNR @1/@8/@16 on held-out episodes,
P7 direction accuracy and ΔPSNR on held-out seeds 1,000,000+).

    python benchmarks/fidelity_ablations.py --rows benchmarks/fidelity_ablations_rows.json \\
        --runs RUNS --data-root DATA --final-points --out benchmarks/results/fidelity_ablations.json

The rows file lists, per row: ``name`` (its run directory under --runs), ``data``
(its recordings' folder under --data-root), ``change``
(what differs from ``parent``), ``prediction`` (written before the run) and
``reading`` (why the result differed, written after). The output holds the machine,
every row's figures and the command of each run (from its model card).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simcore.curves import read_curves
from simcore.machine import describe


def row_figures(run: Path) -> dict:
    rows = read_curves(run / "curves.jsonl")
    if not rows:
        raise SystemExit(f"{run}: no curves.jsonl rows (did the run start?)")
    last = rows[-1]
    card = json.loads((run / "model_card.json").read_text()) if (run / "model_card.json").is_file() else {}
    tr = card.get("training", {})
    return {"hardware": tr.get("hardware"), "stage": last["stage"], "steps": last["step"],
            "cpu_min": last["cpu_min"], "loss": last.get("loss"),
            "scenes": last["scenes"], "points": len(rows),
            "commands": [c.replace(str(run.parent) + "/", "RUNS/") for c in tr.get("commands", [])],
            "first_point": rows[0]["scenes"]}


def _trainer_for(run: Path, data, tmp: str, **over):
    """A Trainer holding ``run``'s saved model (its DiT too) on ``data`` (a path or a list
    of paths), for evaluation only."""
    from simcore.train import Trainer, TrainConfig

    card = json.loads((run / "model_card.json").read_text())
    cfg = dict(card["training"]["config"])
    cfg.update(data=[str(d) for d in (data if isinstance(data, (list, tuple)) else [data])], out=tmp, init_from=str(run), init_parts="all", resume=False, progress=False,
               stages=(card["training"]["stages_done"][-1],), **over)
    tr = Trainer(TrainConfig(**cfg), log=lambda *_: None)
    if tr.state["init_from"]["parts"] != ["ae", "dit"]:
        raise SystemExit(f"{run}: its DiT could not be loaded for evaluation")
    tr.encode_all()
    return tr


def sampler_steps(run: Path, data: Path, steps=(1, 2, 4)) -> dict:
    """The run's saved model evaluated with 1, 2 and 4 Euler steps per frame (the same
    held-out clips and P7 seeds): what a few-step sampler costs in fidelity."""
    import tempfile

    out = {}
    for n in steps:
        with tempfile.TemporaryDirectory() as tmp:
            out[str(n)] = _trainer_for(run, data, tmp, eval_steps=n).curve_point()
    return out


def final_point(run: Path, data: Path) -> None:
    """Append the saved model's held-out figures to ``run``/curves.jsonl when its last
    curve point is older than its last training step (runs that ended between points)."""
    import tempfile

    tr_card = json.loads((run / "model_card.json").read_text())["training"]
    rows = read_curves(run / "curves.jsonl")
    stage = tr_card["stages_done"][-1]
    steps = tr_card["steps"][stage]
    if rows and rows[-1]["step"] >= steps:
        return
    with tempfile.TemporaryDirectory() as tmp:
        point = _trainer_for(run, data, tmp).curve_point()
    row = {"stage": stage, "step": steps, "cpu_min": round(tr_card["cpu_minutes"], 3), "wall_min": None,
           "loss": tr_card["final_loss"].get(stage), "scenes": point, "note": "final point evaluated after the run"}
    with open(run / "curves.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fidelity_ablations.json"))
    ap.add_argument("--data-root", type=Path, default=Path("data"), help="folder holding each row's recordings")
    ap.add_argument("--sampler-steps", nargs="*", default=[], metavar="ROW",
                    help="rows whose saved model is also evaluated with 1, 2 and 4 Euler steps per frame")
    ap.add_argument("--p7-check", nargs="*", default=[], metavar="ROW",
                    help="rows whose saved model also gets P7 on 8 more rollouts (seeds 1,000,100+)")
    ap.add_argument("--final-points", action="store_true", help="evaluate the saved model of runs whose curve "
                    "ends before their last step")
    args = ap.parse_args(argv)
    spec = json.loads(args.rows.read_text())
    out = {"what": spec.get("what", ""), "budget": spec.get("budget", ""), "data": spec.get("data", {}),
           "evaluated_on": describe("cpu"), "rows": []}
    for row in spec["rows"]:
        run = args.runs / row["name"]
        if not (run / "curves.jsonl").is_file() or not (run / "model_card.json").is_file():
            print(f"skipping {row['name']}: not run (or not finished)", file=sys.stderr)
            continue
        if args.final_points:
            final_point(run, args.data_root / row["data"])
        rec = {**row, **row_figures(run)}
        if row["name"] in args.p7_check:
            from simcore.plugins.probes import control

            rep = control(str(run), rollouts=8, horizon=16, seed=1_000_100)
            rec["p7_check"] = {"rollouts": 8, "seed": 1_000_100, "accuracy": rep["accuracy"],
                               "per_action": {k: v["accuracy"] for k, v in rep["per_action"].items()},
                               "delta_psnr": rep["delta_psnr"]}
        if row["name"] in args.sampler_steps:
            rec["sampler_steps"] = sampler_steps(run, args.data_root / row["data"])
        out["rows"].append(rec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for r in out["rows"]:
        figs = "; ".join(f"{sid.split('/')[-1]}: tf1 {f['tf1_psnr']:.1f} vs copy {f['copy_psnr']:.1f}, "
                         f"@16 {f.get('rollout_psnr@16', float('nan')):.1f}"
                         + (f", P7 {f['p7_accuracy']:.2f} dPSNR {f['p7_delta_psnr']:.2f}" if 'p7_accuracy' in f else "")
                         for sid, f in r["scenes"].items())
        extra = f"  | P7 on 8 more rollouts {r['p7_check']['accuracy']:.2f}" if "p7_check" in r else ""
        print(f"{r['name']:<22} {r['steps']:>6} steps {r['cpu_min']:>6.1f} CPU-min  {figs}{extra}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
