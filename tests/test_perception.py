"""Colour-unmixing perception (simcore.perception): exact on rendered discs, robust to
blur where a hard threshold is not, and an occlusion-aware tracker."""
from __future__ import annotations

import math

import numpy as np
import pytest

import simcore
from simcore import perception as P
from simcore import raster
from simcore.scene import BACKGROUND, PALETTE
from simcore.scenes.occlusion import OCCLUDER_COLOR

COLORS = [PALETTE[c] for c in ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")]


def disc_frame(discs, size=(64, 64)):
    """A frame with discs [(x, y, r, colour)] drawn by the scenes' rasterizer."""
    f = raster.blank(*size, BACKGROUND)
    for x, y, r, c in discs:
        raster.draw_disc(f, x, y, r, c)
    return f


def gaussian_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with numpy (edges padded with their own values), uint8 out."""
    rad = int(math.ceil(3 * sigma))
    k = np.exp(-np.arange(-rad, rad + 1) ** 2 / (2 * sigma * sigma))
    k /= k.sum()
    a = frame.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (rad, rad)
        p = np.pad(a, pad, mode="edge")
        n = a.shape[axis]
        a = sum(w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def test_soft_reading_of_rendered_discs_is_subpixel_exact():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 5))
        cols = [COLORS[i] for i in rng.choice(len(COLORS), n, replace=False)]
        discs = []
        while len(discs) < n:  # sub-pixel positions, not touching each other
            r = rng.uniform(2.5, 9.0)
            x, y = rng.uniform(r + 1, 63 - r, size=2)
            if all(math.hypot(x - a, y - b) > r + s + 2 for a, b, s, _ in discs):
                discs.append((x, y, r, cols[len(discs)]))
        det = P.detect(disc_frame(discs), cols)
        assert det.visible.all()
        for i, (x, y, r, _) in enumerate(discs):
            assert abs(det.pos[i, 0] - x) < 0.05 and abs(det.pos[i, 1] - y) < 0.05
            assert det.radius[i] == pytest.approx(r, rel=0.02)


def test_blur_keeps_the_unmixed_radius_but_shrinks_the_hard_threshold():
    x, y, r = 30.3, 33.7, 6.0
    sharp = disc_frame([(x, y, r, PALETTE["red"])])
    blurred = gaussian_blur(sharp, sigma=2.0)
    soft, hard = P.detect(blurred, [PALETTE["red"]]), P.detect_hard(blurred, [PALETTE["red"]])
    assert soft.radius[0] == pytest.approx(r, rel=0.02)
    assert np.abs(soft.pos[0] - (x, y)).max() < 0.05
    assert hard.radius[0] < 0.95 * r  # the threshold reading loses the blurred rim
    assert P.detect_hard(sharp, [PALETTE["red"]]).radius[0] == pytest.approx(r, rel=0.02)  # but not a sharp one


def test_each_pixel_belongs_to_one_colour_and_distractors_to_none():
    # red and orange are close in RGB: a naive per-colour projection reads red as 80% orange
    frame = disc_frame([(20.0, 20.0, 6.0, PALETTE["red"])])
    det = P.detect(frame, [PALETTE["orange"], PALETTE["red"]])
    assert not det.visible[0] and det.area[0] == 0
    assert det.radius[1] == pytest.approx(6.0, rel=0.02)
    # the grey occluder is half-way between the background and white
    raster.draw_rect(frame, 40, 0, 52, 64, OCCLUDER_COLOR)
    assert P.detect(frame, [PALETTE["white"]]).visible[0]  # misread without the distractor
    det = P.detect(frame, [PALETTE["white"]], distractors=[OCCLUDER_COLOR])
    assert not det.visible[0]
    owner, alpha = P.unmix(frame, [PALETTE["white"], PALETTE["red"]], distractors=[OCCLUDER_COLOR])
    assert owner.shape == alpha.shape == (64, 64) and (owner[:, 44] == 2).all()  # 2 = "none"
    maps = P.alpha_maps(frame, [PALETTE["white"], PALETTE["red"]], distractors=[OCCLUDER_COLOR])
    assert maps.shape == (2, 64, 64) and maps[1].sum() == pytest.approx(math.pi * 36, rel=0.02)


def test_blobs_separate_objects_of_one_colour():
    frame = disc_frame([(15.2, 20.6, 5.0, PALETTE["green"]), (45.7, 40.1, 7.0, PALETTE["green"]),
                        (45.0, 12.0, 4.0, PALETTE["blue"])])
    blobs = P.detect_blobs(frame, [PALETTE["green"], PALETTE["blue"]])
    assert [b.color for b in blobs] == [0, 0, 1]  # largest first
    assert np.abs(blobs[0].pos - (45.7, 40.1)).max() < 0.05 and blobs[0].radius == pytest.approx(7.0, rel=0.02)
    assert np.abs(blobs[1].pos - (15.2, 20.6)).max() < 0.05
    assert P.blob_counts(frame, [PALETTE["green"], PALETTE["blue"], PALETTE["red"]]).tolist() == [2, 1, 0]
    # colour mode sees one green object: the area-weighted mean of both
    assert P.detect(frame, [PALETTE["green"]]).area[0] == pytest.approx(math.pi * 74, rel=0.02)


def test_label_finds_8_connected_components():
    mask = np.zeros((9, 9), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # one diagonal line
    mask[6:8, 5:9] = True  # a block
    mask[1, 7] = True  # a single pixel
    lab, n = P.label(mask)
    assert n == 3 and lab[1, 1] == lab[3, 3] != lab[6, 5] and (lab[~mask] == 0).all()
    assert P.label(np.zeros((4, 4), bool))[1] == 0


def test_objects_from_frame_reads_a_worlds_ground_truth():
    world = simcore.make("simcore/BouncingBalls-v0", count=(3, 3))
    obs, info = world.reset(seed=3)
    errors = []
    for _ in range(20):
        det = P.objects_from_frame(obs, info)
        assert det.visible.all()
        errors.append(np.abs(det.pos - info["objects"]["pos"]).max())
        assert det.radius == pytest.approx(info["objects"]["radius"], rel=0.02)
        obs, _, _, _, info = world.step(0)
    assert np.median(errors) < 0.05
    step_record = {"state": info["objects"]}  # a recording step carries the table as "state"
    assert P.objects_from_frame(obs, step_record).visible.all()
    with pytest.raises(ValueError):
        P.objects_from_frame(obs, {"step": 3, "dream": True})


def occlusion_episode(seed, steps=60):
    world = simcore.make("simcore/Occlusion-v0", count=(1, 1), radius_range=(4.0, 4.5), speed_range=(50.0, 60.0))
    obs, info = world.reset(seed=seed)
    frames, tables = [obs], [info["objects"]]
    for _ in range(steps):
        obs, _, _, _, info = world.step(0)
        frames.append(obs)
        tables.append(info["objects"])
    return np.stack(frames), tables, tuple(world.state["occluder"])


def test_tracking_through_an_occluder_reports_occluded_not_vanished():
    # an episode where the ball starts in the open and later passes wholly behind the occluder
    for seed in range(50):
        frames, tables, occluder = occlusion_episode(seed)
        hidden = np.array([not t["visible"][0] for t in tables])
        if hidden.any() and not hidden[:3].any():
            break
    else:
        pytest.fail("no episode with a ball passing behind the occluder")
    color = tables[0]["color"]
    tr = P.track(frames, color, occluders=[occluder], distractors=[OCCLUDER_COLOR])
    assert tr.pos.shape == (len(frames), 1, 2) and tr.radius.shape == tr.visible.shape == tr.status.shape
    assert (tr.status[hidden, 0] == P.OCCLUDED).all()
    assert not tr.missing.any()
    assert tr.predicted[hidden, 0].all() and not tr.visible[hidden, 0].any()
    truth = np.stack([t["pos"][0] for t in tables])
    assert np.abs(tr.pos[hidden, 0] - truth[hidden]).max() < 4.5  # the prediction follows it (within a radius)
    clear = tr.clear[:, 0]
    assert clear.sum() > 10 and np.abs(tr.pos[clear, 0] - truth[clear]).max() < 0.05

    # without the occluder known, the same frames say the ball vanished
    blind = P.track(frames, color, distractors=[OCCLUDER_COLOR])
    assert blind.missing[hidden, 0].all()


def test_a_ball_erased_in_the_open_is_missing_then_reappears():
    world = simcore.make("simcore/UniformMotion-v0")
    obs, info = world.reset(seed=0)
    frames, tables = [obs], [info["objects"]]
    for _ in range(30):
        obs, _, _, _, info = world.step(0)
        frames.append(obs)
        tables.append(info["objects"])
    frames = np.stack(frames)
    frames[12:16] = raster.blank(64, 64, BACKGROUND)  # erase the ball
    tr = P.track(frames, tables[0]["color"])
    assert tr.missing[12:16, 0].all() and not tr.missing[:12, 0].any() and not tr.missing[16:, 0].any()
    assert np.isfinite(tr.pos[12:16, 0]).all()  # predicted while unseen
    assert (tr.blobs[tr.visible] == 1).all()
