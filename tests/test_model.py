"""The world model on CPU with tiny configs: patches, frame sizes, block-causal
attention, cached rollout vs the uncached reference, rollout snapshots,
conditioning, and safetensors checkpoints (round trip and clear load errors)."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch

import simcore.checkpoint
import simcore.latent_cache
import simcore.train
from simcore.checkpoint import CheckpointError, load_card, load_model, save_model
from simcore.model import WorldModel, config_for
from simcore.rollout import Rollout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COND = {"scene_params": 4}


def randomized(cfg, seed: int = 0, std: float = 0.05) -> WorldModel:
    """A model whose zero-initialized (adaLN-Zero, output) layers are randomized, so the
    DiT's output depends on its inputs."""
    torch.manual_seed(seed)
    model = WorldModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model


def dit_inputs(model: WorldModel, b: int = 1, t: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, *model.latent_shape, generator=g)
    tau = torch.rand(b, t, generator=g)
    actions = torch.randint(0, model.cfg.num_actions + 1, (b, t), generator=g)
    scene = torch.zeros(b, dtype=torch.long)
    extra = {k: torch.rand(b, t, n, generator=g) for k, n in model.cfg.cond_dims.items()} or None
    return z, tau, actions, scene, extra


# ---------------------------------------------------------------------------
# patches and frame sizes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame_size", [(64, 64), (32, 48)])
def test_patchify_unpatchify_round_trip(frame_size):
    model = WorldModel(config_for("tiny", frame_size=frame_size))
    dit, p = model.dit, model.cfg.dit.patch
    c, h, w = model.latent_shape
    assert (h, w) == (frame_size[0] // 4, frame_size[1] // 4)
    z = torch.randn(2, 3, c, h, w)
    tokens = dit.patchify(z)
    assert tokens.shape == (2, 3, (h // p) * (w // p), c * p * p)
    assert dit.grid == (h // p, w // p)
    # token (row 0, col 1) of frame 2 holds exactly that p x p latent patch, channels first
    assert torch.equal(tokens[1, 2, 1], z[1, 2, :, :p, p:2 * p].reshape(-1))
    # token (row 1, col 0) is the first patch of the second patch row
    assert torch.equal(tokens[0, 0, dit.grid[1]], z[0, 0, :, p:2 * p, :p].reshape(-1))
    assert torch.equal(dit.unpatchify(tokens), z)


def test_non_square_frame_size_runs_end_to_end():
    cfg = config_for("tiny", frame_size=(32, 48), cond_dims=COND, num_actions=3)
    model = randomized(cfg)
    frames = torch.randint(0, 256, (1, 2, 32, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        z = model.encode_frames(frames)
        assert z.shape == (1, 2, 4, 8, 12) and z.shape[2:] == model.latent_shape
        zz, tau, actions, scene, extra = dit_inputs(model, t=2)
        v = model.dit(z, tau, actions, scene, extra)
        assert v.shape == z.shape and torch.isfinite(v).all()
        out = model.decode_latents(z)
        assert out.shape == (1, 2, 32, 48, 3) and out.dtype == torch.uint8
        roll = Rollout(model, seed=0)
        roll.prompt(z, [[0, 1]], {"scene_params": torch.zeros(4)})
        nxt = roll.generate(2, {"scene_params": torch.zeros(4)})
    assert nxt.shape == (1, 4, 8, 12)


@pytest.mark.parametrize("frame_size", [(36, 48), (64, 60), (40, 40)])
def test_frame_size_that_does_not_divide_into_patches_raises(frame_size):
    # latent 9x12, 16x15, 10x10 with patch 2: only (40, 40) at factor 4 divides, so use
    # factor 8 there (latent 5x5)
    cfg = config_for("tiny", frame_size=frame_size)
    if frame_size == (40, 40):
        cfg.ae.factor = 8
    with pytest.raises(ValueError, match="patch"):
        WorldModel(cfg)


def test_frame_size_not_divisible_by_autoencoder_factor_raises():
    with pytest.raises(ValueError):
        WorldModel(config_for("tiny", frame_size=(34, 48)))


# ---------------------------------------------------------------------------
# block-causal attention
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["latents", "noise_level", "action"])
@pytest.mark.parametrize("t", [1, 2])
def test_block_causal_attention(what, t):
    # std 0.2: strong enough attention that every later frame visibly depends on frame t
    model = randomized(config_for("tiny", cond_dims=COND, num_actions=3), std=0.2)
    z, tau, actions, scene, extra = dit_inputs(model, b=2, t=4)
    z2, tau2, actions2 = z.clone(), tau.clone(), actions.clone()
    if what == "latents":
        z2[:, t] += torch.randn(z2[:, t].shape, generator=torch.Generator().manual_seed(9))
    elif what == "noise_level":
        tau2[:, t] = 1.0 - tau2[:, t]
    else:
        actions2[:, t] = (actions2[:, t] + 1) % (model.cfg.num_actions + 1)
    with torch.no_grad():
        v1 = model.dit(z, tau, actions, scene, extra)
        v2 = model.dit(z2, tau2, actions2, scene, extra)
    assert v1.abs().max() > 1e-3  # the randomized model does depend on its input
    assert torch.equal(v1[:, :t], v2[:, :t]), "an earlier frame saw a later one"
    for f in range(t, 4):  # the perturbed frame and every later frame change
        assert (v1[:, f] - v2[:, f]).abs().max() > 1e-2, f"frame {f} did not see frame {t}"


# ---------------------------------------------------------------------------
# rollout: cached vs uncached, bounded cache, snapshots
# ---------------------------------------------------------------------------


def _prompt(model, seed=4, t=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, t, *model.latent_shape, generator=g)


def test_cached_rollout_matches_uncached_within_window():
    model = randomized(config_for("tiny", cond_dims=COND, num_actions=3))
    W = model.cfg.dit.window
    ex = {"scene_params": torch.tensor([0.1, 0.5, 0.3, 0.6])}
    z0 = _prompt(model)
    actions = [1, 3, 2][: W - 1]  # prompt 2 + W-1 generated: never more than W frames in context
    outs = {}
    for use_cache in (True, False):
        roll = Rollout(model, seed=11, use_cache=use_cache)
        roll.prompt(z0, [[0, 2]], ex)
        outs[use_cache] = [roll.generate(a, ex) for a in actions]
    assert len(outs[True]) == W - 1
    for a, b in zip(outs[True], outs[False]):
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # not trivially equal: another seed gives other frames
    other = Rollout(model, seed=12)
    other.prompt(z0, [[0, 2]], ex)
    assert (other.generate(actions[0], ex) - outs[True][0]).abs().max() > 1e-3


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("dit", [{}, {"target": "x0", "residual": True, "action_tokens": True}], ids=["v", "x0-res-tok"])
def test_action_guidance_extrapolates_from_the_action_free_prediction(use_cache, dit):
    """One Euler step from τ=1 is linear in the velocity, so with guidance w the frame is
    z_u + w·(z_c − z_u): w=1 the plain conditional frame, w=0 the frame without the action."""
    cfg = config_for("tiny", cond_dims=COND, num_actions=3)
    for k, v in dit.items():
        setattr(cfg.dit, k, v)
    model = randomized(cfg)
    ex = {"scene_params": torch.tensor([0.1, 0.5, 0.3, 0.6])}
    z0 = _prompt(model)

    def frame(w: float, action: int = 2) -> torch.Tensor:
        roll = Rollout(model, steps=1, seed=5, use_cache=use_cache, guidance=w)
        roll.prompt(z0, [[0, 2]], ex)
        return roll.generate(action, ex)

    cond, uncond = frame(1.0), frame(1.0, action=0)
    assert (cond - uncond).abs().max() > 1e-3  # the action matters in this model
    torch.testing.assert_close(frame(0.0), uncond, atol=1e-4, rtol=0)
    clip = model.cfg.latent_clip
    torch.testing.assert_close(frame(2.5), (uncond + 2.5 * (cond - uncond)).clamp(-clip, clip), atol=1e-4, rtol=0)


def test_residual_rollout_snapshot_keeps_the_previous_frame():
    cfg = config_for("tiny", cond_dims=COND, num_actions=3)
    cfg.dit.target, cfg.dit.residual = "x0", True
    model = randomized(cfg)
    ex = {"scene_params": torch.tensor([0.1, 0.5, 0.3, 0.6])}
    roll = Rollout(model, seed=3)
    roll.prompt(_prompt(model), [[0, 2]], ex)
    snap = roll.state_dict()
    first = [roll.generate(a, ex) for a in (1, 2, 3)]
    roll.load_state_dict(snap)
    torch.testing.assert_close(roll.prev, snap["prev"])
    again = [roll.generate(a, ex) for a in (1, 2, 3)]
    for a, b in zip(first, again):
        assert torch.equal(a, b)


def test_bf16_model_rolls_out_close_to_fp32():
    """A model cast to bf16 (as on a GPU) runs end to end: conditioning and RoPE follow the
    weights' dtype instead of promoting q/k to fp32 (which SDPA rejects)."""
    model = randomized(config_for("tiny", cond_dims=COND, num_actions=3))
    ex = {"scene_params": torch.tensor([0.1, 0.5, 0.3, 0.6])}
    z0 = _prompt(model)
    outs = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = randomized(config_for("tiny", cond_dims=COND, num_actions=3)).to(dtype)
        roll = Rollout(m, seed=11)
        roll.prompt(z0.to(dtype), [[0, 2]], ex)
        z = roll.generate(1, ex)
        assert z.dtype == dtype
        assert m.decode_latents(z[:, None]).dtype == torch.uint8
        outs[dtype] = z.float()
    scale = outs[torch.float32].abs().max()
    assert scale > 1e-3
    assert (outs[torch.bfloat16] - outs[torch.float32]).abs().max() < 0.05 * scale


def test_cached_rollout_cost_is_bounded():
    model = randomized(config_for("tiny", cond_dims=COND, num_actions=3))
    W = model.cfg.dit.window
    n_tokens = model.dit.grid[0] * model.dit.grid[1]
    ex = {"scene_params": torch.zeros(4)}
    roll = Rollout(model, seed=0, use_cache=True)
    k_shape, v_shape = roll.k.shape, roll.v.shape
    context_tokens = []
    hook = model.dit.register_forward_pre_hook(
        lambda mod, args, kwargs: context_tokens.append(
            0 if kwargs.get("cache") is None else kwargs["cache"][0]["k"].shape[2]), with_kwargs=True)
    try:
        roll.prompt(_prompt(model), [[0, 1]], ex)
        for i in range(3 * W):
            z = roll.generate(1 + i % 3, ex)
            assert torch.isfinite(z).all()
            assert roll.k.shape == k_shape and roll.v.shape == v_shape
    finally:
        hook.remove()
    assert roll.count == 2 + 3 * W
    assert len(roll._live_slots()) == W
    assert sorted(roll.slot_frame.tolist()) == list(range(roll.count - W, roll.count))
    assert max(context_tokens) == W * n_tokens  # attention never sees more than the window


@pytest.mark.parametrize("use_cache", [True, False])
def test_rollout_snapshot_replays_bit_identically(use_cache):
    model = randomized(config_for("tiny", cond_dims=COND, num_actions=3))
    W = model.cfg.dit.window
    ex = {"scene_params": torch.tensor([0.2, 0.1, 0.0, 0.4])}
    roll = Rollout(model, seed=5, use_cache=use_cache)
    roll.prompt(_prompt(model), [[0, 1]], ex)
    roll.generate(2, ex)
    snap = roll.state_dict()
    actions = [1, 2, 3, 3, 1, 2, 1][: W + 3]  # past the window: eviction included
    first = [roll.generate(a, ex) for a in actions]
    roll.load_state_dict(snap)
    second = [roll.generate(a, ex) for a in actions]
    fresh = Rollout(model, seed=999, use_cache=use_cache)  # a new rollout, other seed, same snapshot
    fresh.load_state_dict(snap)
    third = [fresh.generate(a, ex) for a in actions]
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(first[0], first[1])


# ---------------------------------------------------------------------------
# conditioning
# ---------------------------------------------------------------------------


def test_missing_conditioning_raises_key_error_naming_it():
    model = randomized(config_for("tiny", cond_dims=COND))
    z, tau, actions, scene, _ = dit_inputs(model)
    with pytest.raises(KeyError, match="scene_params"):
        model.dit(z, tau, actions, scene, None)
    with pytest.raises(KeyError, match="scene_params"):
        model.dit(z, tau, actions, scene, {"other": torch.zeros(1, 4, 4)})
    roll = Rollout(model)
    with pytest.raises(KeyError, match="scene_params"):
        roll.append(z[:, 0], 0)


def test_conditioning_values_change_the_output():
    model = randomized(config_for("tiny", cond_dims=COND))
    z, tau, actions, scene, _ = dit_inputs(model)
    with torch.no_grad():
        a = model.dit(z, tau, actions, scene, {"scene_params": torch.zeros(1, 4, 4)})
        a2 = model.dit(z, tau, actions, scene, {"scene_params": torch.zeros(1, 4, 4)})
        b = model.dit(z, tau, actions, scene, {"scene_params": torch.full((1, 4, 4), 0.5)})
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-3


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    cfg = config_for("tiny", frame_size=(32, 48), cond_dims=COND, num_actions=3,
                     scenes=("simcore/BouncingBalls-v0", "simcore/Pong-v0"))
    model = randomized(cfg, seed=3)
    model.ae.latent_scale.fill_(2.5)
    out = save_model(model, tmp_path / "m", card={"note": "hello"})
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.tmp").exists()
    loaded = load_model(out)
    assert not loaded.training
    assert loaded.cfg.to_dict() == cfg.to_dict()
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert float(loaded.ae.latent_scale) == 2.5
    z, tau, actions, scene, extra = dit_inputs(model, t=3)
    with torch.no_grad():
        assert torch.equal(model.dit(z, tau, actions, scene, extra), loaded.dit(z, tau, actions, scene, extra))
        assert torch.equal(model.decode_latents(z), loaded.decode_latents(z))
    # a file path works too, and the card records the config
    assert load_model(out / "model.safetensors").cfg.to_dict() == cfg.to_dict()
    card = load_card(out)
    assert card["note"] == "hello" and card["config"] == cfg.to_dict()


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(CheckpointError, match="no_such_model"):
        load_model(missing)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="empty_dir"):
        load_model(tmp_path / "empty_dir")


@pytest.fixture
def saved(tmp_path) -> Path:
    save_model(WorldModel(config_for("tiny")), tmp_path / "good")
    return tmp_path / "good" / "model.safetensors"


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.001])
def test_load_truncated_file(saved, tmp_path, keep):
    data = saved.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match="bad.safetensors.*(truncated|corrupt)"):
        load_model(bad)


def test_load_random_bytes(tmp_path):
    bad = tmp_path / "noise" / "model.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="noise/model.safetensors.*not a readable safetensors"):
        load_model(bad.parent)


def test_load_safetensors_of_another_format(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path))  # no metadata at all
    with pytest.raises(CheckpointError, match="other.safetensors.*not a simcore world model"):
        load_model(path)
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a simcore world model"):
        load_model(path)
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": simcore.checkpoint.FORMAT,
                                                                  "version": "999", "config": "{}"})
    with pytest.raises(CheckpointError, match="version"):
        load_model(path)


def test_load_mismatched_weights(tmp_path):
    from safetensors.torch import save_file

    tiny = WorldModel(config_for("tiny"))
    other_cfg = config_for("tiny", frame_size=(32, 48), num_actions=5)  # bigger action table
    other_cfg.dit.dim = 64
    path = tmp_path / "mismatch.safetensors"
    meta = {"format": simcore.checkpoint.FORMAT, "version": simcore.checkpoint.VERSION,
            "config": json.dumps(other_cfg.to_dict())}
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="mismatch.safetensors.*do not match.*wrong shapes"):
        load_model(path)
    partial = {k: v.contiguous() for k, v in tiny.state_dict().items() if not k.startswith("dit.blocks.1.")}
    meta["config"] = json.dumps(tiny.cfg.to_dict())
    save_file(partial, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="missing.*dit.blocks.1"):
        load_model(path)
    bad_config = dict(meta, config="{not json")
    save_file(partial, str(path), metadata=bad_config)
    with pytest.raises(CheckpointError, match="config"):
        load_model(path)


def test_load_config_that_cannot_build_a_model(tmp_path):
    from safetensors.torch import save_file

    cfg = config_for("tiny", frame_size=(36, 48))
    path = tmp_path / "badcfg.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={
        "format": simcore.checkpoint.FORMAT, "version": simcore.checkpoint.VERSION,
        "config": json.dumps(cfg.to_dict())})
    with pytest.raises(CheckpointError, match="badcfg.safetensors"):
        load_model(path)


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


@pytest.mark.parametrize("module", [simcore.checkpoint, simcore.train, simcore.latent_cache])
def test_no_pickle_or_torch_load(module):
    """Checkpoints and train state are safetensors only (code, not docstrings, is checked)."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in UNSAFE_MODULES:
                found.append(mod)
            if mod in ("torch", "torch.serialization") and any(a.name in ("load", "save") for a in node.names):
                found.append(f"from {mod} import load/save")
        elif isinstance(node, ast.Attribute) and node.attr in ("load", "save", "loads"):
            if isinstance(node.value, ast.Name) and node.value.id in ({"torch"} | UNSAFE_MODULES):
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in UNSAFE_MODULES:
            found.append(node.id)
    assert not found, f"{module.__name__} uses {found}"
    src = Path(module.__file__).read_text()
    assert "torch.load(" not in src and "pickle.load" not in src
