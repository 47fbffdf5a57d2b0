"""The world model: a convolutional autoencoder and a spacetime-patch diffusion
transformer (DiT) over its latents, conditioned per frame on noise level, action,
scene and plugin-supplied vectors. One file, banner sections, shape comments.

    frames (B, T, 3, H, W) in [-1, 1]
      └─ Autoencoder.encode ─▶ latents (B, T, C, h, w), h = H / factor
           └─ patchify (1, p, p) ─▶ tokens (B, T, N, D), N = (h/p)·(w/p)
                └─ DiT blocks (block-causal attention, RoPE over t, y, x,
                   adaLN-Zero from cond (B, T, D)) ─▶ velocity (B, T, C, h, w)

Training is rectified flow with an independent noise level per frame (diffusion
forcing): x_τ = (1-τ)·x0 + τ·ε, the model predicts v = ε - x0. Rollout
(``simcore.rollout``) denoises one new frame at a time from τ=1 to 0 while the
clean context frames' keys/values sit in a cache.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from simcore import kernels

# ---------------------------------------------------------------------------
# Configs and size registry
# ---------------------------------------------------------------------------


@dataclass
class AEConfig:
    latent_channels: int = 4
    base_channels: int = 32
    factor: int = 4  # spatial downsampling, 4 or 8
    blocks_per_level: int = 1


@dataclass
class DiTConfig:
    patch: int = 2  # spatial patch size; temporal patch is 1 (one frame per token row)
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    window: int = 8  # context frames kept in the rollout cache (training clips are window + 1)
    # What the output layer predicts. "v": the flow velocity ε - x0 (rectified flow).
    # "x0": the clean latent itself; the velocity the sampler needs is (x_τ - x0)/τ. x0 is
    # easy where τ is small and a plain regression where τ = 1, so a 1–2 step sampler holds.
    target: str = "v"
    # x0 predicted as the previous frame's clean latent plus the output (target "x0" only):
    # the zero-initialised output layer starts as "copy the last frame", the baseline every
    # world model must beat, and the network spends its capacity on what changes.
    residual: bool = False
    # The action also added to every token of its frame (besides adaLN): a local effect
    # (the paddle moving) then needs no detour through a per-frame global modulation.
    action_tokens: bool = False


@dataclass
class ModelConfig:
    frame_size: tuple[int, int] = (64, 64)
    ae: AEConfig = field(default_factory=AEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    scenes: tuple[str, ...] = ()  # scene ids this model knows (index = scene embedding row)
    num_actions: int = 1  # largest discrete action space among its scenes
    cond_dims: dict[str, int] = field(default_factory=dict)  # plugin conditioning name -> size
    ctx_noise: float = 0.02  # noise level given to context frames at rollout (and trained around)
    prompt_frames: int = 3  # frames the simulator supplies before the model takes over
    sample_steps: int = 4  # Euler steps per dreamed frame unless a caller asks for another count
    guidance: float = 1.0  # action guidance at sampling (> 1 for models trained with action dropout; 1: off)
    latent_clip: float = 6.0  # generated latents are clamped to ±this (unit-scaled latents), against blow-up

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        d["scenes"] = list(self.scenes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        ae, dit = AEConfig(**d.pop("ae", {})), DiTConfig(**d.pop("dit", {}))
        d["frame_size"] = tuple(d.get("frame_size", (64, 64)))
        d["scenes"] = tuple(d.get("scenes", ()))
        return cls(ae=ae, dit=dit, **d)


#: named sizes: tiny for tests, small for CPU training, base for a GPU
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"ae": {"latent_channels": 4, "base_channels": 8, "factor": 4},
             "dit": {"dim": 32, "depth": 2, "heads": 2, "window": 4}},
    "small": {"ae": {"latent_channels": 4, "base_channels": 32, "factor": 4},
              "dit": {"dim": 128, "depth": 4, "heads": 4, "window": 8}},
    "base": {"ae": {"latent_channels": 4, "base_channels": 64, "factor": 4},
             "dit": {"dim": 384, "depth": 8, "heads": 6, "window": 16}},
}


def config_for(size: str, **overrides: Any) -> ModelConfig:
    """A ModelConfig from the size registry, with top-level fields overridden."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    spec = SIZES[size]
    return ModelConfig(ae=AEConfig(**spec["ae"]), dit=DiTConfig(**spec["dit"]), **overrides)


# ---------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, ch), ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, ch), ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Autoencoder(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] <-> latents (B, C, H/f, W/f).

    Latents are divided by ``latent_scale`` (measured on data after AE training) so
    the DiT sees roughly unit variance.
    """

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        levels = int(round(math.log2(cfg.factor)))
        if 2**levels != cfg.factor:
            raise ValueError(f"autoencoder factor must be a power of two, got {cfg.factor}")
        chans = [cfg.base_channels * (2**i) for i in range(levels + 1)]
        enc: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, padding=1)]
        for i in range(levels):
            enc += [ResBlock(chans[i]) for _ in range(cfg.blocks_per_level)]
            enc.append(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
        enc += [ResBlock(chans[-1]), nn.GroupNorm(min(8, chans[-1]), chans[-1]), nn.SiLU(),
                nn.Conv2d(chans[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chans[-1], 3, padding=1), ResBlock(chans[-1])]
        for i in reversed(range(levels)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i + 1], chans[i], 3, padding=1)]
            dec += [ResBlock(chans[i]) for _ in range(cfg.blocks_per_level)]
        dec += [nn.GroupNorm(min(8, chans[0]), chans[0]), nn.SiLU(), nn.Conv2d(chans[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_scale", torch.ones(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) / self.latent_scale  # (B, C, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z * self.latent_scale)  # (B, 3, H, W), roughly [-1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# ---------------------------------------------------------------------------
# Rotary positions over (t, y, x)
# ---------------------------------------------------------------------------


def rope_angles(head_dim: int, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor, base: float = 100.0):
    """cos/sin tables (L, head_dim/2) for positions (L,) on three axes.

    The head dimension is split into three even parts (time, row, column); each gets
    standard RoPE frequencies over its own coordinate.
    """
    half = head_dim // 2
    parts = [half - 2 * (half // 3), half // 3, half // 3]  # pairs per axis: t gets the remainder
    angles = []
    for n, pos in zip(parts, (t, y, x)):
        freqs = base ** (-torch.arange(n, dtype=torch.float32, device=pos.device) / max(n, 1))
        angles.append(pos.float()[:, None] * freqs[None, :])
    ang = torch.cat(angles, dim=1)  # (L, half)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :half], x[..., half:]) of x (..., L, head_dim); the angles
    (fp32) are cast to x's dtype so a bf16/fp16 model stays in its precision."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# ---------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------


def timestep_embedding(tau: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of noise levels τ in [0, 1]: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=tau.device) / half)
    args = tau.float()[..., None] * 1000.0 * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, N, D), shift/scale (B, T, D) applied per frame."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor):
        """x (B, L, D) -> q, k, v each (B, heads, L, head_dim)."""
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]


def _kernel_path(x: torch.Tensor, c: torch.Tensor) -> bool:
    """True when a block may use simcore.kernels: no autograd is needed (inference) and a
    native path exists for the tokens' device and dtype (CPU kernels are fp32)."""
    if torch.is_grad_enabled() and (x.requires_grad or c.requires_grad):
        return False
    path = kernels.active_path(x.device)
    return path != "reference" and (path != "compiled-cpu" or x.dtype == torch.float32)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from per-frame cond."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, rope, *, causal=False, mask=None, cache=None, fast=None):
        """x (B, T, N, D) tokens, c (B, T, D) cond.

        rope: (cos, sin) for the query positions. causal: block-causal over the T frames
        (a token sees its own and earlier frames) instead of every token seeing every
        other; ``mask`` is that (T·N, T·N) bool mask for the SDPA path, when the caller
        built it once for all blocks. cache: {"k", "v": (B, H, L, hd)} keys (already
        rotated to their positions) and values of context tokens; with a cache, queries
        see the cache plus themselves. fast: use simcore.kernels (default: decided here).
        Returns (x, (k, v)) with this call's un-rotated keys/values.
        """
        b, t, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # each (B, T, D)
        # Inference (nothing needs autograd) goes through simcore.kernels: fused adaLN and
        # the native patch attention where a native path exists for this device/dtype.
        # Training keeps the differentiable torch ops below.
        fast = _kernel_path(x, c) if fast is None else fast
        if fast:
            h = kernels.ada_layernorm(x, shift1, scale1, eps=self.norm1.eps).reshape(b, t * n, d)
        else:
            h = modulate(self.norm1(x), shift1, scale1).reshape(b, t * n, d)
        q, k, v = self.attn.qkv_heads(h)  # (B, H, T·N, hd)
        cos, sin = rope
        qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if fast:
            # keys/values = cache then this call's (the CPU kernel reads the pair in place)
            keys, vals = ((cache["k"], kr), (cache["v"], v)) if cache is not None else (kr, v)
            a = kernels.patch_attention(qr, keys, vals, frame_len=n, causal=causal)
        else:
            if cache is not None:
                kr = torch.cat([cache["k"], kr], dim=2)
                vv = torch.cat([cache["v"], v], dim=2)
            else:
                vv = v
            if causal and mask is None:
                mask = kernels.frame_mask(t * n, t * n, n, device=x.device)
            a = F.scaled_dot_product_attention(qr, kr, vv, attn_mask=mask if causal else None)  # (B, H, T·N, hd)
        a = a.transpose(1, 2).reshape(b, t, n, d)
        x = x + gate1[:, :, None] * self.attn.proj(a)
        if fast:
            x = x + gate2[:, :, None] * self.mlp(kernels.ada_layernorm(x, shift2, scale2, eps=self.norm2.eps))
        else:
            x = x + gate2[:, :, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, (k, v)


class DiT(nn.Module):
    """Spacetime-patch diffusion transformer over latent frames."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dit, cfg.dit.patch
        c = cfg.ae.latent_channels
        unit = cfg.ae.factor * p
        if d.target not in ("v", "x0"):
            raise ValueError(f"DiT target must be 'v' or 'x0', got {d.target!r}")
        if d.residual and d.target != "x0":
            raise ValueError("a residual DiT predicts x0 as an offset from the previous frame: it needs target 'x0'")
        if any(s % unit for s in cfg.frame_size):
            raise ValueError(f"frame size {cfg.frame_size[0]}x{cfg.frame_size[1]} does not divide into {p}x{p} "
                             f"patches of a factor-{cfg.ae.factor} latent (both sides must be multiples of {unit})")
        h, w = (s // cfg.ae.factor for s in cfg.frame_size)
        self.grid = (h // p, w // p)
        self.patch_dim = c * p * p
        self.embed = nn.Linear(self.patch_dim, d.dim)
        self.t_embed = nn.Sequential(nn.Linear(d.dim, d.dim), nn.SiLU(), nn.Linear(d.dim, d.dim))
        self.action_embed = nn.Embedding(cfg.num_actions + 1, d.dim)  # row 0 = "no action" (first frame)
        self.action_tok = nn.Embedding(cfg.num_actions + 1, d.dim) if d.action_tokens else None
        self.scene_embed = nn.Embedding(max(len(cfg.scenes), 1), d.dim)
        self.cond_embed = nn.ModuleDict({k: nn.Linear(n, d.dim) for k, n in sorted(cfg.cond_dims.items())})
        self.blocks = nn.ModuleList([Block(d.dim, d.heads, d.mlp_ratio) for _ in range(d.depth)])
        self.final_norm = nn.LayerNorm(d.dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d.dim, 2 * d.dim))
        self.out = nn.Linear(d.dim, self.patch_dim)
        self.head_dim = d.dim // d.heads
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        nn.init.zeros_(self.final_ada[-1].weight)
        nn.init.zeros_(self.final_ada[-1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # -- patches ------------------------------------------------------------------
    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T, N, C·p·p)."""
        b, t, c, h, w = z.shape
        p = self.cfg.dit.patch
        z = z.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(b, t, (h // p) * (w // p), c * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C·p·p) -> (B, T, C, h, w)."""
        b, t, n, _ = x.shape
        p, c = self.cfg.dit.patch, self.cfg.ae.latent_channels
        gh, gw = self.grid
        x = x.reshape(b, t, gh, gw, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, t, c, gh * p, gw * p)

    # -- conditioning and positions -----------------------------------------------
    def cond(self, tau, actions, scene, extra: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-frame conditioning (B, T, D) from noise levels tau (B, T), actions (B, T)
        (0 = none, a+1 = action a), scene index (B,), extra vectors name -> (B, T, n)."""
        dtype = self.action_embed.weight.dtype  # fp32 here, bf16/fp16 when the model is cast for a GPU
        c = self.t_embed(timestep_embedding(tau, self.cfg.dit.dim).to(dtype))
        c = c + self.action_embed(actions) + self.scene_embed(scene)[:, None]
        for name, layer in self.cond_embed.items():
            if extra is None or name not in extra:
                raise KeyError(f"the model needs conditioning {name!r}; got {sorted(extra or {})}")
            c = c + layer(extra[name].to(dtype))
        return c

    def rope(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (L, hd/2) for the tokens of frames at time positions ``frames`` (T,)."""
        gh, gw = self.grid
        dev = frames.device
        yy, xx = torch.meshgrid(torch.arange(gh, device=dev), torch.arange(gw, device=dev), indexing="ij")
        t = frames[:, None].expand(-1, gh * gw).reshape(-1)
        y = yy.reshape(1, -1).expand(len(frames), -1).reshape(-1)
        x = xx.reshape(1, -1).expand(len(frames), -1).reshape(-1)
        return rope_angles(self.head_dim, t, y, x)

    def block_causal_mask(self, t: int, device=None) -> torch.Tensor:
        """(T·N, T·N) bool: a token attends to every token of its own and earlier frames."""
        n = self.grid[0] * self.grid[1]
        return kernels.frame_mask(t * n, t * n, n, device=device)

    # -- forward ----------------------------------------------------------------------
    def forward(self, z, tau, actions, scene, extra=None, *, positions=None, cache=None, return_kv=False,
                prev=None, output="v"):
        """Velocity (or clean-latent) prediction.

        z (B, T, C, h, w) noisy latents; tau (B, T) their noise levels; actions (B, T);
        scene (B,); positions (T,) time positions (default 0..T-1).
        cache: per-block list of {"k", "v"} context (then no mask: the T frames
        here must be one frame, or frames that may all see each other).
        prev (B, T, C, h, w): each frame's previous clean latent (residual models; zeros
        when not given). output: "v" (what the sampler integrates) or "x0".
        Returns v or x0 (B, T, C, h, w) and, if ``return_kv``, the per-block (k, v).
        """
        b, t = z.shape[:2]
        if positions is None:
            positions = torch.arange(t, device=z.device)
        x = self.embed(self.patchify(z))  # (B, T, N, D)
        if self.action_tok is not None:
            x = x + self.action_tok(actions)[:, :, None]  # (B, T, 1, D): every token of the frame
        c = self.cond(tau, actions, scene, extra)  # (B, T, D)
        rope = self.rope(positions)
        causal = cache is None and t > 1  # with a cache, the frame(s) here see everything
        fast = _kernel_path(x, c)  # one path decision for every block
        mask = self.block_causal_mask(t, z.device) if causal and not fast else None  # built once, SDPA path only
        kvs = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, c, rope, causal=causal, mask=mask, cache=None if cache is None else cache[i], fast=fast)
            kvs.append(kv)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        raw = self.unpatchify(self.out(modulate(self.final_norm(x), shift, scale)))  # (B, T, C, h, w)
        y = self.convert(raw, z, tau, prev, output)
        return (y, kvs) if return_kv else y

    def convert(self, raw, z, tau, prev, output: str) -> torch.Tensor:
        """The output layer's ``raw`` prediction (the model's target) as ``output``
        ("v" or "x0"), using x_τ = (1-τ)·x0 + τ·ε  ⇒  x_τ - x0 = τ·v."""
        if output not in ("v", "x0"):
            raise ValueError(f"output must be 'v' or 'x0', got {output!r}")
        d = self.cfg.dit
        t = tau.to(raw.dtype)[:, :, None, None, None]  # (B, T, 1, 1, 1)
        if d.target == "v":
            return raw if output == "v" else z - t * raw
        x0 = raw + prev.to(raw.dtype) if (d.residual and prev is not None) else raw
        return x0 if output == "x0" else (z - x0) / t.clamp_min(1e-4)


# ---------------------------------------------------------------------------
# The whole world model
# ---------------------------------------------------------------------------


class WorldModel(nn.Module):
    """Autoencoder + DiT + the bookkeeping to turn frames and actions into tensors."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ae = Autoencoder(cfg.ae)
        self.dit = DiT(cfg)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h, w = (s // self.cfg.ae.factor for s in self.cfg.frame_size)
        return (self.cfg.ae.latent_channels, h, w)

    def scene_index(self, scene_id: str) -> int:
        try:
            return self.cfg.scenes.index(scene_id)
        except ValueError:
            raise KeyError(f"this model was not trained on {scene_id!r}; it knows {list(self.cfg.scenes)}") from None

    @staticmethod
    def to_unit(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
        return frames.movedim(-1, -3).float() / 127.5 - 1.0

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
        return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) -> latents (B, T, C, h, w)."""
        b, t = frames.shape[:2]
        z = self.ae.encode(self.to_unit(frames.reshape(b * t, *frames.shape[2:])))
        return z.reshape(b, t, *z.shape[1:])

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, T, C, h, w) -> uint8 (B, T, H, W, 3)."""
        b, t = z.shape[:2]
        x = self.ae.decode(z.reshape(b * t, *z.shape[2:]))  # (B·T, 3, H, W)
        return self.to_uint8(x).reshape(b, t, x.shape[2], x.shape[3], 3)

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"autoencoder": count(self.ae), "dit": count(self.dit), "total": count(self)}
