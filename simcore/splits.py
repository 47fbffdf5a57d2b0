"""Evaluation splits: which scene options and seeds ``simcore eval --split`` uses.

One table, :data:`SPLITS`, says for every scene what each split changes relative to
the scene's default options (the options the shipped model was trained on, see
``docs/train_default_model.sh``):

* ``id`` — in distribution: the scene's default option ranges, on held-out seeds.
* ``ood`` — out of distribution: held-out ranges of the scene's speed and size
  options, entirely outside the training ranges (P1's OOD ÷ ID ratio comes from
  running ``id`` and ``ood`` on the same seeds).
* ``composition`` — P6: configurations absent from training: ball counts outside the
  trained range (so colour combinations never drawn together in training).
  ``None`` where a scene has no such freedom (one-ball Projectile, Pong's fixed cast).

Seeds: rollout ``i`` uses ``seed + i`` (default seed 1,000,000). The shipped model's
recordings used seeds 0–299 (BouncingBalls) and 100,000–100,299 (Pong)
(:data:`TRAINING_SEEDS`); :func:`held_out_seeds` refuses a seed range that overlaps them.

Extend it for your own scene by adding an entry (options by name, as on the command line
with ``-o``)::

    from simcore.splits import SPLITS
    SPLITS["me/Slow-v0"] = {"id": {}, "ood": {"speed_range": (20.0, 30.0)}, "composition": {"count": (5, 5)}}
"""
from __future__ import annotations

from typing import Any

from simcore.errors import SimcoreError

SPLIT_NAMES = ("id", "ood", "composition")
HELD_OUT_SEED = 1_000_000

#: The seeds of the shipped model's training recordings (docs/train_default_model.sh:
#: ``--episodes 300 --seed 0`` and ``--seed 100000``; episode i uses seed + i).
TRAINING_SEEDS: dict[str, range] = {
    "simcore/BouncingBalls-v0": range(0, 300),
    "simcore/Pong-v0": range(100_000, 100_300),
}

_BALL_OOD = {"speed_range": (70.0, 100.0), "radius_range": (8.0, 10.0)}  # defaults: 20-60 px/s, 4-7 px

#: scene -> split -> options that differ from the scene's defaults (None: split not meaningful)
SPLITS: dict[str, dict[str, dict[str, Any] | None]] = {
    "simcore/UniformMotion-v0": {"id": {}, "ood": dict(_BALL_OOD), "composition": {"count": (3, 3)}},
    "simcore/Projectile-v0": {"id": {}, "ood": {"speed_range": (100.0, 130.0), "radius_range": (8.0, 10.0)},
                              "composition": None},  # its launch places exactly one ball
    "simcore/Collision-v0": {"id": {}, "ood": {"speed_range": (70.0, 100.0), "radius_range": (9.0, 12.0)},
                             "composition": {"count": (3, 3)}},
    "simcore/BouncingBalls-v0": {"id": {}, "ood": dict(_BALL_OOD), "composition": {"count": (5, 6)}},
    "simcore/Occlusion-v0": {"id": {}, "ood": dict(_BALL_OOD), "composition": {"count": (4, 5)}},
    "simcore/Pong-v0": {"id": {}, "ood": {"ball_speed_range": (65.0, 85.0), "ball_radius": 4.0},
                        "composition": None},  # one ball, two paddles, fixed colours
}

#: why a split is what it is, for the report
DESCRIPTIONS = {
    "id": "the scene's default option ranges (the training distribution), held-out seeds",
    "ood": "held-out ranges of the scene's speed and size options, outside the training ranges",
    "composition": "P6: configurations absent from training (ball counts outside the trained range, "
                   "hence colour combinations never seen together)",
}


def split_options(scene: str, split: str) -> dict[str, Any]:
    """The options (beyond the scene's defaults) of ``split`` for ``scene``.

    Raises SimcoreError for an unknown split, a scene without an entry (``id`` works
    for every scene), or a split marked not meaningful for the scene."""
    if split not in SPLIT_NAMES:
        raise SimcoreError(f"unknown split {split!r}; splits: {', '.join(SPLIT_NAMES)}")
    table = SPLITS.get(scene)
    if table is None:
        if split == "id":
            return {}
        raise SimcoreError(f"no {split!r} split is defined for {scene!r}; add one to simcore.splits.SPLITS "
                           f"(scenes with splits: {', '.join(SPLITS)})")
    if split not in table or table[split] is None:
        raise SimcoreError(f"the {split!r} split is not meaningful for {scene!r} (see simcore.splits.SPLITS)")
    return dict(table[split])


def available(scene: str) -> list[str]:
    """The splits defined for ``scene``."""
    table = SPLITS.get(scene)
    if table is None:
        return ["id"]
    return [s for s in SPLIT_NAMES if table.get(s) is not None]


def held_out_seeds(scene: str, seed: int, n: int) -> list[int]:
    """``seed .. seed+n-1``, after checking they avoid the shipped training seeds of ``scene``."""
    seeds = list(range(int(seed), int(seed) + int(n)))
    train = TRAINING_SEEDS.get(scene)
    if train is not None and seeds and seeds[0] < train.stop and seeds[-1] >= train.start:
        raise SimcoreError(f"seeds {seeds[0]}..{seeds[-1]} overlap the training seeds of {scene} "
                           f"({train.start}..{train.stop - 1}); pick --seed >= {HELD_OUT_SEED}")
    return seeds


def resolved(scene: str, split: str, frame_size=(64, 64), plugin_manager: Any = None) -> dict[str, Any]:
    """The scene's full option set under ``split`` (defaults merged with the split's changes)."""
    from simcore.plugin_manager import get_registry

    cls = get_registry(plugin_manager).get(scene)
    return cls(tuple(frame_size), **split_options(scene, split)).resolve(None)
