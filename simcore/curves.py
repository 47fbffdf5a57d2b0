"""Learning curves of a training run: ``curves.jsonl`` (one held-out evaluation per
row, written by ``simcore train``) drawn as ``curves.png`` against CPU-minutes.

Why per CPU-minute: on a 2-core machine the question is not whether a recipe learns
eventually but what each minute buys; plotting every recipe on the same axis makes
runs with different batch sizes, windows and widths comparable. The teacher-forced
one-step PSNR is drawn next to the copy-the-last-frame baseline: a model below that
line does less than copying.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simcore.plots import figure, save


def read_curves(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a curves.jsonl (a partly written last line is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _series(rows: list[dict], scene: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = (r.get("scenes") or {}).get(scene, {}).get(key)
        if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["cpu_min"])
            ys.append(v)
    return xs, ys


def plot_curves(src: str | Path, dst: str | Path) -> Path | None:
    """Draw ``src`` (curves.jsonl) into ``dst`` (PNG): per scene, teacher-forced
    one-step PSNR vs copying, rollout PSNR @1/@8/@16, and P7 direction accuracy and
    ΔPSNR where measured, all against training CPU-minutes. None when no rows."""
    rows = read_curves(src)
    if not rows:
        return None
    scenes = sorted({s for r in rows for s in (r.get("scenes") or {})})
    has_p7 = any(_series(rows, s, "p7_accuracy")[0] for s in scenes)
    cols = 3 if has_p7 else 2
    fig, axes = figure(4.2 * cols, 3.2 * max(1, len(scenes)), rows=max(1, len(scenes)), cols=cols)
    for i, sid in enumerate(scenes):
        name = sid.split("/")[-1]
        ax = axes[i * cols]
        for key, style in (("tf1_psnr", "-o"), ("copy_psnr", "--"), ("ae_psnr", ":")):
            xs, ys = _series(rows, sid, key)
            if xs:
                ax.plot(xs, ys, style, ms=3, label={"tf1_psnr": "one step (teacher-forced)",
                                                    "copy_psnr": "copy last frame",
                                                    "ae_psnr": "autoencoder bound"}[key])
        ax.set_title(f"{name}: one-step PSNR", fontsize=9)
        ax.set_ylabel("dB")
        ax.legend(fontsize=7)
        ax = axes[i * cols + 1]
        for h in (1, 8, 16):
            xs, ys = _series(rows, sid, f"rollout_psnr@{h}")
            if xs:
                ax.plot(xs, ys, "-o", ms=3, label=f"@{h}")
        ax.set_title(f"{name}: rollout PSNR", fontsize=9)
        ax.legend(fontsize=7)
        if has_p7:
            ax = axes[i * cols + 2]
            xs, ys = _series(rows, sid, "p7_accuracy")
            if xs:
                ax.plot(xs, ys, "-o", ms=3, label="P7 direction accuracy")
                ax.axhline(1 / 3, color="grey", lw=0.8, ls="--", label="chance")
                ax.set_ylim(0, 1)
                xs, ys = _series(rows, sid, "p7_delta_psnr")
                tw = ax.twinx()
                tw.plot(xs, ys, "-s", ms=3, color="tab:red", label="ΔPSNR true vs shuffled (dB)")
                tw.set_ylabel("ΔPSNR dB", fontsize=7)
                ax.legend(fontsize=7, loc="upper left")
            ax.set_title(f"{name}: control (P7)", fontsize=9)
        for ax in axes[i * cols:(i + 1) * cols]:
            ax.set_xlabel("training CPU-minutes")
            ax.grid(alpha=0.3)
    return save(fig, dst, title=f"learning curves ({Path(src).parent.name})")
