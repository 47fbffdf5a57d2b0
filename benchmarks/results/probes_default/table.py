"""Summarise the shipped model's probe reports in this directory as a markdown table
(the one in docs/probes.md):  python benchmarks/results/probes_default/table.py"""
from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def num(v, nd=3):
    if v is None or v == "nan" or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v in ("inf", "-inf"):
        return v
    return f"{v:.{nd}g}"


def ci(c):
    return f" [{num(c[0])}, {num(c[1])}]" if c else ""


def main(where: Path = HERE) -> None:
    reports = sorted(where.glob("*/report.json"))
    rows = ["| target | scene | measured [95% CI] | verdict |", "|---|---|---|---|"]
    extra = ["| scene | split | PSNR mean [CI] | P1 vel err (floor) | P2 g err | P3 momentum err (floor) | "
             "P4 e err (floor) | P5 share | P8 H* [CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for path in reports:
        r = json.loads(path.read_text())
        for t in r.get("probe_targets", []):
            scene = t["scene"].split("/")[-1]
            if t["passed"] is None:
                verdict = "not measured: " + t.get("note", "")
            elif t["passed"]:
                verdict = "met"
            else:
                verdict = f"missed by {num(t['miss'])} ({num(t['factor'])}x)"
            rows.append(f"| {t['description']} | {scene} | {num(t['measured'])}{ci(t['ci'])} | {verdict} |")
        splits = [("id", r["per_scene"])] + list(r["per_split"].items())
        for sp, by in splits:
            for scene, s in by.items():
                p = s["probes"]

                def pm(k):
                    if k not in p or not p[k]["model"]["n"]:
                        return "–"
                    return f"{num(p[k]['model']['value'])} ({num(p[k]['floor']['value'])})"
                p2 = p["p2"]  # relative error under gravity, px/s² without
                g = p2["model"]["value"] if p2["model"]["n"] else p2["more"]["g_err"]["model"]["value"]
                g = num(g) + ("" if p2["model"]["n"] else " px/s²")
                extra.append(f"| {scene.split('/')[-1]} | {sp} | {num(s['psnr_mean_ci']['value'])}"
                             f"{ci(s['psnr_mean_ci']['ci'])} | {pm('p1')} | {g} | {pm('p3')} | {pm('p4')} | "
                             f"{num(p['p5']['share']['value'])} | {num(p['p8']['h_star']['value'])}"
                             f"{ci(p['p8']['h_star']['ci'])} |")
    text = "\n".join(rows) + "\n\n" + "\n".join(extra) + "\n"
    (where / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
