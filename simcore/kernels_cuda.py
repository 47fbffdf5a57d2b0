"""simcore's CUDA kernels behind torch-tensor functions, from a compiled module or a cupy JIT.

``simcore.kernels`` imports this lazily for CUDA tensors and calls, on the caller's
current CUDA stream (so the calls are CUDA-graph capturable):

    patch_attention(q, k, v, *, frame_len, q_frame_offset=0, causal=True, scale=None, out=None)
    euler_update(x, v, dt, v_uncond=None, guidance=None)       in place on x
    kv_write(cache, slot, value)                                in place on cache
    ada_layernorm(x, shift, scale, eps=1e-6)

Two backends run the same kernels (``csrc/attention_cuda.cu``, ``csrc/rollout_ops_cuda.cu``):

    "compiled"  simcore._C_cuda, built by CMake where nvcc exists (raw pointers,
                strides and the stream handle; no libtorch link)
    "cupy"      cupy.RawModule JIT of the same .cu sources (installed under
                simcore/csrc/, or the repository's csrc/ in an editable install)

``backend()`` returns the first that works here, or None (no GPU, nothing built, no
cupy, or $SIMCORE_FORCE_REFERENCE set). $SIMCORE_CUDA_BACKEND=compiled|cupy picks one;
$SIMCORE_CUDA_ATTN=simt|tc picks the attention kernel (default: tensor cores for
fp16/bf16 on sm_80+, the SIMT kernel otherwise). Nothing here imports cupy or touches
the CUDA driver at import time, so a CPU-only machine imports it for free.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Any

import torch

FORCE_REFERENCE_ENV = "SIMCORE_FORCE_REFERENCE"
BACKEND_ENV = "SIMCORE_CUDA_BACKEND"
ATTN_VARIANT_ENV = "SIMCORE_CUDA_ATTN"

#: the .cu sources (and the header they share) the cupy backend compiles
SOURCES = ("attention_cuda.cu", "rollout_ops_cuda.cu")
HEADERS = ("cuda_common.cuh",)

#: tile sizes, mirroring the #defines in csrc/attention_cuda.cu (a CPU test checks)
SIMT_BQ = 32
SIMT_BK = 32
TC_BQ = 64
THREADS = 128
HEAD_DIMS = (32, 64, 128)


def tc_bk(head_dim: int) -> int:
    """Key tile of the tensor-core kernel (SIMCORE_ATTN_TC_BK)."""
    return 32 if head_dim > 64 else 64


_DTYPES = {torch.float32: ("f32", 0), torch.float16: ("f16", 1), torch.bfloat16: ("bf16", 2)}
SIMT, TC = 0, 1


def _error(msg: str) -> Exception:
    from simcore.kernels import KernelInputError

    return KernelInputError(msg)


# ---------------------------------------------------------------------------
# Finding the sources
# ---------------------------------------------------------------------------


def source_dirs() -> list[Path]:
    """Where the .cu sources may live: installed next to the package (simcore/csrc/), then
    the repository's csrc/ (editable install, or running from a checkout)."""
    here = Path(__file__).resolve().parent
    dirs = [here / "csrc", here.parent / "csrc"]
    with contextlib.suppress(Exception):  # namespace/zip packages: the plain paths still apply
        import importlib.resources as res

        dirs.insert(1, Path(str(res.files("simcore") / "csrc")))
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def source_dir() -> Path | None:
    """The first directory holding every .cu source and header, or None."""
    for d in source_dirs():
        if all((d / f).is_file() for f in SOURCES + HEADERS):
            return d
    return None


def jit_source(src_dir: Path, name: str) -> str:
    """The .cu source with its local #includes inlined, as one string for NVRTC: no
    include path to set up, and cupy's kernel cache (keyed on the code string) sees
    header changes too."""
    out = []
    for line in (src_dir / name).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('#include "') and stripped.endswith('"'):
            inc = stripped[len('#include "'):-1]
            if inc in HEADERS:
                out.append(f"// ---- {inc} (inlined) ----")
                out.extend(x for x in (src_dir / inc).read_text().splitlines() if x.strip() != "#pragma once")
                continue
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Backend selection
# ---------------------------------------------------------------------------

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def _forced_reference() -> bool:
    from simcore.kernels import forced_reference

    return forced_reference()


def _try_compiled() -> tuple[Any | None, str]:
    try:
        from simcore import _C_cuda  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"simcore._C_cuda not built ({exc})"
    try:
        n = _C_cuda.device_count()
    except RuntimeError as exc:  # e.g. a driver older than the runtime the module was built with
        return None, f"simcore._C_cuda unusable here: {exc}"
    if n < 1:
        return None, "simcore._C_cuda sees no CUDA device"
    return _CompiledPath(_C_cuda), "compiled"


def _try_cupy() -> tuple[Any | None, str]:
    src = source_dir()
    if src is None:
        return None, f"no .cu sources in {', '.join(map(str, source_dirs()))}"
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a cupy built for another CUDA
        return None, f"cupy not importable ({type(exc).__name__}: {exc})"
    return _CupyPath(src), "cupy"


def path(name: str) -> Any:
    """The backend object named "compiled" or "cupy" (tests use this to run each path);
    raises RuntimeError saying why it is unavailable."""
    if name not in ("compiled", "cupy"):
        raise ValueError(f"unknown CUDA backend {name!r}; use 'compiled' or 'cupy'")
    with _lock:
        key = f"path:{name}"
        if key not in _cache:
            if not torch.cuda.is_available():
                _cache[key] = (None, "torch sees no CUDA device")
            else:
                _cache[key] = _try_compiled() if name == "compiled" else _try_cupy()
        obj, why = _cache[key]
    if obj is None:
        raise RuntimeError(f"CUDA backend {name!r} unavailable: {why}")
    return obj


def _active() -> tuple[Any | None, str]:
    if _forced_reference():
        return None, f"forced off by ${FORCE_REFERENCE_ENV}"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    want = os.environ.get(BACKEND_ENV, "").strip().lower()
    if want and want not in ("compiled", "cupy"):
        raise ValueError(f"${BACKEND_ENV}={want!r}: use 'compiled' or 'cupy'")
    reasons = []
    for name in ([want] if want else ["compiled", "cupy"]):
        try:
            return path(name), name
        except RuntimeError as exc:
            reasons.append(str(exc))
    return None, "; ".join(reasons)


def backend() -> str | None:
    """"compiled", "cupy", or None when no CUDA kernel path can run here."""
    obj, name = _active()
    return name if obj is not None else None


def describe() -> str:
    """One line: the active backend, its build, the device and the attention kernel."""
    obj, name = _active()
    if obj is None:
        return f"no CUDA kernels ({name})"
    dev = torch.cuda.current_device()
    cap = _device_info(dev)[0]
    variant = "tensor-core (fp16/bf16) + SIMT (fp32)" if _tc_default(cap) else "SIMT"
    return f"{obj.describe()} on {torch.cuda.get_device_name(dev)} (sm_{cap[0]}{cap[1]}); attention: {variant}"


# ---------------------------------------------------------------------------
# Planning: which kernel, how many key splits
# ---------------------------------------------------------------------------


def _tc_default(capability: tuple[int, int], variant: str | None = None) -> bool:
    """Whether 16-bit attention uses the tensor-core kernel: the ``variant`` argument, else
    $SIMCORE_CUDA_ATTN, else "auto" (= tensor cores on sm_80+)."""
    want = (variant or os.environ.get(ATTN_VARIANT_ENV, "auto")).strip().lower()
    if want not in ("auto", "simt", "tc"):
        raise ValueError(f"attention variant {want!r}: use 'auto', 'simt' or 'tc' (${ATTN_VARIANT_ENV})")
    return want != "simt" and capability >= (8, 0)


_DEVICE_INFO: dict[int, tuple[tuple[int, int], int]] = {}  # device index -> (capability, SM count)


def _device_info(index: int) -> tuple[tuple[int, int], int]:
    if index not in _DEVICE_INFO:
        props = torch.cuda.get_device_properties(index)
        _DEVICE_INFO[index] = ((props.major, props.minor), props.multi_processor_count)
    return _DEVICE_INFO[index]


def plan_splits(batch_heads: int, lq: int, lk: int, bq: int, bk: int, sm_count: int) -> tuple[int, int]:
    """(num_splits, split_len) for split-KV (flash-decoding).

    One block per (query tile, batch·head) fills the GPU only when there are at least
    ~2 blocks per SM; below that (batch-1 rollout: 1·4 heads·1-4 query tiles) the keys
    are cut into chunks of whole key tiles, each chunk a block, until there are about
    2·SMs blocks, with at least one key tile per chunk and at most 64 chunks (each
    chunk's partial result costs a (hd + 2)-float workspace write per query and a read
    in the combine kernel: small next to the chunk's K/V reads).
    """
    blocks = -(-lq // bq) * batch_heads
    target = 2 * sm_count
    if blocks >= target:
        return 1, lk
    key_tiles = -(-lk // bk)
    splits = min(-(-target // blocks), key_tiles, 64)
    if splits <= 1:
        return 1, lk
    split_len = -(-key_tiles // splits) * bk
    return -(-lk // split_len), split_len


# ---------------------------------------------------------------------------
# Input checks shared by both backends
# ---------------------------------------------------------------------------


def _dtype(t: torch.Tensor) -> tuple[str, int] | None:
    return _DTYPES.get(t.dtype)


def _check_cuda(names: str, *ts: torch.Tensor) -> None:
    for t in ts:
        if not isinstance(t, torch.Tensor):
            raise _error(f"{names} must be torch tensors, got {type(t).__name__}")
    if any(t.device.type != "cuda" for t in ts):
        raise _error(f"{names} must be CUDA tensors, got {[str(t.device) for t in ts]}")
    if len({t.device for t in ts}) > 1:
        raise _error(f"{names} must be on one device, got {[str(t.device) for t in ts]}")
    if len({t.dtype for t in ts}) > 1:
        raise _error(f"{names} must share one dtype, got {[str(t.dtype) for t in ts]}")


def _last_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _reference_attention(q, k, v, frame_len, q_frame_offset, causal, scale):
    from simcore.kernels import patch_attention_reference

    return patch_attention_reference(q, k, v, frame_len=frame_len, q_frame_offset=q_frame_offset, causal=causal,
                                     scale=scale)


def _attention_args(q, k, v, frame_len, q_frame_offset, causal, scale):
    """Validated (q, k, v, scale) or None when the kernels do not cover the case
    (head dim outside 32/64/128, float64): the caller falls back to torch."""
    _check_cuda("q, k and v", q, k, v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise _error(f"{name} must be (B, H, L, hd), got shape {tuple(t.shape)}")
    b, h, lq, hd = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[1] != h or k.shape[3] != hd:
        raise _error(f"q {tuple(q.shape)} and k/v {tuple(k.shape)}/{tuple(v.shape)} must be (B, H, Lq, hd) and "
                     "(B, H, Lk, hd) with equal batch, heads and head dim")
    if lq < 1 or k.shape[2] < 1:
        raise _error(f"need at least one query and one key, got Lq={lq}, Lk={k.shape[2]}")
    if isinstance(frame_len, bool) or not isinstance(frame_len, int) or frame_len < 1:
        raise _error(f"frame_len must be a positive int, got {frame_len!r}")
    if isinstance(q_frame_offset, bool) or not isinstance(q_frame_offset, int) or q_frame_offset < 0:
        raise _error(f"q_frame_offset must be an int >= 0, got {q_frame_offset!r}")
    scale = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise _error(f"scale must be finite, got {scale}")
    if b * h > 65535:
        raise _error(f"batch·heads = {b * h} exceeds the kernel's grid limit of 65535")
    if max(lq, k.shape[2]) >= 2**31 - 64 or q_frame_offset + lq >= 2**31 - 1:  # the kernels' int32 row math
        raise _error(f"sequence too long for the kernels' 32-bit row indices (Lq={lq}, Lk={k.shape[2]})")
    if hd not in HEAD_DIMS or _dtype(q) is None:
        return None
    return _last_contig(q), _last_contig(k), _last_contig(v), scale


class _Launch:
    """Everything both backends need to launch one attention call.

    The shape-dependent part (dtype, kernel variant, tiles, split plan, strides) is
    computed once per call signature and cached (``_PLANS``); per call only the tensors,
    the workspace and the stream are bound (``bind``), which keeps the host cost of a
    launch small next to SDPA's."""

    def __init__(self, q, k, v, out, frame_len, q_frame_offset, causal, scale, variant=None, device_info=None):
        self.b, self.h, self.lq, self.hd = q.shape
        self.lk = k.shape[2]
        self.dt_name, self.dt_code = _dtype(q)
        if device_info is None:  # the tensors' CUDA device and current stream
            self.device = q.device.index if q.device.index is not None else torch.cuda.current_device()
            cap, sms = _device_info(self.device)
            stream = None
        else:  # (capability, SM count, device index, stream): the CPU emulation test
            cap, sms, self.device, stream = device_info
        self.variant = TC if (self.dt_code != 0 and _tc_default(cap, variant)) else SIMT
        self.bq = TC_BQ if self.variant == TC else SIMT_BQ
        bk = tc_bk(self.hd) if self.variant == TC else SIMT_BK
        self.splits, self.split_len = plan_splits(self.b * self.h, self.lq, self.lk, self.bq, bk, sms)
        self.frame_len, self.q_frame_offset, self.causal, self.scale = frame_len, q_frame_offset, bool(causal), scale
        self.q_s, self.k_s, self.v_s, self.o_s = (_strides3(t) for t in (q, k, v, out))
        # fp32 workspace for split-KV: partial accumulators (splits, B·H, Lq, hd), then
        # (m, l) per row (splits, B·H, Lq, 2); one allocation from torch's caching allocator
        self.ws_acc_numel = self.splits * self.b * self.h * self.lq * self.hd if self.splits > 1 else 0
        self.ws_numel = self.ws_acc_numel + (self.splits * self.b * self.h * self.lq * 2 if self.splits > 1 else 0)
        self.needs_contig = False  # set by patch_attention when q/k/v had to be made last-dim contiguous
        self.ws = None
        self.bound: tuple | None = None
        if device_info is not None:  # bound once, workspace kept on self.ws (the emulation test poisons it)
            self.bound = self.bind(q, k, v, out, stream)
            self.ws = self.bound[-1]

    def bind(self, q, k, v, out, stream) -> tuple:
        """(q, k, v, out, ws_acc_ptr, ws_ml_ptr, stream, ws) for one call, allocating the
        split-KV workspace; it lives as long as the tuple (the launch is stream-ordered,
        so the caching allocator may hand the block out again after the call)."""
        if self.ws_numel:
            ws = torch.empty(self.ws_numel, device=q.device, dtype=torch.float32)
            p = ws.data_ptr()
            return (q, k, v, out, p, p + 4 * self.ws_acc_numel, stream, ws)
        return (q, k, v, out, 0, 0, stream, None)


def _strides3(t: torch.Tensor) -> list[int]:
    s = t.stride()
    return [int(s[0]), int(s[1]), int(s[2])]


_PLANS: dict[Any, Any] = {}  # call signature -> _Launch template (or None: torch reference)
_MAX_PLANS = 4096

try:  # torch's own fast accessor of the current stream handle (what torch.compile uses)
    _raw_stream = torch._C._cuda_getCurrentRawStream  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - older/newer torch
    def _raw_stream(device_index: int) -> int:
        return torch.cuda.current_stream(device_index).cuda_stream


def _prepare_out(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.empty(q.shape, device=q.device, dtype=q.dtype)  # (B, H, Lq, hd)
    _check_cuda("q and out", q, out)
    if out.shape != q.shape:
        raise _error(f"out must have q's shape {tuple(q.shape)}, got {tuple(out.shape)}")
    if out.stride(-1) != 1:
        raise _error("out needs a contiguous last dimension")
    return out


# ---------------------------------------------------------------------------
# Backend: compiled simcore._C_cuda
# ---------------------------------------------------------------------------


class _CompiledPath:
    name = "compiled"

    def __init__(self, mod: Any):
        self.mod = mod

    def describe(self) -> str:
        info = self.mod.build_info()
        rt = info["runtime_version"]
        return f"compiled simcore._C_cuda (archs {info['cuda_archs']}, CUDA runtime {rt // 1000}.{rt % 1000 // 10})"

    def attention(self, L: _Launch, bound: tuple | None = None) -> None:
        q, k, v, out, ws_acc, ws_ml, stream, _ws = bound or L.bound
        self.mod.patch_attention(
            L.dt_code, L.variant, L.hd, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), ws_acc, ws_ml,
            L.b, L.h, L.lq, L.lk, L.q_s, L.k_s, L.v_s, L.o_s, L.frame_len, L.q_frame_offset, L.causal, L.scale,
            L.splits, L.split_len, stream, L.device)

    def euler(self, dt_code, x, v, vu, n, dt, guidance, has_guidance, stream, device) -> None:
        self.mod.euler_update(dt_code, x.data_ptr(), v.data_ptr(), 0 if vu is None else vu.data_ptr(), n, dt,
                              guidance, has_guidance, stream, device)

    def kv(self, dt_code, cache, value, slot, stream, device) -> None:
        b, h, _, n, hd = cache.shape
        self.mod.kv_write(dt_code, cache.data_ptr(), value.data_ptr(), b, h, n, hd, slot,
                          [int(s) for s in cache.stride()[:4]], [int(s) for s in value.stride()[:3]], stream, device)

    def adaln(self, dt_code, x, shift, scale, y, B, T, N, D, shs, scs, eps, stream, device) -> None:
        self.mod.ada_layernorm(dt_code, x.data_ptr(), shift.data_ptr(), scale.data_ptr(), y.data_ptr(), B, T, N, D,
                               list(shs), list(scs), eps, stream, device)


# ---------------------------------------------------------------------------
# Backend: cupy RawModule JIT of the same sources
# ---------------------------------------------------------------------------


class _CupyPath:
    name = "cupy"

    def __init__(self, src: Path):
        import cupy

        self.cp = cupy
        self.src = src
        self._modules: dict[tuple[int, str], Any] = {}  # (device, source) -> RawModule
        self._kernels: dict[tuple[int, str], Any] = {}  # (device, kernel name) -> RawKernel

    def describe(self) -> str:
        return f"cupy {self.cp.__version__} JIT of {self.src}"

    def kernel(self, device: int, source: str, name: str) -> Any:
        key = (device, name)
        if key not in self._kernels:
            with self.cp.cuda.Device(device):
                mkey = (device, source)
                if mkey not in self._modules:
                    self._modules[mkey] = self.cp.RawModule(code=jit_source(self.src, source),
                                                            options=("-DSIMCORE_CUPY_JIT",))
                self._kernels[key] = self._modules[mkey].get_function(name)
        return self._kernels[key]

    def _launch(self, device: int, stream: int, kern: Any, grid, block, args) -> None:
        cp = self.cp
        with cp.cuda.Device(device):
            try:
                ext = cp.cuda.ExternalStream(stream, device)
            except TypeError:  # cupy < 13 takes no device id
                ext = cp.cuda.ExternalStream(stream)
            with ext:
                kern(grid, block, args)

    @staticmethod
    def _p(t: torch.Tensor | None):
        import numpy as np

        return np.uint64(0 if t is None else t.data_ptr())

    def attention(self, L: _Launch, bound: tuple | None = None) -> None:
        import numpy as np

        q, k, v, out, ws_acc, ws_ml, stream, _ws = bound or L.bound
        i32, i64, f32, u64 = np.int32, np.int64, np.float32, np.uint64
        name = f"patch_attn_fwd_{'tc_' if L.variant == TC else ''}{L.dt_name}_{L.hd}"
        kern = self.kernel(L.device, "attention_cuda.cu", name)
        args = (self._p(q), self._p(k), self._p(v), self._p(out), u64(ws_acc), u64(ws_ml),
                i32(L.h), i32(L.lq), i32(L.lk), *map(i64, L.q_s), *map(i64, L.k_s), *map(i64, L.v_s),
                *map(i64, L.o_s), i32(L.frame_len), i32(L.q_frame_offset),
                i32(1 if L.causal else 0), f32(L.scale * math.log2(math.e)), i32(L.splits), i32(L.split_len))
        grid = (-(-L.lq // L.bq), L.b * L.h, L.splits)
        self._launch(L.device, stream, kern, grid, (THREADS, 1, 1), args)
        if L.splits > 1:
            comb = self.kernel(L.device, "attention_cuda.cu", f"patch_attn_combine_{L.dt_name}")
            total = L.b * L.h * L.lq * L.hd
            cargs = (u64(ws_acc), u64(ws_ml), self._p(out), i32(L.b * L.h), i32(L.h), i32(L.lq), i32(L.hd),
                     i32(L.splits), *map(i64, L.o_s))
            self._launch(L.device, stream, comb, (-(-total // 256),), (256, 1, 1), cargs)

    def euler(self, dt_code, x, v, vu, n, dt, guidance, has_guidance, stream, device) -> None:
        import numpy as np

        name = {0: "f32", 1: "f16", 2: "bf16"}[dt_code]
        kern = self.kernel(device, "rollout_ops_cuda.cu", f"euler_update_{name}")
        blocks = max(1, min(-(-n // 256), 65536))
        args = (self._p(x), self._p(v), self._p(vu), np.int64(n), np.float32(dt), np.float32(guidance),
                np.int32(1 if has_guidance else 0))
        self._launch(device, stream, kern, (blocks,), (256, 1, 1), args)

    def kv(self, dt_code, cache, value, slot, stream, device) -> None:
        import numpy as np

        name = "f32" if dt_code == 0 else "f16"  # a bit copy: one 16-bit kernel for fp16 and bf16
        kern = self.kernel(device, "rollout_ops_cuda.cu", f"kv_write_{name}")
        b, h, _, n, hd = cache.shape
        total = b * h * n * hd
        args = (self._p(cache), self._p(value), np.int32(b), np.int32(h), np.int32(n), np.int32(hd), np.int32(slot),
                *map(np.int64, cache.stride()[:4]), *map(np.int64, value.stride()[:3]))
        self._launch(device, stream, kern, (max(1, min(-(-total // 256), 65536)),), (256, 1, 1), args)

    def adaln(self, dt_code, x, shift, scale, y, B, T, N, D, shs, scs, eps, stream, device) -> None:
        import numpy as np

        name = {0: "f32", 1: "f16", 2: "bf16"}[dt_code]
        kern = self.kernel(device, "rollout_ops_cuda.cu", f"ada_layernorm_{name}")
        rows = B * T * N
        args = (self._p(x), self._p(shift), self._p(scale), self._p(y), np.int32(B), np.int32(T), np.int32(N),
                np.int32(D), np.int64(shs[0]), np.int64(shs[1]), np.int64(scs[0]), np.int64(scs[1]), np.float32(eps))
        self._launch(device, stream, kern, (-(-rows // 4),), (128, 1, 1), args)


# ---------------------------------------------------------------------------
# The public functions (active backend; `via=` picks one explicitly)
# ---------------------------------------------------------------------------


_ACTIVE: dict[str, Any] = {}  # "backend" -> active backend object, "variant" -> $SIMCORE_CUDA_ATTN


def reset() -> None:
    """Forget cached attention plans and the backend/variant read from the environment
    (the launch path reads $SIMCORE_CUDA_BACKEND and $SIMCORE_CUDA_ATTN once, not per call)."""
    _PLANS.clear()
    _ACTIVE.clear()


def _backend_obj(via: str | None) -> Any:
    if via is not None:
        return path(via)
    obj = _ACTIVE.get("backend")
    if obj is None:
        obj, why = _active()
        if obj is None:
            raise RuntimeError(f"no CUDA kernel backend: {why}")
        _ACTIVE["backend"] = obj
    return obj


def _env_variant() -> str:
    v = _ACTIVE.get("variant")
    if v is None:
        v = _ACTIVE["variant"] = os.environ.get(ATTN_VARIANT_ENV, "")
    return v


def _stream_dev(t: torch.Tensor) -> tuple[int, int]:
    dev = t.device.index if t.device.index is not None else torch.cuda.current_device()
    return _raw_stream(dev), dev


def patch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, frame_len: int, q_frame_offset: int = 0,
                    causal: bool = True, scale: float | None = None, out: torch.Tensor | None = None,
                    via: str | None = None, variant: str | None = None) -> torch.Tensor:
    """Block-causal attention (see csrc/attention_cuda.cu): q (B, H, Lq, hd), k/v (B, H, Lk, hd),
    fp32/fp16/bf16 CUDA tensors with any (batch, head, row) strides -> (B, H, Lq, hd).

    ``out`` (B, H, Lq, hd) is written in place when given; ``via`` picks the backend,
    ``variant`` ("simt", "tc", "auto") the kernel for fp16/bf16. Head dims outside
    32/64/128 and float64 go to the torch reference (same result)."""
    backend_obj = _backend_obj(via)
    try:  # everything the plan depends on; a hit means these inputs were validated before
        key = (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, k.dtype, v.dtype, q.device,
               k.device, v.device, frame_len, q_frame_offset, causal, scale, variant or _env_variant(),
               None if out is None else (out.shape, out.stride(), out.dtype, out.device))
        plan = _PLANS.get(key, False)
    except (TypeError, AttributeError):  # unhashable or non-tensor arguments: validate, raise
        key, plan = None, False
    if plan is False:  # first call with this signature: validate and plan
        args = _attention_args(q, k, v, frame_len, q_frame_offset, causal, scale)
        if args is None:
            plan = None
        else:
            qc, kc_, vc, scale_v = args
            o = _prepare_out(qc, out)
            plan = _Launch(qc, kc_, vc, o, frame_len, q_frame_offset, causal, scale_v, variant or _env_variant())
            plan.needs_contig = qc is not q or kc_ is not k or vc is not v
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    if plan is None:  # a head dim / dtype the kernels do not cover
        res = _reference_attention(q, k, v, frame_len, q_frame_offset, causal, scale)
        return res if out is None else out.copy_(res)
    if plan.needs_contig:  # as at planning time
        q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
    if out is None:
        out = torch.empty(q.shape, device=q.device, dtype=q.dtype)  # (B, H, Lq, hd), contiguous like at planning
    backend_obj.attention(plan, plan.bind(q, k, v, out, _raw_stream(plan.device)))
    return out


def euler_update(x: torch.Tensor, v: torch.Tensor, dt: float, v_uncond: torch.Tensor | None = None,
                 guidance: float | None = None, *, via: str | None = None) -> torch.Tensor:
    """In place x += dt·v, or x += dt·(v_uncond + guidance·(v − v_uncond)); returns x."""
    if (v_uncond is None) != (guidance is None):
        raise _error("v_uncond and guidance go together: pass both (guided) or neither")
    ts = [x, v] + ([v_uncond] if v_uncond is not None else [])
    _check_cuda("x, v (and v_uncond)", *ts)
    for name, t in zip(("v", "v_uncond"), ts[1:]):
        if t.shape != x.shape:
            raise _error(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    dt = float(dt)
    g = 1.0 if guidance is None else float(guidance)
    if not (math.isfinite(dt) and math.isfinite(g)):
        raise _error(f"dt and guidance must be finite, got dt={dt}, guidance={guidance}")
    if _dtype(x) is None or not x.is_contiguous():  # float64 or a strided x: torch does it in place
        vel = v if v_uncond is None else torch.lerp(v_uncond, v, g)
        return x.add_(vel, alpha=dt)
    v = v.contiguous()
    vu = v_uncond.contiguous() if v_uncond is not None else None
    if x.numel() == 0:
        return x
    stream, dev = _stream_dev(x)
    _backend_obj(via).euler(_dtype(x)[1], x, v, vu, x.numel(), dt, g, v_uncond is not None, stream, dev)
    return x


def kv_write(cache: torch.Tensor, slot: int, value: torch.Tensor, *, via: str | None = None) -> torch.Tensor:
    """cache[:, :, slot] = value in place: cache (B, H, W, N, hd), value (B, H, N, hd); returns cache."""
    _check_cuda("cache and value", cache, value)
    if cache.dim() != 5 or value.dim() != 4:
        raise _error(f"cache must be (B, H, W, N, hd) and value (B, H, N, hd), got {tuple(cache.shape)} and "
                     f"{tuple(value.shape)}")
    b, h, w, n, hd = cache.shape
    if tuple(value.shape) != (b, h, n, hd):
        raise _error(f"value must be (B, H, N, hd) = {(b, h, n, hd)} for a cache {tuple(cache.shape)}, got "
                     f"{tuple(value.shape)}")
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < w:
        raise _error(f"slot must be an int in [0, {w}), got {slot!r}")
    if _dtype(cache) is None or cache.stride(-1) != 1:
        cache[:, :, slot] = value
        return cache
    if cache.numel() == 0:
        return cache
    value = _last_contig(value)
    stream, dev = _stream_dev(cache)
    _backend_obj(via).kv(_dtype(cache)[1], cache, value, slot, stream, dev)
    return cache


def ada_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6, *,
                  via: str | None = None) -> torch.Tensor:
    """LayerNorm(x) (no affine) · (1 + scale) + shift: x (*G, N, D), shift/scale (*G, D)
    (the model: x (B, T, N, D), shift/scale (B, T, D) per frame) -> new tensor like x."""
    _check_cuda("x, shift and scale", x, shift, scale)
    if x.dim() < 2 or shift.shape != x.shape[:-2] + x.shape[-1:] or scale.shape != shift.shape:
        raise _error(f"x must be (*G, N, D) and shift/scale (*G, D); got {tuple(x.shape)}, {tuple(shift.shape)}, "
                     f"{tuple(scale.shape)}")
    eps = float(eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise _error(f"eps must be a positive finite number, got {eps!r}")
    if _dtype(x) is None:
        from simcore.kernels import ada_layernorm_reference

        return ada_layernorm_reference(x, shift, scale, eps)
    n, d = x.shape[-2], x.shape[-1]
    xc = x.contiguous()
    y = torch.empty_like(xc)  # (*G, N, D)
    if xc.numel() == 0:
        return y
    g = xc.numel() // (n * d)
    sh, sc = _last_contig(shift.reshape(g, d)), _last_contig(scale.reshape(g, d))  # (G, D), views when possible
    stream, dev = _stream_dev(x)
    # the kernel indexes shift/scale by (b, t); here b = the flattened group, t = 0
    _backend_obj(via).adaln(_dtype(x)[1], xc, sh, sc, y, g, 1, n, d, (sh.stride(0), 0), (sc.stride(0), 0), eps,
                            stream, dev)
    return y


# ---------------------------------------------------------------------------
# python -m simcore.kernels_cuda: a one-minute smoke check on a GPU machine
# ---------------------------------------------------------------------------


def smoke_check() -> list[dict[str, Any]]:
    """Attention on a few rollout/prefill shapes through every available backend and kernel
    variant, against a float64 reference: max abs error, and the same for torch's SDPA in
    the same dtype. (The full parity suite is ``pytest -m gpu tests/test_kernels_cuda.py``.)"""
    import torch.nn.functional as F

    rows = []
    shapes = [(1, 4, 64, 9 * 64, 32, 64, 8, False), (2, 3, 5 * 37, 5 * 37, 64, 37, 0, True),
              (1, 2, 1, 100, 128, 7, 14, True)]
    for via in ("compiled", "cupy"):
        try:
            path(via)
        except RuntimeError as exc:
            rows.append({"backend": via, "skipped": str(exc)})
            continue
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for variant in (("simt",) if dtype == torch.float32 else ("simt", "tc")):
                for b, h, lq, lk, hd, fl, off, causal in shapes:
                    g = torch.Generator(device="cuda").manual_seed(0)
                    q, k, v = (torch.randn(b, h, n, hd, device="cuda", generator=g).to(dtype) for n in (lq, lk, lk))
                    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(hd)
                    mask = None
                    if causal:
                        qf = off + torch.arange(lq, device="cuda") // fl
                        mask = (torch.arange(lk, device="cuda") // fl)[None, :] <= qf[:, None]
                        s = s.masked_fill(~mask, float("-inf"))
                    ref = torch.softmax(s, -1) @ v.double()
                    out = patch_attention(q, k, v, frame_len=fl, q_frame_offset=off, causal=causal, via=via,
                                          variant=variant)
                    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                    rows.append({"backend": via, "dtype": str(dtype).split(".")[-1], "variant": variant,
                                 "shape": (b, h, lq, lk, hd), "causal": causal,
                                 "err": (out.double() - ref).abs().max().item(),
                                 "sdpa_err": (sdpa.double() - ref).abs().max().item()})
    return rows


if __name__ == "__main__":
    print(describe())
    if backend() is not None:
        for row in smoke_check():
            print(row)
