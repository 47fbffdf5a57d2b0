"""simcore.kernels_cuda: each CUDA backend (compiled simcore._C_cuda, cupy JIT) against a
float64 reference, and the graphed rollout against the eager one.

GPU tests carry the ``gpu`` marker (deselected by default; run ``pytest -m gpu``) and
skip cleanly without a CUDA device, and per backend when it is not available (module
not built / cupy not installed). Every kernel output is poisoned (NaN) before the
call. The two default tests run on any machine: the loader finds the .cu sources and
reports "no backend" cleanly without a GPU, and the graphed rollout's static-buffer
frame equals the eager frame on CPU (the code the CUDA graph captures, run eagerly).
"""
from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simcore import kernels_cuda as kc

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
BACKENDS = ("compiled", "cupy")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture(autouse=True)
def _fresh_plans():
    """Attention plans are cached per call signature; tests that patch the split planner
    or the variant must not see an earlier test's plan."""
    kc.reset()
    yield
    kc.reset()


def backend_or_skip(name: str):
    try:
        return kc.path(name)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def poison_allocator(nbytes: int, device="cuda") -> None:
    """Fill freed caching-allocator blocks with NaN so an unwritten workspace shows."""
    t = torch.full((nbytes // 4 + 1024,), float("nan"), device=device)
    del t


# ---------------------------------------------------------------------------
# CPU (default) tests
# ---------------------------------------------------------------------------


def test_sources_found_and_cpu_reports_no_backend(monkeypatch):
    src = kc.source_dir()
    assert src is not None, f"no .cu sources in {kc.source_dirs()}"
    text = (src / "attention_cuda.cu").read_text()
    # the Python tile constants mirror the kernel's #defines
    defs = dict(re.findall(r"#define (SIMCORE_ATTN_\w+) (\d+)\b", text))
    assert int(defs["SIMCORE_ATTN_SIMT_BQ"]) == kc.SIMT_BQ
    assert int(defs["SIMCORE_ATTN_SIMT_BK"]) == kc.SIMT_BK
    assert int(defs["SIMCORE_ATTN_TC_BQ"]) == kc.TC_BQ
    assert int(defs["SIMCORE_ATTN_THREADS"]) == kc.THREADS
    assert re.search(r"#define SIMCORE_ATTN_TC_BK\(HD\) \(\(HD\) > 64 \? 32 : 64\)", text)
    assert kc.tc_bk(128) == 32 and kc.tc_bk(64) == 64 and kc.tc_bk(32) == 64
    for name in [f"patch_attn_fwd_{dt}_{hd}" for dt in ("f32", "f16", "bf16") for hd in kc.HEAD_DIMS] + \
                [f"patch_attn_fwd_tc_{dt}_{hd}" for dt in ("f16", "bf16") for hd in kc.HEAD_DIMS]:
        assert name in text, name  # the names the cupy path launches
    ops = (src / "rollout_ops_cuda.cu").read_text()
    for op in ("euler_update", "kv_write", "ada_layernorm"):
        for dt in ("f32", "f16", "bf16"):
            assert f"{op}_##NAME" in ops and f"SIMCORE_DEF_ROLLOUT({dt}," in ops
    monkeypatch.setenv(kc.FORCE_REFERENCE_ENV, "1")
    assert kc.backend() is None and "SIMCORE_FORCE_REFERENCE" in kc.describe()
    monkeypatch.delenv(kc.FORCE_REFERENCE_ENV)
    if not HAS_CUDA:
        assert kc.backend() is None
        assert "no CUDA device" in kc.describe()
        with pytest.raises(RuntimeError, match="unavailable"):
            kc.path("cupy")
    # split-KV planning: a batch-1 rollout is split, a large batch is not
    splits, length = kc.plan_splits(4, 64, 9 * 64, kc.TC_BQ, 64, 132)
    assert splits > 1 and (splits - 1) * length < 9 * 64 <= splits * length
    assert kc.plan_splits(64 * 8, 256, 33 * 256, kc.TC_BQ, 64, 132) == (1, 33 * 256)


def test_graphed_rollout_static_frame_matches_eager_on_cpu(one_torch_thread):
    from simcore.model import WorldModel, config_for
    from simcore.rollout import Rollout
    from simcore.rollout_graph import GraphedRollout

    torch.manual_seed(0)
    model = WorldModel(config_for("tiny", frame_size=(32, 32), num_actions=3, cond_dims={"p": 2})).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero init would make every block the identity
            p.normal_(0, 0.1)
    b = 2
    eager = Rollout(model, batch=b, steps=3, seed=5)
    graphed = GraphedRollout(model, batch=b, steps=3, seed=5)
    lat = torch.randn(b, 3, *model.latent_shape)
    acts = torch.randint(0, 4, (b, 3))
    ex = {"p": torch.randn(b, 2)}
    eager.prompt(lat, acts, ex)
    graphed.prompt(lat, acts, ex)
    assert not graphed.active  # CPU: never graphed
    for f in range(6):
        a = torch.randint(0, 4, (b,))
        ze = eager.generate(a, ex)
        if bool((graphed.slot_frame >= 0).all()):  # window full: the code the graph captures
            zg = graphed._generate_static(a, ex, capture=False)
        else:
            zg = graphed.generate(a, ex)
        assert torch.allclose(ze, zg, rtol=1e-5, atol=1e-5), (f, (ze - zg).abs().max())
    assert graphed.static_frames >= 4  # window 4, 3 prompt frames: frames 1..5 are static
    assert torch.allclose(eager.k, graphed.k, rtol=1e-5, atol=1e-5) and eager.count == graphed.count
    assert torch.equal(eager.slot_frame, graphed.slot_frame)


# ---------------------------------------------------------------------------
# CPU emulation: the kernels' own source, run on the CPU (tests/cuda_emu/)
# ---------------------------------------------------------------------------

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """A backend object that runs the .cu kernels through tests/cuda_emu on CPU tensors,
    launched by the cupy backend's own Python code (argument packing, grids, splits)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    src = kc.source_dir()
    if cxx is None or src is None:
        pytest.skip("needs a C++20 compiler and the .cu sources")
    so = tmp_path_factory.mktemp("emu") / "emu.so"
    cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", f"-I{src}", str(EMU_DIR / "emu_harness.cpp"),
           "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = ctypes.CDLL(str(so))
    lib.emu_launch_kernel.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 4 + [ctypes.POINTER(ctypes.c_void_p)]
    ctypes_of = {np.uint64: ctypes.c_uint64, np.int64: ctypes.c_int64, np.int32: ctypes.c_int32,
                 np.float32: ctypes.c_float}

    class EmuPath(kc._CupyPath):
        def __init__(self):  # no cupy: kernels are looked up by name in the harness
            pass

        def kernel(self, device, source, name):
            return name

        def _launch(self, device, stream, kern, grid, block, args):
            vals = [ctypes_of[type(a)](a.item()) for a in args]
            ptrs = (ctypes.c_void_p * len(vals))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
            g = tuple(grid) + (1,) * (3 - len(grid))
            assert lib.emu_launch_kernel(kern.encode(), g[0], g[1], g[2], block[0], ptrs) == 0, kern

    return EmuPath()


def emu_attention(emu, q, k, v, frame_len, off, causal, variant, splits=None, monkeypatch=None):
    out = torch.full(q.shape, float("nan"), dtype=q.dtype)
    if splits is not None:
        monkeypatch.setattr(kc, "plan_splits", lambda *a: splits)
    launch = kc._Launch(q, k, v, out, frame_len, off, causal, q.shape[-1] ** -0.5, variant,
                        device_info=((9, 0), 132, 0, 0))
    if launch.ws is not None:  # poison the split-KV workspace
        launch.ws.fill_(float("nan"))
    emu.attention(launch)
    return out, launch


def cpu_qkv(b, h, lq, lk, hd, dtype, strided, seed=0):
    g = torch.Generator().manual_seed(seed)
    if strided == "unaligned":  # rows of hd+1 elements starting one element in: no 16-byte loads
        return tuple(torch.randn(b, h, n, hd + 1, generator=g).to(dtype)[..., 1:] for n in (lq, lk, lk))
    if strided:  # views of fused qkv buffers, as the model makes them
        qb = torch.randn(b, lq, 3, h, hd, generator=g).to(dtype)
        kvb = torch.randn(b, lk, 3, h, hd, generator=g).to(dtype)
        return qb[:, :, 0].transpose(1, 2), kvb[:, :, 1].transpose(1, 2), kvb[:, :, 2].transpose(1, 2)
    return tuple(torch.randn(b, h, n, hd, generator=g).to(dtype) for n in (lq, lk, lk))


# (B, H, Lq, Lk, hd, frame_len, q_frame_offset, causal, dtype, variant, strided, forced splits)
EMU_CASES = [
    (1, 2, 40, 100, 32, 10, 2, True, torch.float32, "simt", False, None),  # planned split-KV
    (1, 1, 70, 150, 64, 30, 0, True, torch.float16, "tc", True, None),  # vectorised loads, causal prefill
    (1, 2, 33, 130, 64, 33, 0, True, torch.bfloat16, "tc", True, (4, 37)),  # odd chunks, empty chunks
    (1, 1, 20, 45, 128, 9, 3, True, torch.bfloat16, "tc", False, (2, 32)),
    (2, 1, 1, 1, 64, 1, 0, True, torch.float16, "simt", False, None),  # one query, one key
    (1, 1, 50, 50, 32, 25, 0, True, torch.bfloat16, "tc", "unaligned", None),  # element-wise load path
    (1, 2, 1, 100, 64, 7, 14, True, torch.float16, "tc", False, None),  # one query in a 64-row tile
    (1, 2, 17, 60, 128, 17, 2, False, torch.bfloat16, "simt", True, (3, 20)),
]


def test_kernels_run_in_cpu_emulation(emu, monkeypatch):
    """Attention (SIMT and tensor-core kernels, split-KV + combine) and the rollout ops,
    their CUDA source executed on the CPU, against float64. An indexing bug gives O(1)
    errors; the tolerances here are a few roundings of the input precision."""
    for b, h, lq, lk, hd, fl, off, causal, dtype, variant, strided, splits in EMU_CASES:
        q, k, v = cpu_qkv(b, h, lq, lk, hd, dtype, strided)
        out, launch = emu_attention(emu, q, k, v, fl, off, causal, variant, splits, monkeypatch)
        monkeypatch.undo()
        assert launch.variant == (kc.TC if variant == "tc" else kc.SIMT)
        ref = attention64(q, k, v, fl, off, causal, hd ** -0.5)
        err, top = (out.double() - ref).abs().max().item(), ref.abs().max().item()
        assert torch.isfinite(out).all(), (b, h, lq, lk, hd, variant)
        tol = 1e-5 * top + 1e-6 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps * top
        assert err <= tol, (b, h, lq, lk, hd, str(dtype), variant, err)
    # rollout ops: Euler + guidance, KV write into a strided ring slot, adaLN
    x0, vel, vu = (torch.randn(3, 1, 4, 5, 7) for _ in range(3))
    x = x0.clone()
    emu.euler(0, x, vel, vu, x.numel(), -0.25, 3.0, True, 0, 0)
    assert torch.allclose(x.double(), x0.double() - 0.25 * (vu.double() + 3 * (vel.double() - vu.double())),
                          atol=1e-5)
    cache = torch.full((2, 3, 4, 5, 32), float("nan"), dtype=torch.bfloat16)
    value = torch.randn(2, 5, 3, 3, 32).to(torch.bfloat16)[:, :, 1].transpose(1, 2)  # (B, H, N, hd) strided
    emu.kv(2, cache, value, 2, 0, 0)
    assert torch.equal(cache[:, :, 2], value) and cache[:, :, [0, 1, 3]].isnan().all()
    xn = torch.randn(2, 3, 5, 40) * 2 + 1
    ada = torch.randn(2, 3, 6 * 40)
    shift, scale = ada.chunk(6, dim=-1)[:2]
    y = torch.empty_like(xn)
    emu.adaln(0, xn, shift, scale, y, 2, 3, 5, 40, shift.stride()[:2], scale.stride()[:2], 1e-6, 0, 0)
    x64 = xn.double()
    ref = (x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(x64.var(-1, unbiased=False, keepdim=True) + 1e-6)
    ref = ref * (1 + scale.double()[:, :, None]) + shift.double()[:, :, None]
    assert torch.allclose(y.double(), ref, atol=1e-5)


# ---------------------------------------------------------------------------
# Attention vs float64
# ---------------------------------------------------------------------------


def frame_mask(lq, lk, frame_len, off, device):
    qf = off + torch.arange(lq, device=device) // frame_len
    kf = torch.arange(lk, device=device) // frame_len
    return kf[None, :] <= qf[:, None]  # (Lq, Lk) True = visible


def attention64(q, k, v, frame_len, off, causal, scale):
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if causal:
        s = s.masked_fill(~frame_mask(q.shape[2], k.shape[2], frame_len, off, q.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ v.double()


def make_qkv(b, h, lq, lk, hd, dtype, strided):
    """Random q (B, H, Lq, hd), k/v (B, H, Lk, hd); strided: views of fused qkv buffers as
    the model makes them (B, L, 3, H, hd) -> permute."""
    g = torch.Generator(device="cuda").manual_seed(b * 1000 + lq * 7 + lk + hd)
    if strided:
        qb = torch.randn(b, lq, 3, h, hd, device="cuda", generator=g).to(dtype)
        kvb = torch.randn(b, lk, 3, h, hd, device="cuda", generator=g).to(dtype)
        return qb[:, :, 0].transpose(1, 2), kvb[:, :, 1].transpose(1, 2), kvb[:, :, 2].transpose(1, 2)
    return tuple(torch.randn(b, h, n, hd, device="cuda", generator=g).to(dtype) for n in (lq, lk, lk))


# (B, H, Lq, Lk, hd, frame_len, q_frame_offset, causal, strided)
ATTN_CASES = [
    (1, 4, 64, 9 * 64, 32, 64, 8, False, True),  # default-model rollout: split-KV
    (1, 4, 256, 33 * 256, 64, 256, 32, False, False),  # batch 1, 256 patches, 32 context frames
    (8, 8, 64, 17 * 64, 64, 64, 16, True, True),
    (64, 8, 64, 9 * 64, 32, 64, 8, False, False),  # large batch: no split
    (2, 3, 5 * 37, 5 * 37, 64, 37, 0, True, True),  # block-causal prefill, odd frame length
    (3, 2, 50, 113, 32, 10, 3, True, False),  # partly visible keys, odd lengths
    (1, 1, 1, 1, 64, 1, 0, True, False),  # one query, one key
    (1, 2, 1, 100, 128, 7, 14, True, False),  # one query, odd key count
    (2, 2, 70, 70, 128, 70, 0, True, True),  # hd 128, one frame
    (1, 6, 200, 1000, 128, 100, 8, True, False),  # hd 128, split-KV with causal clipping
    (4, 4, 33, 165, 32, 33, 4, True, False),
]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("variant", ["simt", "tc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: "B{}H{}q{}k{}d{}f{}o{}{}{}".format(
    c[0], c[1], c[2], c[3], c[4], c[5], c[6], "c" if c[7] else "", "s" if c[8] else ""))
@pytest.mark.parametrize("via", BACKENDS)
def test_patch_attention_matches_float64(via, case, dtype, variant, monkeypatch):
    backend_or_skip(via)
    if variant == "tc" and (dtype == torch.float32 or torch.cuda.get_device_capability() < (8, 0)):
        pytest.skip("tensor-core kernel: fp16/bf16 on sm_80+")
    monkeypatch.setenv(kc.ATTN_VARIANT_ENV, variant)
    b, h, lq, lk, hd, frame_len, off, causal, strided = case
    q, k, v = make_qkv(b, h, lq, lk, hd, dtype, strided)
    scale = 1.0 / math.sqrt(hd)
    ref = attention64(q, k, v, frame_len, off, causal, scale)
    poison_allocator(4 * 64 * b * h * lq * (hd + 2))
    out = torch.full(q.shape, float("nan"), device="cuda", dtype=dtype)
    res = kc.patch_attention(q, k, v, frame_len=frame_len, q_frame_offset=off, causal=causal, out=out, via=via)
    torch.cuda.synchronize()
    assert res.data_ptr() == out.data_ptr()
    assert torch.isfinite(out).all(), "unwritten (poisoned) output elements"
    err = (out.double() - ref).abs().max().item()
    top = ref.abs().max().item()
    if dtype == torch.float32:
        assert err <= 1e-5 * top + 1e-6, err
    else:
        mask = None if not causal else frame_mask(lq, lk, frame_len, off, q.device)
        sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        err_torch = (sdpa.double() - ref).abs().max().item()
        assert err <= 2 * err_torch + torch.finfo(dtype).eps * top, (err, err_torch)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("variant", ["simt", "tc"])
@pytest.mark.parametrize("length", [37, 200, 13])
@pytest.mark.parametrize("via", BACKENDS)
def test_forced_split_kv_any_chunking(via, length, variant, monkeypatch):
    """Arbitrary chunk lengths (not multiples of the key tile), chunks past the causal limit."""
    backend_or_skip(via)
    if variant == "tc" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("tensor-core kernel needs sm_80+")
    monkeypatch.setenv(kc.ATTN_VARIANT_ENV, variant)
    lk = 250
    monkeypatch.setattr(kc, "plan_splits", lambda *a: (-(-lk // length), length))
    q, k, v = make_qkv(2, 3, 90, lk, 64, torch.bfloat16, True)
    for causal, off in ((True, 0), (True, 2), (False, 0)):
        ref = attention64(q, k, v, 30, off, causal, 0.125)
        poison_allocator(1 << 22)
        out = torch.full(q.shape, float("nan"), device="cuda", dtype=q.dtype)
        kc.patch_attention(q, k, v, frame_len=30, q_frame_offset=off, causal=causal, scale=0.125, out=out, via=via)
        mask = frame_mask(90, lk, 30, off, q.device) if causal else None
        err_torch = (F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.125).double() - ref).abs().max()
        assert torch.isfinite(out).all()
        err = (out.double() - ref).abs().max()
        assert err <= 2 * err_torch + torch.finfo(q.dtype).eps * ref.abs().max(), (causal, off, err, err_torch)


@pytest.mark.gpu
@needs_cuda
def test_attention_input_errors_and_fallbacks():
    from simcore.kernels import KernelInputError

    q = torch.randn(1, 2, 8, 64, device="cuda")
    with pytest.raises(KernelInputError, match="frame_len"):
        kc.patch_attention(q, q, q, frame_len=0)
    with pytest.raises(KernelInputError, match="q_frame_offset"):
        kc.patch_attention(q, q, q, frame_len=4, q_frame_offset=-1)
    with pytest.raises(KernelInputError, match="equal batch"):
        kc.patch_attention(q, q[:, :1], q[:, :1], frame_len=4)
    with pytest.raises(KernelInputError, match="CUDA"):
        kc.patch_attention(q.cpu(), q.cpu(), q.cpu(), frame_len=4)
    # a head dim the kernels do not cover goes through the torch reference
    q48 = torch.randn(1, 2, 8, 48, device="cuda")
    out = kc.patch_attention(q48, q48, q48, frame_len=4)
    ref = attention64(q48, q48, q48, 4, 0, True, 48 ** -0.5)
    assert (out.double() - ref).abs().max() < 1e-4


# ---------------------------------------------------------------------------
# Rollout ops vs float64
# ---------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("via", BACKENDS)
def test_euler_update(via, dtype):
    backend_or_skip(via)
    g = torch.Generator(device="cuda").manual_seed(3)
    for shape in ((1, 1, 4, 16, 16), (3, 1, 5, 7, 9), (1,)):
        x0 = torch.randn(shape, device="cuda", generator=g).to(dtype)
        v = torch.randn(shape, device="cuda", generator=g).to(dtype)
        vu = torch.randn(shape, device="cuda", generator=g).to(dtype)
        for guided in (False, True):
            x = x0.clone()
            if guided:
                kc.euler_update(x, v, -0.25, v_uncond=vu, guidance=3.0, via=via)
                ref = x0.double() - 0.25 * (vu.double() + 3.0 * (v.double() - vu.double()))
            else:
                kc.euler_update(x, v, -0.25, via=via)
                ref = x0.double() - 0.25 * v.double()
            eps = torch.finfo(dtype).eps
            tol = (2 * eps if dtype != torch.float32 else 4 * eps) * (ref.abs().max().item() + 1)
            assert (x.double() - ref).abs().max().item() <= tol, (shape, guided)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("via", BACKENDS)
def test_kv_write(via, dtype):
    backend_or_skip(via)
    b, h, w, n, hd = 2, 3, 5, 7, 32
    cache = torch.full((b, h, w, n, hd), float("nan"), device="cuda", dtype=dtype)
    expect = cache.clone()
    for slot in (0, 3, 4, 3):
        qkv = torch.randn(b, n, 3, h, hd, device="cuda").to(dtype)
        value = qkv[:, :, 1].transpose(1, 2)  # (B, H, N, hd), strided like the model's k
        assert kc.kv_write(cache, slot, value, via=via) is cache
        expect[:, :, slot] = value
    assert torch.equal(cache.isnan(), expect.isnan())
    assert torch.equal(torch.nan_to_num(cache), torch.nan_to_num(expect))  # exact copies; untouched slots stay
    with pytest.raises(ValueError, match="slot"):
        kc.kv_write(cache, 5, value, via=via)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("via", BACKENDS)
def test_ada_layernorm(via, dtype):
    backend_or_skip(via)
    for b, t, n, d in ((1, 1, 64, 128), (2, 3, 17, 384), (1, 2, 5, 33), (4, 1, 1, 1000)):
        x = (torch.randn(b, t, n, d, device="cuda") * 3 + 1).to(dtype)
        ada = torch.randn(b, t, 6 * d, device="cuda").to(dtype)
        shift, scale = ada.chunk(6, dim=-1)[:2]  # strided views, as the model passes them
        x64 = x.double()
        mu, var = x64.mean(-1, keepdim=True), x64.var(-1, unbiased=False, keepdim=True)
        ref = (x64 - mu) / torch.sqrt(var + 1e-6) * (1 + scale.double()[:, :, None]) + shift.double()[:, :, None]
        y = kc.ada_layernorm(x, shift, scale, eps=1e-6, via=via)
        assert torch.isfinite(y).all() and y.shape == x.shape and y.dtype == dtype
        err = (y.double() - ref).abs().max().item()
        if dtype == torch.float32:
            assert err <= 1e-5 * ref.abs().max().item(), err
        else:
            yt = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale[:, :, None]) + shift[:, :, None]
            err_torch = (yt.double() - ref).abs().max().item()
            assert err <= 2 * err_torch + torch.finfo(dtype).eps * ref.abs().max().item(), (err, err_torch)


# ---------------------------------------------------------------------------
# The model on CUDA through the kernels, and the graphed rollout
# ---------------------------------------------------------------------------


def _cuda_model(size="tiny"):
    from simcore.model import WorldModel, config_for

    torch.manual_seed(0)
    model = WorldModel(config_for(size, frame_size=(64, 64), num_actions=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.to("cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("via", BACKENDS)
def test_model_rollout_with_kernels_matches_reference(via, monkeypatch):
    """The whole rollout through simcore.kernels' CUDA path vs the forced torch reference."""
    from simcore.rollout import Rollout

    backend_or_skip(via)
    monkeypatch.setenv(kc.BACKEND_ENV, via)
    model = _cuda_model("small")
    lat = torch.randn(1, 3, *model.latent_shape, device="cuda")

    def run():
        r = Rollout(model, batch=1, steps=4, seed=1)
        r.prompt(lat, [[0, 1, 2]])
        return torch.stack([r.generate([1]) for _ in range(12)])

    fast = run()
    monkeypatch.setenv(kc.FORCE_REFERENCE_ENV, "1")
    ref = run()
    assert torch.allclose(fast, ref, rtol=1e-3, atol=1e-3), (fast - ref).abs().max()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 3])
def test_graphed_rollout_equals_eager(batch):
    from simcore.rollout import Rollout
    from simcore.rollout_graph import GraphedRollout

    model = _cuda_model("small")  # fp32: the model's conditioning path does not run in bf16
    lat = torch.randn(batch, 3, *model.latent_shape, device="cuda")
    acts = torch.randint(0, 4, (batch, 3))
    eager = Rollout(model, batch=batch, steps=4, seed=7)
    graphed = GraphedRollout(model, batch=batch, steps=4, seed=7)
    eager.prompt(lat, acts)
    graphed.prompt(lat, acts)
    g = torch.Generator().manual_seed(0)
    for f in range(model.cfg.dit.window + 8):
        a = torch.randint(0, 4, (batch,), generator=g)
        ze, zg = eager.generate(a), graphed.generate(a)
        assert torch.allclose(ze, zg, rtol=1e-4, atol=1e-4), (f, (ze - zg).abs().max())
    assert graphed.fallback_reason is None
    assert graphed.replays >= 5 and graphed.static_frames == 1
    assert torch.equal(eager.slot_frame, graphed.slot_frame) and eager.count == graphed.count
    # the wrapped rollout's state moves on consistently: snapshots round-trip through it
    snap = graphed.state_dict()
    z1 = graphed.generate([1] * batch)
    graphed.load_state_dict(snap)
    z2 = graphed.generate([1] * batch)
    assert torch.equal(z1, z2)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("via", BACKENDS)
def test_kernels_capture_in_cuda_graph(via):
    """Each kernel (split-KV attention + combine, Euler, KV write, adaLN) launched on the
    capturing stream is recorded and replays with fresh inputs."""
    backend_or_skip(via)
    q, k, v = make_qkv(1, 4, 64, 9 * 64, 32, torch.bfloat16, True)  # batch 1: split-KV
    x = torch.randn(1, 1, 4, 16, 16, device="cuda")
    vel = torch.randn_like(x)
    cache = torch.zeros(1, 4, 8, 64, 32, device="cuda")
    value = torch.randn(1, 4, 64, 32, device="cuda")
    xn = torch.randn(1, 1, 64, 128, device="cuda")
    shift, scale = torch.randn(1, 1, 256, device="cuda").chunk(2, dim=-1)
    out = torch.empty_like(q)
    x0 = x.clone()
    for _ in range(2):  # warm-up: JIT, plans, lazy module loading (none of it may happen in capture)
        kc.patch_attention(q, k, v, frame_len=64, q_frame_offset=8, causal=False, out=out, via=via)
        kc.euler_update(x, vel, -0.5, via=via)
        kc.kv_write(cache, 3, value, via=via)
        kc.ada_layernorm(xn, shift, scale, via=via)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kc.patch_attention(q, k, v, frame_len=64, q_frame_offset=8, causal=False, out=out, via=via)
        kc.euler_update(x, vel, -0.5, via=via)
        kc.kv_write(cache, 3, value, via=via)
        y = kc.ada_layernorm(xn, shift, scale, via=via)
    for _ in range(2):
        q.normal_(), k.normal_(), v.normal_(), value.normal_(), xn.normal_()
        x.copy_(x0)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = attention64(q, k, v, 64, 8, False, 32 ** -0.5)
        sdpa_err = (F.scaled_dot_product_attention(q, k, v).double() - ref).abs().max()
        assert (out.double() - ref).abs().max() <= 2 * sdpa_err + torch.finfo(q.dtype).eps * ref.abs().max()
        assert torch.allclose(x, x0 - 0.5 * vel, atol=1e-6)
        assert torch.equal(cache[:, :, 3], value)
        yt = F.layer_norm(xn, (128,), eps=1e-6) * (1 + scale[:, :, None]) + shift[:, :, None]
        assert torch.allclose(y, yt, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_backend_reports_a_path_on_gpu():
    """On a CUDA machine at least one backend works (the build or cupy), and describe() says which."""
    name = kc.backend()
    assert name in ("compiled", "cupy"), kc.describe()
    assert name in kc.describe() or "cupy" in kc.describe()
