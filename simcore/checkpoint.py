"""World-model checkpoints: ``model.safetensors`` (weights + config, no pickle) and
``model_card.json`` (what it was trained on, how, and how well it does).

A model is named by a directory (or its ``model.safetensors``), or by a shipped
name: ``"default"`` is ``simcore/models/default``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from simcore.errors import SimcoreError
from simcore.jsonable import jsonable
from simcore.model import ModelConfig, WorldModel

FORMAT = "simcore.worldmodel"
VERSION = "1"
SHIPPED = Path(__file__).parent / "models"


class CheckpointError(SimcoreError, ValueError):
    """A model file that is missing, corrupt, of another format, or of another shape."""


def resolve(name: str | os.PathLike) -> Path:
    """The ``model.safetensors`` path for a shipped name, a directory or a file."""
    p = Path(name)
    if isinstance(name, str) and (SHIPPED / name).is_dir() and not p.exists():
        p = SHIPPED / name
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        shipped = sorted(d.name for d in SHIPPED.iterdir() if d.is_dir()) if SHIPPED.is_dir() else []
        raise CheckpointError(f"no model at {os.fspath(name)!r} (expected a directory with model.safetensors, "
                              f"a .safetensors file, or a shipped model: {', '.join(shipped) or 'none'})")
    return p


def save_model(model: WorldModel, directory: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write weights (safetensors, atomically) and the model card; returns the directory."""
    return write_weights(model, directory, card, fmt=FORMAT, version=VERSION)


def write_weights(model, directory: str | os.PathLike, card: dict[str, Any] | None, *, fmt: str, version: str,
                  card_extra: dict[str, Any] | None = None) -> Path:
    """Weights as ``model.safetensors`` (format/version/config in its metadata, written
    atomically through a .tmp) plus ``model_card.json``; shared by every model kind."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": fmt, "version": version, "config": json.dumps(model.cfg.to_dict())}
    tmp = d / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, d / "model.safetensors")
    if card is not None:
        card = {**card, **(card_extra or {}), "config": model.cfg.to_dict(), "parameters": model.num_parameters()}
        (d / "model_card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    return d


def read_checked(path: Path, *, fmt: str, version: str, error: type[Exception], what: str, kind: str,
                 noun: str = "safetensors file", hint: str = "") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a simcore safetensors file whose metadata names ``fmt`` and
    ``version``. Every failure raises ``error`` naming the file and the problem, so model
    checkpoints, render models and session files fail the same legible way."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path}: not a readable {noun} (truncated or corrupt?): {exc}") from exc
    if meta.get("format") != fmt:
        raise error(f"{path}: not a {what} (format {meta.get('format')!r}, expected {fmt!r}){hint}")
    if meta.get("version") != version:
        raise error(f"{path}: {kind} version {meta.get('version')!r}; this simcore reads {version!r}")
    return meta, tensors


def load_model(name: str | os.PathLike = "default", device: str | torch.device = "cpu") -> WorldModel:
    """Load a WorldModel in eval mode; every failure names the file and the problem."""
    path = resolve(name)
    meta, tensors = read_checked(path, fmt=FORMAT, version=VERSION, error=CheckpointError, what="simcore world model",
                                 kind="model format")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config is missing or invalid: {exc}") from exc
    try:
        model = WorldModel(cfg)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its config cannot build a model: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("wrong shapes " + ", ".join(f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}"
                                                     for k in wrong[:3]))
        raise CheckpointError(f"{path}: weights do not match the config they came with: {'; '.join(parts)}")
    model.load_state_dict(tensors)
    return model.to(device).eval()


def load_card(name: str | os.PathLike = "default") -> dict[str, Any]:
    """The model card next to a model (empty dict if there is none)."""
    p = resolve(name).parent / "model_card.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def update_card(name: str | os.PathLike, **fields: Any) -> Path:
    """Merge ``fields`` into the model card next to a model (e.g. evaluation figures)."""
    p = resolve(name).parent / "model_card.json"
    card = json.loads(p.read_text()) if p.is_file() else {}
    card.update(jsonable(fields, nonfinite="string"))
    p.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n")
    return p
