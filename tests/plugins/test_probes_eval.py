"""Probes inside ``simcore eval``: bootstrap intervals, splits, the report with every
probe (a user's plugin included), plots/GIFs, targets and bad input. Real code paths
on a tiny random model (CPU), few rollouts, short horizons."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import simcore
from simcore import bootstrap, probe_report, splits
from simcore.checkpoint import CheckpointError, save_model
from simcore.cli import app
from simcore.errors import BackendError, SimcoreError, UnknownSceneError
from simcore.evaluate import evaluate
from simcore.model import WorldModel, config_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
BALLS, PONG = "simcore/BouncingBalls-v0", "simcore/Pong-v0"
PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_mean_of_a_known_distribution():
    rng = np.random.default_rng(1)
    n, sigma, trials = 50, 2.0, 300
    hits, widths = 0, []
    for i in range(trials):
        x = rng.normal(3.0, sigma, n)
        lo, hi = bootstrap.bootstrap_ci(x, seed=i)
        hits += lo <= 3.0 <= hi
        widths.append(hi - lo)
    assert 0.90 <= hits / trials <= 0.985  # nominal 95 % (percentile bootstrap runs slightly narrow at n=50)
    expected = 2 * 1.96 * sigma / math.sqrt(n)  # normal-theory width of the mean's interval
    assert np.mean(widths) == pytest.approx(expected, rel=0.1)


def test_bootstrap_is_reproducible_and_handles_edge_cases():
    x = [1.0, 5.0, None, 2.0, float("nan"), 7.0]
    assert bootstrap.bootstrap_ci(x) == bootstrap.bootstrap_ci(x)  # fixed seed
    y = np.random.default_rng(3).normal(size=20)
    assert bootstrap.bootstrap_ci(y, seed=1) != bootstrap.bootstrap_ci(y, seed=2)
    lo, hi = bootstrap.bootstrap_ci(x)
    assert 1.0 <= lo < 3.75 < hi <= 7.0  # mean of the four finite values is 3.75
    assert all(math.isnan(x) for x in bootstrap.bootstrap_ci([4.0]))  # one value: no interval, not [4, 4]
    assert all(math.isnan(x) for x in bootstrap.bootstrap_ratio_ci([3.0], [1.0]))
    assert all(math.isnan(v) for v in bootstrap.bootstrap_ci([None, float("nan")]))
    s = bootstrap.summary(x)
    assert s["value"] == pytest.approx(3.75) and s["n"] == 4 and s["ci"] == [lo, hi]
    lo_m, hi_m = bootstrap.bootstrap_ci(np.arange(101.0), np.median)
    assert lo_m < 50 < hi_m
    with pytest.raises(ValueError, match="level"):
        bootstrap.bootstrap_ci(x, level=1.5)


def test_ratio_intervals_pair_rollouts():
    rng = np.random.default_rng(0)
    floor = rng.uniform(1, 5, 30)
    assert bootstrap.bootstrap_ratio_ci(3 * floor, floor) == pytest.approx((3.0, 3.0))  # exactly paired
    r = bootstrap.ratio_summary(list(3 * floor) + [None], list(floor) + [1.0])
    assert r["value"] == pytest.approx(3.0) and r["n"] == 30
    lo, hi = bootstrap.bootstrap_two_sample_ratio_ci(rng.normal(10, 1, 40), rng.normal(5, 0.5, 40))
    assert lo < 2.0 < hi and hi - lo < 0.4
    with pytest.raises(ValueError, match="paired"):
        bootstrap.bootstrap_ratio_ci([1.0, 2.0], [1.0])


def test_drift_summary_finds_h_star():
    t = np.arange(11, dtype=float)  # horizon 10
    curves = [t * 0.2, t * 0.25, t * 0.15]  # medians cross 1 radius after step 5 (0.2 * 6 = 1.2)
    d = probe_report.drift_summary(curves)
    assert d["h_star"]["value"] == 6 and d["exceeded"] and d["horizon"] == 10
    assert d["h_star"]["ci"][0] <= 6 <= d["h_star"]["ci"][1] and d["per_rollout_h_star"] == [6, 5, 7]
    flat = probe_report.drift_summary([np.zeros(11), np.zeros(11)])
    assert flat["h_star"]["value"] == 10 and not flat["exceeded"]  # never exceeded: H* = the horizon


def test_a_broken_autoencoder_floor_fails_ratio_targets():
    """An autoencoder that loses the objects makes its round-trip floor as bad as the model:
    the ratio is ~1 but the verdict must not pass."""
    def probe(ae_err):
        per = {"model": [1.0, 1.2], "floor_gt": [0.001, 0.001], "floor_ae": [ae_err, ae_err]}
        floor = [max(a, b) for a, b in zip(per["floor_gt"], per["floor_ae"])]
        return {"count": 2, "per_rollout": per, "floor_ae": bootstrap.summary(per["floor_ae"]),
                "ratio": bootstrap.ratio_summary(per["model"], floor)}
    for ae_err, ok in ((1.0, False), (0.01, False)):
        results = {"id": {"probes": {"p1": probe(ae_err), "p5": {"share": {"value": 0.0, "ci": [0, 0]}},
                                     "p8": {}}}}
        (t,) = [t for t in probe_report.scene_targets(BALLS, True, results, 64) if t["target"] == "p1_id"]
        assert t["passed"] is ok
        assert bool(t.get("floor_unusable")) is (ae_err > probe_report.FLOOR_AE_LIMIT)
    good = probe(0.01)
    good["ratio"] = {"value": 1.2, "ci": [1.1, 1.3], "n": 2}
    results = {"id": {"probes": {"p1": good, "p5": {"share": {"value": 0.0, "ci": [0, 0]}}, "p8": {}}}}
    (t,) = [t for t in probe_report.scene_targets(BALLS, True, results, 64) if t["target"] == "p1_id"]
    assert t["passed"] is True and not t.get("floor_unusable")


def test_judge_states_the_miss():
    up = probe_report.judge("p1_id", {"value": 6.0, "ci": [5, 7]}, BALLS)
    assert up["passed"] is False and up["miss"] == pytest.approx(4.5) and up["factor"] == pytest.approx(4.0)
    low = probe_report.judge("p7_accuracy", {"value": 0.5, "ci": [0.4, 0.6]}, PONG)
    assert low["passed"] is False and low["miss"] == pytest.approx(0.45) and low["factor"] == pytest.approx(1.9)
    ok = probe_report.judge("p5_violations", {"value": 0.0, "ci": [0, 0]}, BALLS)
    assert ok["passed"] is True and ok["miss"] is None
    assert probe_report.judge("p3_momentum", None, BALLS)["passed"] is None


# ---------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------


def _speed_key(opts):
    return "speed_range" if "speed_range" in opts else "ball_speed_range"


@pytest.mark.parametrize("scene", sorted(splits.SPLITS))
def test_splits_have_the_documented_ranges(scene):
    default = splits.resolved(scene, "id")
    cls = simcore.plugin_manager.get_registry().get(scene)
    assert default == cls().resolve(None)  # id = the scene's defaults
    ood = splits.resolved(scene, "ood")
    k = _speed_key(ood)
    assert ood[k][0] > default[k][1]  # held-out speeds: above the whole training range
    if "radius_range" in ood:
        assert ood["radius_range"][0] > default["radius_range"][1]
    else:
        assert ood["ball_radius"] > default["ball_radius"]
    if "composition" in splits.available(scene):
        comp = splits.resolved(scene, "composition")
        assert comp["count"][0] > default["count"][1]  # counts never seen in training


def test_docs_split_table_matches_the_code():
    text = (ROOT / "docs" / "probes.md").read_text()
    for scene, table in splits.SPLITS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {scene.split('/')[1][:-3]} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        ood = splits.split_options(scene, "ood")
        lo, hi = ood[_speed_key(ood)]
        assert f"speed {lo:g}–{hi:g}" in cells[2]
        size = ood.get("radius_range") or (ood["ball_radius"],)
        assert "radius " + "–".join(f"{v:g}" for v in size) in cells[2]
        comp = table["composition"]
        assert (cells[3].startswith("–") if comp is None else f"{comp['count'][0]}" in cells[3])


def test_ood_split_draws_speeds_and_sizes_in_the_held_out_range():
    world = simcore.make(BALLS, **splits.split_options(BALLS, "ood"))
    for seed in range(5):
        _, info = world.reset(seed=seed)
        speed = np.hypot(*info["objects"]["vel"].T)
        assert np.all((speed >= 70) & (speed <= 100))
        assert np.all((info["objects"]["radius"] >= 8) & (info["objects"]["radius"] <= 10))


def test_split_errors_and_held_out_seeds():
    with pytest.raises(SimcoreError, match="unknown split 'train'"):
        splits.split_options(BALLS, "train")
    with pytest.raises(SimcoreError, match="not meaningful"):
        splits.split_options(PONG, "composition")
    with pytest.raises(SimcoreError, match="no 'ood' split is defined"):
        splits.split_options("me/Unknown-v0", "ood")
    assert splits.split_options("me/Unknown-v0", "id") == {}
    with pytest.raises(SimcoreError, match="overlap the training seeds"):
        splits.held_out_seeds(PONG, 100_250, 10)
    assert splits.held_out_seeds(PONG, 1_000_000, 3) == [1_000_000, 1_000_001, 1_000_002]


# ---------------------------------------------------------------------------
# the report, with a user's probe plugin (the docs example)
# ---------------------------------------------------------------------------


def _doc_plugin(tmp: Path) -> Path:
    text = (ROOT / "docs" / "probes.md").read_text()
    code = re.search(r"<!-- probe-plugin-example.*?```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 22  # "a 20-line example"
    path = tmp / "pixel_mass.py"
    path.write_text(code)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = WorldModel(config_for("tiny", scenes=(PONG, BALLS), num_actions=3, cond_dims={"scene_params": 4}))
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny-probes", {"name": "tiny-probes"})


@pytest.fixture(scope="module")
def result(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-eval")
    pm = simcore.create_plugin_manager(autoload=False, plugins=[str(_doc_plugin(out))])
    report = evaluate(model_dir, scenes=[BALLS, PONG], rollouts=2, horizon=5, long_horizon=0, out_dir=out,
                      progress=False, plugin_manager=pm, splits=["ood", "composition"], gif_scale=1)
    return report, out


def _figure_ok(fig):
    lo, hi = fig["ci"]
    assert set(fig) == {"value", "ci", "n"}
    if fig["n"] >= 2:
        assert lo - 1e-9 <= fig["value"] <= hi + 1e-9 or math.isinf(fig["value"])
    else:  # one rollout (or none): no interval
        assert math.isnan(lo) and math.isnan(hi)


def test_report_schema_every_probe_with_floors_and_intervals(result):
    report, _ = result
    assert report["split"] == "id" and set(report["per_split"]) == {"ood", "composition"}
    assert report["splits"]["ood"]["options"][BALLS] == splits.split_options(BALLS, "ood")
    assert report["skipped"] == [{"scene": PONG, "split": "composition",
                                  "why": "the 'composition' split is not meaningful for 'simcore/Pong-v0' "
                                         "(see simcore.splits.SPLITS)"}]
    assert PONG not in report["per_split"]["composition"]
    for split, by_scene in [("id", report["per_scene"]), *report["per_split"].items()]:
        for scene, r in by_scene.items():
            assert r["split"] == split
            pr = r["probes"]
            assert {"p1", "p2", "p4", "p5", "p8", "hooks"} <= set(pr)
            assert ("p3" in pr) == (scene == BALLS)  # P3 needs two balls or more
            for p in ("p1", "p2", "p3", "p4"):
                if p not in pr:
                    continue
                assert pr[p]["metric"] == probe_report.OFFLINE_METRICS[p][0]
                for side in ("model", "floor_gt", "floor_ae", "floor", "ratio"):
                    _figure_ok(pr[p][side])
                assert len(pr[p]["per_rollout"]["model"]) == 2
            _figure_ok(pr["p5"]["share"])
            assert 0.0 <= pr["p5"]["share"]["value"] <= 1.0 and len(pr["p5"]["per_rollout"]) == 2
            p8 = pr["p8"]
            assert p8["horizon"] == 5 and len(p8["median_err"]) == 6 and len(p8["band"][0]) == 6
            assert 1 <= p8["h_star"]["value"] <= 5
            assert len(r["psnr_band"]["mean"]) == 5 and r["psnr_band"]["band"][0][0] <= r["psnr_band"]["mean"][0]
            assert r["probes"]["p1"]["floor_gt"]["value"] < 0.05  # perception on crisp ground truth
            if split != "id":
                assert "psnr_mean_delta_db" in pr["vs_id"]
    p7 = report["per_scene"][PONG]["probes"]["p7"]
    _figure_ok(p7["delta_psnr"])
    assert 0 <= p7["accuracy"]["value"] <= 1 and p7["floor_gt_accuracy"]["value"] == pytest.approx(1.0)
    assert "p1_ood_id" in report["per_split"]["ood"][BALLS]["probes"]


def test_user_probe_plugin_is_in_the_report(result):
    report, _ = result
    for r in (report["per_scene"][BALLS], report["per_scene"][PONG], report["per_split"]["ood"][BALLS]):
        h = r["probes"]["hooks"]["pixel_mass_change"]
        assert h["plugin"] == "pixel_mass"  # the plugin file's name
        for side in ("model", "floor_gt", "floor_ae"):
            _figure_ok(h[side])
            assert h[side]["n"] == 2 and h[side]["value"] >= 0
        assert h["floor_gt"]["value"] < 0.2  # the simulator conserves drawn area (up to overlaps and edges)
    builtin = report["per_scene"][BALLS]["probes"]["hooks"]["probe_objects_seen"]
    assert builtin["plugin"] == "probes" and builtin["floor_gt"]["value"] >= 2  # BouncingBalls: 2-4 balls


def test_targets_with_misses_as_numbers(result):
    report, _ = result
    by = {(t["target"], t["scene"]): t for t in report["probe_targets"]}
    assert {("p1_id", BALLS), ("p5_violations", BALLS), ("p8_h_star", BALLS), ("p7_accuracy", PONG),
            ("p7_delta_psnr", PONG)} <= set(by)
    assert ("p8_h_star", PONG) not in by  # H* is judged on ball scenes
    for t in report["probe_targets"]:
        assert set(t) >= {"target", "scene", "split", "threshold", "op", "measured", "ci", "passed", "miss", "factor"}
        if t["passed"] is False and t.get("floor_unusable"):
            assert "FLOOR UNUSABLE" in t["note"]  # an untrained autoencoder: no ratio to its floor passes
        elif t["passed"] is False:
            gap = t["measured"] - t["threshold"] if t["op"] == "<=" else t["threshold"] - t["measured"]
            assert t["miss"] == pytest.approx(gap) and t["miss"] > 0
        if t["passed"] is None:
            assert t["note"]
    assert re.search(r"measured on \d of 2 rollouts", by[("p1_id", BALLS)]["note"])
    h = by[("p8_h_star", BALLS)]
    assert h["passed"] in (False, None)  # a horizon of 5 cannot show 64 steps
    listed = set(report["probe_summary"]["failed"]) | set(report["probe_summary"]["passed"]) | \
        set(report["probe_summary"]["not_measured"])
    assert listed == {f"{t['target']} {t['scene']}" for t in report["probe_targets"]}


def test_report_json_plots_and_gifs_are_written(result):
    report, out = result
    on_disk = json.loads((out / "report.json").read_text())  # strict JSON: non-finite values as strings
    assert on_disk["probe_targets"] and on_disk["per_split"]["ood"][BALLS]["probes"]["p1"]["metric"] == "vel_rel_err"
    for name in ("psnr_ssim.png", "error_vs_horizon.png", "probe_bars.png"):
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 10_000
    assert report["files"]["probe_plots"] == {"error_vs_horizon": str(out / "error_vs_horizon.png"),
                                              "probe_bars": str(out / "probe_bars.png")}
    gifs = report["files"]["gifs"]
    assert set(gifs) == {BALLS, PONG, f"{BALLS} [ood]", f"{PONG} [ood]", f"{BALLS} [composition]"}
    frames = iio.imread(gifs[f"{BALLS} [ood]"], index=None)
    assert frames.shape[1:] == (64, 2 * 64 + 2, 3)  # model | sim at gif_scale 1, a 2-px gap
    assert Path(gifs[BALLS]).name == "side_by_side_simcore_BouncingBalls-v0.gif"
    (out / "probe_bars.png").unlink()
    redrawn = probe_report.plots_from_report(out / "report.json")  # from the saved JSON alone
    assert [p.name for p in redrawn] == ["error_vs_horizon.png", "probe_bars.png"]
    assert (out / "probe_bars.png").read_bytes()[:8] == PNG


def test_scenes_outside_training_need_condition_as(model_dir, tmp_path):
    with pytest.raises(BackendError, match="--condition-as"):
        evaluate(model_dir, scenes=["simcore/UniformMotion-v0"], rollouts=1, horizon=2, long_horizon=0,
                 out_dir=tmp_path, progress=False)
    report = evaluate(model_dir, scenes=["simcore/UniformMotion-v0"], rollouts=1, horizon=4, long_horizon=0,
                      out_dir=tmp_path, progress=False, condition_as=BALLS)
    r = report["per_scene"]["simcore/UniformMotion-v0"]
    assert r["conditioned_as"] == BALLS and r["options_resolved"]["count"] == [1, 1]
    assert "p3" not in r["probes"] and r["probes"]["p1"]["floor_gt"]["n"] == 1
    with pytest.raises(BackendError, match="not trained on"):
        evaluate(model_dir, scenes=[BALLS], out_dir=tmp_path, progress=False, condition_as="simcore/Projectile-v0")


def test_bad_inputs_give_clear_errors(model_dir, tmp_path):
    with pytest.raises(SimcoreError, match="unknown split 'train'; splits: id, ood, composition"):
        evaluate(model_dir, splits=["train"], out_dir=tmp_path, progress=False)
    with pytest.raises(UnknownSceneError):
        evaluate(model_dir, scenes=["simcore/Nope-v0"], out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="no model"):
        evaluate(tmp_path / "missing", out_dir=tmp_path, progress=False)
    with pytest.raises(SimcoreError, match="overlap the training seeds"):
        evaluate(model_dir, scenes=[PONG], seed=100_000, out_dir=tmp_path, progress=False)
    with pytest.raises(SimcoreError, match="nothing to evaluate"):
        evaluate(model_dir, scenes=[PONG], splits=["composition"], out_dir=tmp_path, progress=False)


def test_cli_split_errors_are_one_line(model_dir, tmp_path, capsys):
    from simcore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", str(model_dir), "--split", "train", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown split 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", str(model_dir), "--scene", "simcore/Nope-v0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "Nope-v0" in capsys.readouterr().err


def test_cli_eval_prints_probe_verdicts(model_dir, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--scene", BALLS, "--rollouts", "1",
                                   "--horizon", "4", "--long-horizon", "0", "--split", "id", "--out", str(out),
                                   "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "P8 H* >= 64 steps on ball scenes" in res.output and "error_vs_horizon" in res.output
    report = json.loads((out / "report.json").read_text())
    assert "--split id" in report["command"] and report["probe_targets"]
