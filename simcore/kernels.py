"""Native kernels behind one torch-level API, and which code path runs them.

The world model's rollout spends its time in patch attention (queries of the frame
being denoised against the KV cache of the context frames, block-causal across
frames) and in a few memory-bound ops between transformer calls. This module gives
each a torch-tensor function and picks, per call, the fastest path that can run it:

    compiled CUDA (simcore._C_cuda via simcore.kernels_cuda)   CUDA tensors
    cupy JIT of the same .cu source (simcore.kernels_cuda)      CUDA tensors, no compiled module
    compiled CPU (simcore._C: OpenMP + SIMD, fp32)               CPU float32 tensors
    torch reference (pure PyTorch, any device/dtype)             everything else

The reference is also what autograd goes through: a call where an input requires
grad (and grad mode is on) always takes it, so training keeps SDPA's backward.
``SIMCORE_FORCE_REFERENCE=1`` forces the reference everywhere, so the test suite can
run as if the extension were missing. ``active_path(device)`` and ``describe()``
report what is in use (``simcore plugins``, ``simcore bench --which``).
"""
from __future__ import annotations

import importlib
import math
import os
from typing import Any

import torch
import torch.nn.functional as F

from simcore.errors import SimcoreError

FORCE_REFERENCE_ENV = "SIMCORE_FORCE_REFERENCE"

#: path names, fastest first
PATHS = ("compiled-cuda", "cupy", "compiled-cpu", "reference")


class KernelInputError(SimcoreError, ValueError):
    """Tensors a kernel cannot take: wrong rank, shape, dtype, device or argument."""


# ---------------------------------------------------------------------------
# Which path
# ---------------------------------------------------------------------------


def forced_reference() -> bool:
    """True when $SIMCORE_FORCE_REFERENCE asks for the pure-torch path."""
    return os.environ.get(FORCE_REFERENCE_ENV, "") not in ("", "0")


def native() -> Any | None:
    """The compiled CPU module ``simcore._C``, or None (not built, or forced off)."""
    if forced_reference():
        return None
    try:
        from simcore import _C
    except ImportError:
        return None
    return _C


def cuda_kernels() -> Any | None:
    """``simcore.kernels_cuda`` when it imports and has a working backend ("compiled"
    or "cupy"), else None. Imported lazily: CPU-only installs never touch it."""
    if forced_reference():
        return None
    try:
        mod = importlib.import_module("simcore.kernels_cuda")
        backend = mod.backend()
    except Exception:  # noqa: BLE001 - absent module, no GPU, broken cupy: all mean "not available"
        return None
    return mod if backend in ("compiled", "cupy") else None


def active_path(device: str | torch.device = "cpu") -> str:
    """The path a float32 (CPU) / half-precision-capable (CUDA) call on ``device`` takes:
    one of ``PATHS``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        mod = cuda_kernels()
        if mod is None:
            return "reference"
        return "compiled-cuda" if mod.backend() == "compiled" else "cupy"
    if dev.type == "cpu" and native() is not None:
        return "compiled-cpu"
    return "reference"


def describe() -> str:
    """One line naming the active paths, for ``simcore plugins`` and bug reports."""
    mod = native()
    if mod is None:
        why = "forced by $SIMCORE_FORCE_REFERENCE" if forced_reference() else "extension not built"
        line = f"reference (pure Python/torch; {why})"
    else:
        info = mod.build_info()
        line = (f"simcore._C CPU ({info['compiler']}, openmp={'on' if info['openmp'] else 'off'}, "
                f"threads={info['max_threads']}, simd={info['simd']}, builds={'/'.join(info.get('simd_builds', []))})")
    if torch.cuda.is_available():
        line += f"; cuda: {active_path('cuda')}"
    return line


def _threads() -> int:
    """The kernels follow torch's intra-op thread count, so `torch.set_num_threads`
    (and `simcore bench --threads`) governs both sides of every comparison."""
    return torch.get_num_threads()


def _needs_autograd(*ts: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _use_cpu_native(*ts: torch.Tensor | None) -> Any | None:
    """simcore._C when every tensor is a CPU float32 tensor and no autograd is needed."""
    if any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32) for t in ts):
        return None
    if _needs_autograd(*ts):
        return None
    return native()


def _use_cuda(*ts: torch.Tensor | None) -> Any | None:
    if any(t is not None and t.device.type != "cuda" for t in ts) or _needs_autograd(*ts):
        return None
    return cuda_kernels()


def _check_tensor(name: str, t: Any, ndim: int | None = None) -> None:
    """A floating-point tensor, of ``ndim`` dimensions when given."""
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise KernelInputError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise KernelInputError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _check_same(names: str, *ts: torch.Tensor) -> None:
    # plain comparisons, no sets: this runs on every call of a ~0.1 ms kernel
    dev, dt = ts[0].device, ts[0].dtype
    for t in ts[1:]:
        if t.device != dev:
            raise KernelInputError(f"{names} must be on one device, got {[str(t.device) for t in ts]}")
        if t.dtype != dt:
            raise KernelInputError(f"{names} must share one dtype, got {[str(t.dtype) for t in ts]}")


# ---------------------------------------------------------------------------
# Patch attention
# ---------------------------------------------------------------------------


def frame_mask(lq: int, lk: int, frame_len: int, q_frame_offset: int = 0, device=None) -> torch.Tensor:
    """(Lq, Lk) bool, True = visible: query i is in frame q_frame_offset + i // frame_len,
    key j in frame j // frame_len, and a key is visible iff its frame <= the query's."""
    qf = q_frame_offset + torch.arange(lq, device=device) // frame_len
    kf = torch.arange(lk, device=device) // frame_len
    return kf[None, :] <= qf[:, None]


def patch_attention_reference(q, k, v, *, frame_len: int, q_frame_offset: int = 0, causal: bool = True,
                              scale: float | None = None) -> torch.Tensor:
    """The pure-torch definition every other path is tested against: SDPA with a bool
    mask (or none when every key is visible). Differentiable."""
    lq, lk = q.shape[2], k.shape[2]
    mask = None
    if causal and q_frame_offset < (lk - 1) // frame_len:  # the first query's frame misses some key
        mask = frame_mask(lq, lk, frame_len, q_frame_offset, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _segments(name: str, x: Any) -> tuple[torch.Tensor, ...]:
    """k or v as one tensor, or as two segments (cache, new frame) along the key axis."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise KernelInputError(f"{name} must be a tensor or a pair (cache, new) of tensors, got {len(x)} items")
        return tuple(x)
    return (x,)


def patch_attention(q: torch.Tensor, k: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                    v: torch.Tensor | tuple[torch.Tensor, torch.Tensor], *, frame_len: int, q_frame_offset: int = 0,
                    causal: bool = True, scale: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Block-causal attention over frames of patches.

    q (B, H, Lq, hd), k/v (B, H, Lk, hd) -> (B, H, Lq, hd). Query i belongs to frame
    ``q_frame_offset + i // frame_len``, key j to frame ``j // frame_len``; with
    ``causal`` a query sees the keys of its own and earlier frames, without it every
    key. Rollout: Lq = one frame, keys = cache + that frame, q_frame_offset = cached
    frames (everything visible). Training/prefill: Lq = Lk = T·N, offset 0.
    ``scale`` defaults to 1/sqrt(hd). Any strides. ``out`` (B, H, Lq, hd), optional, is
    written in place and returned (preallocated buffers for static-shape loops).

    k and v may each be a pair ``(cache, new)`` of (B, H, L1, hd) and (B, H, L2, hd)
    tensors: the keys are their concatenation, but the compiled CPU path reads both in
    place (no per-call ``torch.cat`` of the whole cache); other paths concatenate.
    """
    ks, vs = _segments("k", k), _segments("v", v)
    _check_tensor("q", q, 4)
    for i, (kt, vt) in enumerate(zip(ks, vs)):
        seg = f"[{i}]" if len(ks) > 1 else ""
        _check_tensor("k" + seg, kt, 4)
        _check_tensor("v" + seg, vt, 4)
        if kt.shape != vt.shape:
            raise KernelInputError(f"k{seg} and v{seg} must have the same shape, got {tuple(kt.shape)} and "
                                   f"{tuple(vt.shape)}")
    if len(ks) != len(vs):
        raise KernelInputError("k and v must both be tensors or both be (cache, new) pairs")
    _check_same("q, k and v", q, *ks, *vs)
    b, h, lq, hd = q.shape
    for kt in ks:
        if kt.shape[0] != b or kt.shape[1] != h or kt.shape[3] != hd:
            raise KernelInputError(f"q {tuple(q.shape)} and k/v {tuple(kt.shape)} must agree on batch, heads and "
                                   "head dim: (B, H, Lq, hd) vs (B, H, Lk, hd)")
    lk = sum(kt.shape[2] for kt in ks)
    if lq < 1 or lk < 1 or hd < 1:
        raise KernelInputError(f"need at least one query, one key and hd >= 1; got Lq={lq}, Lk={lk}, hd={hd}")
    if isinstance(frame_len, bool) or not isinstance(frame_len, int) or frame_len < 1:
        raise KernelInputError(f"frame_len must be a positive int, got {frame_len!r}")
    if isinstance(q_frame_offset, bool) or not isinstance(q_frame_offset, int) or q_frame_offset < 0:
        raise KernelInputError(f"q_frame_offset must be an int >= 0, got {q_frame_offset!r}")
    if scale is not None and not math.isfinite(float(scale)):
        raise KernelInputError(f"scale must be finite, got {scale!r}")
    scale_v = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    if out is not None:
        _check_tensor("out", out, 4)
        _check_same("q and out", q, out)
        if out.shape != q.shape:
            raise KernelInputError(f"out must have q's shape {tuple(q.shape)}, got {tuple(out.shape)}")
        if any(out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for t in (*ks, *vs)):
            raise KernelInputError("out must not share memory with k or v (they are read while out is written)")
    if b == 0 or h == 0:
        return q.new_empty(q.shape) if out is None else out
    if (mod := _use_cpu_native(q, *ks, *vs, out)) is not None:
        if out is None:
            out = torch.empty(b, h, lq, hd, dtype=q.dtype)  # (B, H, Lq, hd)
        seg2 = {}
        if len(ks) == 2:
            seg2 = {"k2": ks[1].data_ptr(), "v2": vs[1].data_ptr(), "k2_strides": list(ks[1].stride()),
                    "v2_strides": list(vs[1].stride()), "lk1": ks[0].shape[2]}
        mod.patch_attention(q.data_ptr(), ks[0].data_ptr(), vs[0].data_ptr(), out.data_ptr(), [b, h, lq, lk, hd],
                            list(q.stride()), list(ks[0].stride()), list(vs[0].stride()), list(out.stride()),
                            frame_len, q_frame_offset, bool(causal), scale_v, _threads(), **seg2)
        return out
    k1 = ks[0] if len(ks) == 1 else torch.cat(ks, dim=2)  # (B, H, Lk, hd)
    v1 = vs[0] if len(vs) == 1 else torch.cat(vs, dim=2)
    if (mod := _use_cuda(q, k1, v1)) is not None:
        return mod.patch_attention(q, k1, v1, frame_len=frame_len, q_frame_offset=q_frame_offset, causal=causal,
                                   scale=scale_v, out=out)
    res = patch_attention_reference(q, k1, v1, frame_len=frame_len, q_frame_offset=q_frame_offset, causal=causal,
                                    scale=scale_v)
    return res if out is None else out.copy_(res)


# ---------------------------------------------------------------------------
# Rollout ops
# ---------------------------------------------------------------------------


def euler_update(x: torch.Tensor, v: torch.Tensor, dt: float, v_uncond: torch.Tensor | None = None,
                 guidance: float | None = None) -> torch.Tensor:
    """In place ``x += dt · v`` (one Euler step of the flow ODE) and return x; with
    ``v_uncond`` and ``guidance`` w, the guided velocity ``v_u + w·(v − v_u)`` is used
    (classifier-free guidance combine, fused into the same pass)."""
    _check_tensor("x", x)
    _check_tensor("v", v, x.dim())
    ts = [x, v]
    if (v_uncond is None) != (guidance is None):
        raise KernelInputError("v_uncond and guidance go together: pass both (guided) or neither")
    if v_uncond is not None:
        _check_tensor("v_uncond", v_uncond, x.dim())
        ts.append(v_uncond)
    _check_same("x, v (and v_uncond)", *ts)
    for name, t in zip(("v", "v_uncond"), ts[1:]):
        if t.shape != x.shape:
            raise KernelInputError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    dt = float(dt)
    w = 1.0 if guidance is None else float(guidance)
    if not (math.isfinite(dt) and math.isfinite(w)):
        raise KernelInputError(f"dt and guidance must be finite, got dt={dt}, guidance={guidance}")
    if (mod := _use_cuda(*ts)) is not None:
        return mod.euler_update(x, v, dt, v_uncond=v_uncond, guidance=guidance)
    mod = _use_cpu_native(*ts)
    if mod is not None and all(t.is_contiguous() for t in ts):
        mod.euler_update(x.data_ptr(), v.data_ptr(), 0 if v_uncond is None else v_uncond.data_ptr(), dt, w,
                         x.numel(), _threads())
        return x
    vel = v if v_uncond is None else torch.lerp(v_uncond, v, w)  # v_u + w (v - v_u)
    return x.add_(vel, alpha=dt)


def kv_write(cache: torch.Tensor, slot: int, value: torch.Tensor) -> torch.Tensor:
    """Write one frame's keys or values into a ring slot of the KV cache, in place:
    ``cache[:, :, slot] = value``. cache (B, H, W, N, hd), value (B, H, N, hd). Evicting
    the oldest frame is writing its slot: nothing is reallocated or concatenated."""
    _check_tensor("cache", cache, 5)
    _check_tensor("value", value, 4)
    _check_same("cache and value", cache, value)
    b, h, w, n, hd = cache.shape
    if tuple(value.shape) != (b, h, n, hd):
        raise KernelInputError(f"value must be (B, H, N, hd) = {(b, h, n, hd)} for a cache {tuple(cache.shape)}, "
                               f"got {tuple(value.shape)}")
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < w:
        raise KernelInputError(f"slot must be an int in [0, {w}), got {slot!r}")
    if (mod := _use_cuda(cache, value)) is not None:
        return mod.kv_write(cache, slot, value)
    mod = _use_cpu_native(cache, value)
    if mod is not None and cache.numel() > 0:
        s = cache.stride()
        dst = cache.data_ptr() + slot * s[2] * cache.element_size()
        mod.strided_copy4(dst, [s[0], s[1], s[3], s[4]], value.data_ptr(), list(value.stride()), [b, h, n, hd],
                          _threads())
        return cache
    cache[:, :, slot] = value
    return cache


def ada_layernorm_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                            eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm without affine over the last dim, then ``·(1 + scale) + shift``."""
    y = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return y * (1 + scale.unsqueeze(-2)) + shift.unsqueeze(-2)


def ada_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """adaLN: ``LayerNorm(x)·(1 + scale) + shift`` in one pass.

    x (*G, N, D) tokens, shift/scale (*G, D) per group (the model: x (B, T, N, D),
    shift/scale (B, T, D) per frame) -> (*G, N, D)."""
    _check_tensor("x", x)
    if x.dim() < 2:
        raise KernelInputError(f"x must be (*G, N, D), got shape {tuple(x.shape)}")
    for name, t in (("shift", shift), ("scale", scale)):
        _check_tensor(name, t, x.dim() - 1)
        if t.shape != x.shape[:-2] + x.shape[-1:]:
            raise KernelInputError(f"{name} must be (*G, D) = {tuple(x.shape[:-2] + x.shape[-1:])} for x "
                                   f"{tuple(x.shape)}, got {tuple(t.shape)}")
    _check_same("x, shift and scale", x, shift, scale)
    if not (eps > 0 and math.isfinite(eps)):
        raise KernelInputError(f"eps must be a positive finite number, got {eps!r}")
    if (mod := _use_cuda(x, shift, scale)) is not None:
        return mod.ada_layernorm(x, shift, scale, eps=eps)
    mod = _use_cpu_native(x, shift, scale)
    if mod is not None and x.numel() > 0:
        n, d = x.shape[-2], x.shape[-1]
        xc = x.contiguous()  # (G, N, D)
        sh, sc = shift.reshape(-1, d), scale.reshape(-1, d)  # (G, D): views for adaLN chunks
        sh = sh if sh.stride(-1) == 1 else sh.contiguous()
        sc = sc if sc.stride(-1) == 1 else sc.contiguous()
        y = torch.empty_like(xc)
        mod.ada_layernorm(xc.data_ptr(), sh.data_ptr(), sh.stride(0), sc.data_ptr(), sc.stride(0), y.data_ptr(),
                          xc.numel() // (n * d), n, d, float(eps), _threads())
        return y
    return ada_layernorm_reference(x, shift, scale, eps)
