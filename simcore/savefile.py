"""Session save files (``.simsave``): a whole session in ONE file, no pickle.

Why one safetensors file: the bulk of a session is tensors (the model backend's KV
cache, the torch generator state, the scene's numpy arrays, the last frame), and
safetensors stores them raw, memory-safe and without code execution; everything else
(scene id and options, step counters, numpy ``bit_generator`` states, the action log,
which model and its weights hash) is a JSON document in the safetensors header's
``__metadata__``. Layout (see docs/save-rewind.md):

    __metadata__ = {"format": "simcore.session", "version": "1", "session": "<JSON>"}
    tensors      = every array of the JSON tree, named by its path in the tree
                   ("world/snapshot/state/pos", "world/snapshot/dream/rollout/k", ...)

The JSON tree is plain JSON except for tagged objects ``{"$type": ...}`` for what JSON
lacks: ``ndarray``/``tensor`` (a reference to a tensor by name), ``tuple``,
``npscalar``, ``float`` (inf/nan), ``int`` (beyond 2**53, as a decimal string: the
PCG64 state is 128-bit) and ``map`` (a dict whose keys are not plain strings).

    simcore.save_session(world_or_session, "run.simsave")
    session = simcore.load_session("run.simsave")     # a Session; .world is ready to step

Loading rebuilds each World from its spec (scene, backend, frame size, options, model),
checks the model's weights hash, then restores ``World.snapshot()``; replaying the same
actions afterwards gives bit-identical frames on CPU (same torch build and thread
count). Every failure raises :class:`SaveFileError` naming the file and the problem.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simcore.errors import SimcoreError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from simcore.loop import Session
    from simcore.world import World

FORMAT = "simcore.session"
VERSION = "1"
SUFFIX = ".simsave"
TAG = "$type"
_MAX_EXACT_INT = 2**53


class SaveFileError(SimcoreError, ValueError):
    """A session file that cannot be written, read, or restored here (missing, corrupt,
    truncated, another format or version, another scene or model)."""


# ---------------------------------------------------------------------------
# the JSON tree <-> (JSON, tensors) codec
# ---------------------------------------------------------------------------


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``obj`` (dicts, lists, tuples, numbers, strings, numpy arrays and scalars, torch
    tensors) as JSON-able data; arrays go to ``tensors`` under their path."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj if abs(obj) < _MAX_EXACT_INT else {TAG: "int", "value": str(obj)}
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {TAG: "float", "value": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {k: encode_tree(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {TAG: "map", "items": [[encode_tree(k, tensors, f"{path}/key{i}"),
                                       encode_tree(v, tensors, f"{path}/{i}")]
                                      for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [encode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biuf":
            raise SaveFileError(f"cannot save {path.strip('/') or 'value'}: numpy scalar of dtype {obj.dtype}")
        return {TAG: "npscalar", "dtype": obj.dtype.str, "value": encode_tree(obj.item(), tensors, path)}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "US":  # e.g. a column of object kinds
            return {TAG: "strarray", "dtype": obj.dtype.str, "shape": list(obj.shape), "items": obj.ravel().tolist()}
        if obj.dtype.kind not in "biuf":
            raise SaveFileError(f"cannot save {path.strip('/') or 'value'}: numpy array of dtype {obj.dtype}")
        import torch

        arr = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("="))
        return {TAG: "ndarray", "key": _put(tensors, path, torch.from_numpy(arr.copy()))}
    torch = sys.modules.get("torch")  # imported lazily: `import simcore` stays light
    if torch is not None and isinstance(obj, torch.Tensor):
        return {TAG: "tensor", "key": _put(tensors, path, obj.detach().to("cpu").contiguous().clone())}
    raise SaveFileError(f"cannot save {path.strip('/') or 'value'}: {type(obj).__name__} is not a supported type")


def _put(tensors: dict[str, torch.Tensor], path: str, t: torch.Tensor) -> str:
    key = path.strip("/") or "value"
    base, n = key, 1
    while key in tensors:
        key, n = f"{base}#{n}", n + 1
    tensors[key] = t
    return key


def decode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Inverse of :func:`encode_tree`; bad input raises ValueError naming where."""
    if isinstance(obj, list):
        return [decode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get(TAG)
    if kind is None:
        return {k: decode_tree(v, tensors, f"{path}/{k}") for k, v in obj.items()}
    try:
        return _decode_tagged(kind, obj, tensors, path)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("at "):
            raise
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"at {path.strip('/') or 'the top'}: bad {kind!r} value ({what})") from exc


def _decode_tagged(kind: str, obj: dict, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if kind == "ndarray":
        return tensors[obj["key"]].numpy().copy()
    if kind == "tensor":
        return tensors[obj["key"]].clone()
    if kind == "tuple":
        return tuple(decode_tree(v, tensors, f"{path}/{i}") for i, v in enumerate(obj["items"]))
    if kind == "map":
        return {_hashable(decode_tree(k, tensors, f"{path}/key{i}")): decode_tree(v, tensors, f"{path}/{i}")
                for i, (k, v) in enumerate(obj["items"])}
    if kind == "npscalar":
        return np.dtype(obj["dtype"]).type(decode_tree(obj["value"], tensors, path))
    if kind == "strarray":
        return np.array(obj["items"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if kind == "float":
        return float(obj["value"])
    if kind == "int":
        return int(obj["value"])
    raise ValueError(f"unknown tagged value {kind!r}")


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def tree_nbytes(obj: Any) -> int:
    """Bytes held by the arrays/tensors of a snapshot tree (for memory caps)."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, dict):
        return sum(tree_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tree_nbytes(v) for v in obj)
    return 0


# ---------------------------------------------------------------------------
# worlds: spec, model identity, rebuild, fork
# ---------------------------------------------------------------------------

_HASHES: "weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], str]]" = weakref.WeakKeyDictionary()


def weights_hash(model) -> str:
    """sha256 over a model's tensors (names, dtypes, shapes, bytes): the same weights
    give the same hash however they were loaded. Cached until a parameter changes."""
    import torch

    state = model.state_dict()
    versions = tuple(t._version for t in state.values())
    cached = _HASHES.get(model)
    if cached is not None and cached[0] == versions:
        return cached[1]
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    _HASHES[model] = (versions, digest)
    return digest


def generator_of(world: "World"):
    """The generative backend state of a World (the ``model`` backend's dreamer or the
    ``render`` backend's renderer), or None for ``sim``."""
    return world.dreamer if world.dreamer is not None else getattr(world, "renderer", None)


def _loaded_models():
    """(key, model) of every model loaded from a file in this process."""
    import importlib

    from simcore import dream

    yield from dream._MODELS.items()
    try:
        render = importlib.import_module("simcore.render")
    except ImportError:  # pragma: no cover - the render backend is optional here
        return
    yield from getattr(render, "_RENDER_MODELS", {}).items()


def _model_source(model) -> str | None:
    """Where a loaded model came from: a shipped name or an absolute path (None for a
    model built in memory)."""
    from simcore.checkpoint import SHIPPED

    for (key, _mtime), loaded in _loaded_models():
        if loaded is model:
            path = Path(key.rsplit("@", 1)[0])
            if path.parent.parent == SHIPPED and path.name == "model.safetensors":
                return path.parent.name
            return str(path.resolve())
    return None


def world_spec(world: "World") -> dict[str, Any]:
    """What rebuilds an equivalent World: scene, backend, frame size, options, model."""
    spec: dict[str, Any] = {
        "scene": world.scene_id,
        "backend": world.backend,
        "frame_size": list(world.frame_size),
        "max_episode_steps": world.max_episode_steps,
        "scene_options": dict(world.scene.default_options),
        "model": None,
    }
    d = generator_of(world)
    if d is not None:
        spec["model"] = {"source": _model_source(d.model), "sha256": weights_hash(d.model),
                         "denoise_steps": d.denoise_steps, "context": d.context,
                         "config": d.model.cfg.to_dict(), "device": str(next(d.model.parameters()).device)}
    return spec


def _ensure_rollout(world: "World") -> None:
    """A fresh model World has no rollout until reset; make an empty one of the right
    shape for ``restore`` to fill (no hooks fire, unlike ``reset``)."""
    d = generator_of(world)
    if d is not None and d.rollout is None:
        from simcore.rollout import Rollout

        d.rollout = Rollout(d.model, batch=1, steps=d.denoise_steps, window=d.context, seed=0, scene=d.scene_index)


def fork_world(world: "World") -> "World":
    """A second, independent World at ``world``'s current moment (same scene object,
    same model weights, its own state, RNGs and KV cache): a branch."""
    from simcore.world import World

    d = generator_of(world)
    kw: dict[str, Any] = {}
    if d is not None:
        kw = {"model": d.model, "denoise_steps": d.denoise_steps, "context": d.context,
              "device": str(next(d.model.parameters()).device)}
    twin = World(world.scene, backend=world.backend, max_episode_steps=world.max_episode_steps,
                 plugin_manager=world.pm, **kw)
    _ensure_rollout(twin)
    twin.restore(world.snapshot())
    return twin


def _build_world(spec: dict[str, Any], file: Path, *, plugin_manager=None, model=None, device: str | None = None):
    import simcore

    kw: dict[str, Any] = {}
    mspec = spec.get("model")
    if spec["backend"] != "sim":
        if not mspec:
            raise SaveFileError(f"{file}: corrupt: a model-backend world without a model entry")
        source = model if model is not None else mspec.get("source")
        if source is None:
            raise SaveFileError(f"{file}: was saved from a model built in memory (sha256 {mspec['sha256'][:12]}…); "
                                f"pass model=... (a path or WorldModel with the same weights) to load it")
        from simcore.checkpoint import CheckpointError
        from simcore.dream import get_model

        try:
            if spec["backend"] == "render":
                from simcore.render import load_render_model

                loaded = load_render_model(source, device or "cpu")
            else:
                loaded = get_model(source, device or "cpu")
        except (CheckpointError, SimcoreError) as exc:
            raise SaveFileError(f"{file}: its model {source!r} cannot be loaded: {exc}") from exc
        digest = weights_hash(loaded)
        if digest != mspec["sha256"]:
            raise SaveFileError(f"{file}: different model weights: the session was saved with a model of sha256 "
                                f"{mspec['sha256'][:16]}…, but {source!r} has {digest[:16]}…")
        kw = {"model": loaded, "denoise_steps": mspec["denoise_steps"], "context": mspec["context"],
              "device": device or "cpu"}
    try:
        world = simcore.make(spec["scene"], spec["backend"], frame_size=tuple(spec["frame_size"]),
                             max_episode_steps=spec.get("max_episode_steps"), plugin_manager=plugin_manager,
                             **kw, **spec.get("scene_options", {}))
    except SimcoreError as exc:
        raise SaveFileError(f"{file}: cannot rebuild its world {spec['scene']!r} ({spec['backend']}): {exc}") from exc
    return world


def check_compatible(world: "World", spec: dict[str, Any], file: Path | str, role: str = "world") -> None:
    """Raise SaveFileError unless a saved ``spec`` can be restored into ``world``."""
    problems = []
    if spec["scene"] != world.scene_id:
        problems.append(f"scene {spec['scene']!r}, not {world.scene_id!r}")
    if spec["backend"] != world.backend:
        problems.append(f"backend {spec['backend']!r}, not {world.backend!r}")
    if tuple(spec["frame_size"]) != tuple(world.frame_size):
        problems.append(f"frame size {tuple(spec['frame_size'])}, not {tuple(world.frame_size)}")
    if generator_of(world) is not None and spec.get("model"):
        have = weights_hash(generator_of(world).model)
        if have != spec["model"]["sha256"]:
            problems.append(f"model weights sha256 {spec['model']['sha256'][:16]}…, not this world's {have[:16]}…")
    if problems:
        raise SaveFileError(f"{file}: cannot be loaded into this session's {role}: it holds " + "; ".join(problems))


def restore_world(world: "World", snapshot: dict[str, Any]) -> None:
    """``world.restore(snapshot)``, also into a model World that was never reset."""
    _ensure_rollout(world)
    world.restore(snapshot)


# ---------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------


def world_entry(world: "World", seed: int | None, actions: list | None) -> dict[str, Any]:
    if world.state is None:
        raise SaveFileError("cannot save a world that was never reset (call reset() first)")
    return {"spec": world_spec(world), "snapshot": world.snapshot(), "seed": seed,
            "actions": None if actions is None else [_plain_action(a) for a in actions]}


def _plain_action(a: Any) -> Any:
    if isinstance(a, (np.integer, np.floating, np.bool_)):
        return a.item()
    return a


def session_payload(target: "World | Session") -> dict[str, Any]:
    """The session tree that :func:`save_session` writes (snapshots, not yet encoded)."""
    from simcore.loop import Session
    from simcore.world import World

    if isinstance(target, World):
        worlds = {"world": world_entry(target, getattr(target, "np_random_seed", None)
                                        if target.state is not None else None, None)}
        session = None
    elif isinstance(target, Session):
        worlds, session = target.save_state()
    else:
        raise SaveFileError(f"save_session takes a World or a Session, got {type(target).__name__}")
    import torch

    import simcore

    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "simcore": simcore.__version__,
            "torch": torch.__version__, "worlds": worlds, "session": session}


def save_session(target: "World | Session", path: str | os.PathLike) -> Path:
    """Write a World or a whole Session to ``path`` (one .simsave file, written
    atomically: a crash mid-write leaves the previous file intact). Returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, "torch.Tensor"] = {}
    try:
        tree = encode_tree(session_payload(target), tensors)
    except SaveFileError as exc:
        raise SaveFileError(f"{path}: {exc}") from exc
    meta = {"format": FORMAT, "version": VERSION, "session": json.dumps(tree, allow_nan=False)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SaveFileError(f"{path}: cannot write the session file: {exc}") from exc
    return path


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Read and decode a .simsave file; every failure names the file and the problem."""
    from simcore.checkpoint import read_checked

    path = Path(path)
    if not path.is_file():
        raise SaveFileError(f"{path}: no such session file")
    meta, tensors = read_checked(path, fmt=FORMAT, version=VERSION, error=SaveFileError,
                                 what="simcore session file", kind="session format",
                                 noun="session file")
    try:
        payload = decode_tree(json.loads(meta["session"]), tensors)
        _check_payload(payload)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SaveFileError(f"{path}: corrupt session data ({what})") from exc
    return payload


def _check_payload(payload: dict[str, Any]) -> None:
    """Raise KeyError naming the first entry a decoded session lacks."""
    worlds = payload["worlds"]
    if "world" not in worlds:
        raise KeyError("worlds/world")
    for role, entry in worlds.items():
        for key in ("spec", "snapshot", "seed", "actions"):
            if key not in entry:
                raise KeyError(f"worlds/{role}/{key}")
        for key in ("scene", "backend", "frame_size"):
            if key not in entry["spec"]:
                raise KeyError(f"worlds/{role}/spec/{key}")
        for key in ("state", "rng", "t", "frame"):
            if key not in entry["snapshot"]:
                raise KeyError(f"worlds/{role}/snapshot/{key}")


def load_session(path: str | os.PathLike, *, plugin_manager=None, model=None, device: str | None = None,
                 **session_kwargs: Any) -> "Session":
    """Rebuild a saved session (from a Session or a World) as a :class:`Session` whose
    worlds are at the saved moment: ``session.world.step(a)`` continues it, and
    ``session.run()`` resumes the loop without resetting. ``model`` overrides where the
    model is loaded from (its weights hash must still match); ``session_kwargs`` go to
    ``Session`` (policy, config, max_steps, realtime, ...)."""
    from simcore.loop import Session

    path = Path(path)
    payload = read_payload(path)
    worlds = {}
    for role, entry in payload["worlds"].items():
        world = _build_world(entry["spec"], path, plugin_manager=plugin_manager, model=model, device=device)
        try:
            restore_world(world, entry["snapshot"])
        except (SimcoreError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SaveFileError(f"{path}: its {role} snapshot does not fit the rebuilt world: {exc}") from exc
        worlds[role] = world
    sess = payload.get("session") or {}
    main = payload["worlds"]["world"]
    kwargs = {"seed": sess.get("seed", main["seed"]), "options": sess.get("options"), **session_kwargs}
    if "compare" in worlds:
        kwargs.setdefault("compare", worlds["compare"])
    session = Session(worlds["world"], **kwargs)
    session.restore_saved(payload, worlds, source=path)
    return session
