"""Native kernels: every available path against a float64 reference, the dispatch
rules, bad-input errors, and the world model giving the same frames with and without
the kernels.

Runs in both CI modes: with the extension, the compiled paths (every SIMD build this
CPU supports) are checked; with SIMCORE_FORCE_REFERENCE=1 they skip and the reference
path is checked against float64 instead.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from simcore import kernels
from simcore.kernels import KernelInputError

FP32_RTOL = 1e-5


def _isas() -> list[str]:
    mod = kernels.native()
    return list(mod.build_info()["simd_usable"]) if mod is not None else []


#: ("dispatch", None) goes through kernels.patch_attention (whatever path is active);
#: ("isa", name) calls one SIMD build of simcore._C directly.
PATHS = [("dispatch", None)] + [("isa", name) for name in _isas()]


def _close(out: torch.Tensor, ref: torch.Tensor, rtol: float = FP32_RTOL) -> None:
    """fp32 result within rtol of the float64 reference, relative to the output's scale
    (attention outputs are convex combinations of v, so elementwise relative error is
    meaningless where a row averages to ~0)."""
    assert not torch.isnan(out).any(), "NaN left in the output (poisoned entries not written?)"
    err = (out.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rtol * max(scale, 1e-30), f"max abs error {err:.3e} > {rtol:g} x {scale:.3e}"


def _layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values in another memory layout: 'contig', 'bhld' (heads outermost after a
    transpose, like the model's qkv view), or 'strided' (every other element of the last
    dim, so the hd stride is 2)."""
    if kind == "contig":
        return t.contiguous()
    if kind == "bhld":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if kind == "strided":
        big = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    raise ValueError(kind)


def _run(path, q, k, v, *, frame_len, q_frame_offset, causal, scale=None):
    out = torch.full_like(q, float("nan"))  # poisoned: every entry must be written
    kind, isa = path
    if kind == "dispatch":
        res = kernels.patch_attention(q, k, v, frame_len=frame_len, q_frame_offset=q_frame_offset, causal=causal,
                                      scale=scale, out=out)
        assert res is out
        return out
    b, h, lq, hd = q.shape
    kernels.native().patch_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), [b, h, lq, k.shape[2], hd], list(q.stride()),
        list(k.stride()), list(v.stride()), list(out.stride()), frame_len, q_frame_offset, causal,
        1 / math.sqrt(hd) if scale is None else scale, torch.get_num_threads(), isa)
    return out


# (B, H, Lq, Lk, hd, frame_len, q_frame_offset, causal)
CASES = [
    (2, 3, 64, 9 * 64, 64, 64, 8, True),     # rollout form: one frame against 8 cached + itself
    (1, 2, 37, 37, 32, 5, 0, True),          # prefill form, lengths not multiples of any tile
    (1, 1, 1, 1, 32, 1, 0, True),            # one query, one key
    (1, 2, 1, 70, 64, 7, 9, True),           # one query, keys past the 64-key tile
    (2, 1, 19, 1, 64, 19, 0, True),          # one key
    (1, 2, 100, 300, 128, 50, 2, False),     # full attention, hd 128
    (1, 2, 13, 29, 48, 7, 1, True),          # generic head dim, masked tiles
    (1, 1, 130, 130, 64, 13, 0, True),       # several query tiles, frame boundaries inside tiles
    (2, 2, 33, 99, 32, 33, 1, True),         # rollout form, odd frame length
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p[1] or p[0])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + ("c" if c[7] else "f"))
def test_attention_matches_float64(path, case):
    b, h, lq, lk, hd, fl, off, causal = case
    g = torch.Generator().manual_seed(hash(case) % 2**31)
    q, k, v = (torch.randn(b, h, n, hd, generator=g) for n in (lq, lk, lk))
    ref = kernels.patch_attention_reference(q.double(), k.double(), v.double(), frame_len=fl, q_frame_offset=off,
                                            causal=causal)
    for _ in range(2):  # a second run on a freshly poisoned output
        _close(_run(path, q, k, v, frame_len=fl, q_frame_offset=off, causal=causal), ref)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p[1] or p[0])
@pytest.mark.parametrize("layout", ["bhld", "strided"])
def test_attention_any_strides(path, layout):
    g = torch.Generator().manual_seed(7)
    b, h, lq, lk, hd = 2, 3, 21, 3 * 21, 32
    q, k, v = (torch.randn(b, h, n, hd, generator=g) for n in (lq, lk, lk))
    ref = kernels.patch_attention_reference(q.double(), k.double(), v.double(), frame_len=21, q_frame_offset=1)
    qs, ks, vs = (_layout(t, layout) for t in (q, k, v))
    assert not ks.is_contiguous()
    _close(_run(path, qs, ks, vs, frame_len=21, q_frame_offset=1, causal=True), ref)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p[1] or p[0])
def test_attention_scale_and_large_scores(path):
    """An explicit scale, and scores large enough that an unstabilised softmax overflows."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 64, generator=g) * 6 for n in (40, 200, 200))
    ref = kernels.patch_attention_reference(q.double(), k.double(), v.double(), frame_len=40, q_frame_offset=4,
                                            scale=0.5)
    _close(_run(path, q, k, v, frame_len=40, q_frame_offset=4, causal=True, scale=0.5), ref, rtol=3e-5)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p[1] or p[0])
@pytest.mark.parametrize("split", [0, 64, 100, 9 * 64])
def test_attention_two_key_segments(path, split):
    """Keys/values given as (cache, new frame) pairs: the cache is read in place, and the
    result equals attention over their concatenation (segment ends inside a key tile,
    an empty segment, a strided cache)."""
    g = torch.Generator().manual_seed(split)
    b, h, p, hd = 2, 2, 64, 32
    q = torch.randn(b, h, p, hd, generator=g)
    k, v = (torch.randn(b, h, 10 * p, hd, generator=g) for _ in range(2))
    ref = kernels.patch_attention_reference(q.double(), k.double(), v.double(), frame_len=p, q_frame_offset=9)
    cache_k = _layout(k[:, :, :split], "bhld")  # (B, H, split, hd), non-contiguous like a gathered cache
    ks, vs = (cache_k, k[:, :, split:]), (v[:, :, :split], v[:, :, split:])
    out = torch.full_like(q, float("nan"))
    kind, isa = path
    if kind == "dispatch":
        kernels.patch_attention(q, ks, vs, frame_len=p, q_frame_offset=9, out=out)
    else:
        kernels.native().patch_attention(
            q.data_ptr(), ks[0].data_ptr(), vs[0].data_ptr(), out.data_ptr(), [b, h, p, 10 * p, hd],
            list(q.stride()), list(ks[0].stride()), list(vs[0].stride()), list(out.stride()), p, 9, True,
            1 / math.sqrt(hd), torch.get_num_threads(), isa, k2=ks[1].data_ptr(), v2=vs[1].data_ptr(),
            k2_strides=list(ks[1].stride()), v2_strides=list(vs[1].stride()), lk1=split)
    _close(out, ref)


def test_reference_mask_is_block_causal():
    m = kernels.frame_mask(6, 6, 2)
    expect = torch.tensor([[1, 1, 0, 0, 0, 0]] * 2 + [[1, 1, 1, 1, 0, 0]] * 2 + [[1] * 6] * 2, dtype=torch.bool)
    assert torch.equal(m, expect)
    # a query frame offset shifts the queries' frames: one frame at offset 2 sees 3 frames
    assert kernels.frame_mask(2, 6, 2, q_frame_offset=2).all()
    assert not kernels.frame_mask(2, 6, 2, q_frame_offset=1)[:, 4:].any()


# ---------------------------------------------------------------------------
# Rollout ops
# ---------------------------------------------------------------------------


def test_euler_update_plain_and_guided():
    g = torch.Generator().manual_seed(0)
    x, v, vu = (torch.randn(3, 1, 4, 16, 16, generator=g) for _ in range(3))
    want = x.double() + 0.25 * v.double()
    y = x.clone()
    assert kernels.euler_update(y, v, 0.25) is y  # in place
    _close(y, want)
    y = x.clone()
    kernels.euler_update(y, v, -0.5, v_uncond=vu, guidance=3.0)
    _close(y, x.double() - 0.5 * (vu.double() + 3.0 * (v.double() - vu.double())))
    # non-contiguous operands take the reference path and give the same numbers
    y = x.clone()
    kernels.euler_update(y, v.transpose(-1, -2).contiguous().transpose(-1, -2), 0.25)
    _close(y, want)


def test_kv_write_into_ring_slot_in_place():
    g = torch.Generator().manual_seed(1)
    ring = torch.randn(2, 5, 3, 4, 7, 8, generator=g)  # (depth, B, H, W, N, hd) like Rollout.k
    before = ring.clone()
    ptr = ring.data_ptr()
    value = torch.randn(5, 7, 3, 8, generator=g).permute(0, 2, 1, 3)  # (B, H, N, hd), non-contiguous
    out = kernels.kv_write(ring[1], 2, value)
    assert ring.data_ptr() == ptr and out.data_ptr() == ring[1].data_ptr()
    assert torch.equal(ring[1][:, :, 2], value)
    ring[1][:, :, 2] = before[1][:, :, 2]
    assert torch.equal(ring, before), "kv_write touched memory outside its slot"


def test_ada_layernorm_matches_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 17, 48, generator=g) * 3 + 1
    shift, scale, _ = torch.randn(2, 3, 3 * 48, generator=g).chunk(3, dim=-1)  # strided views, like adaLN chunks
    ref = kernels.ada_layernorm_reference(x.double(), shift.double(), scale.double())
    _close(kernels.ada_layernorm(x, shift, scale), ref)
    _close(kernels.ada_layernorm(x, shift.contiguous(), scale.contiguous(), eps=1e-6), ref)


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------


def test_force_reference(monkeypatch):
    monkeypatch.setenv(kernels.FORCE_REFERENCE_ENV, "1")
    assert kernels.native() is None
    assert kernels.active_path("cpu") == "reference"
    assert "forced" in kernels.describe()
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, n, 32, generator=g) for n in (8, 24, 24))
    ref = kernels.patch_attention_reference(q.double(), k.double(), v.double(), frame_len=8, q_frame_offset=2)
    _close(kernels.patch_attention(q, k, v, frame_len=8, q_frame_offset=2), ref)


def test_native_when_built(monkeypatch):
    monkeypatch.delenv(kernels.FORCE_REFERENCE_ENV, raising=False)
    built = importlib.util.find_spec("simcore._C") is not None
    mod = kernels.native()
    assert (mod is not None) == built
    if built:
        info = mod.build_info()
        assert {"openmp", "max_threads", "simd", "compiler", "simd_builds", "kernels"} <= set(info)
        assert info["simd"] in info["simd_usable"] and set(info["simd_usable"]) <= set(info["simd_builds"])
        assert "patch_attention" in info["kernels"]
        assert "simcore._C" in kernels.describe()
        assert kernels.active_path("cpu") == "compiled-cpu"
    else:
        assert "not built" in kernels.describe()
        assert kernels.active_path("cpu") == "reference"


def test_unknown_simd_build_is_refused():
    mod = kernels.native()
    if mod is None:
        pytest.skip("extension not built or forced off")
    q = torch.zeros(1, 1, 1, 32)
    with pytest.raises(ValueError, match="unknown SIMD build"):
        mod.patch_attention(q.data_ptr(), q.data_ptr(), q.data_ptr(), q.data_ptr(), [1, 1, 1, 1, 32], [32] * 4,
                            [32] * 4, [32] * 4, [32] * 4, 1, 0, True, 1.0, 1, "avx9000")


def test_autograd_goes_through_the_reference():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, n, 32, generator=g, dtype=torch.float64).requires_grad_() for n in (6, 18, 18))
    out = kernels.patch_attention(q, k, v, frame_len=6, q_frame_offset=2)
    out.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernels.patch_attention(a, b, c, frame_len=3, causal=True), (
            torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)))


def test_bad_inputs_name_the_problem():
    q, k = torch.zeros(1, 2, 4, 32), torch.zeros(1, 2, 8, 32)
    with pytest.raises(KernelInputError, match="4 dimensions"):
        kernels.patch_attention(q[0], k, k, frame_len=4)
    with pytest.raises(KernelInputError, match="agree on batch, heads and head dim"):
        kernels.patch_attention(q, torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), frame_len=4)
    with pytest.raises(KernelInputError, match="same shape"):
        kernels.patch_attention(q, k, torch.zeros(1, 2, 9, 32), frame_len=4)
    with pytest.raises(KernelInputError, match="floating-point"):
        kernels.patch_attention(q.long(), k.long(), k.long(), frame_len=4)
    with pytest.raises(KernelInputError, match="one dtype"):
        kernels.patch_attention(q, k.double(), k, frame_len=4)
    with pytest.raises(KernelInputError, match="one device"):
        kernels.patch_attention(q, k.to("meta"), k, frame_len=4)
    with pytest.raises(KernelInputError, match="frame_len"):
        kernels.patch_attention(q, k, k, frame_len=0)
    with pytest.raises(KernelInputError, match="q_frame_offset"):
        kernels.patch_attention(q, k, k, frame_len=4, q_frame_offset=-1)
    with pytest.raises(KernelInputError, match="at least one"):
        kernels.patch_attention(q, k[:, :, :0], k[:, :, :0], frame_len=4)
    with pytest.raises(KernelInputError, match="both be tensors or both"):
        kernels.patch_attention(q, (k, k), k, frame_len=4)
    with pytest.raises(KernelInputError, match="pair"):
        kernels.patch_attention(q, (k, k, k), (k, k, k), frame_len=4)
    with pytest.raises(KernelInputError, match="share memory"):
        kernels.patch_attention(q, k, k, frame_len=4, out=k[:, :, :4])
    with pytest.raises(KernelInputError, match="slot"):
        kernels.kv_write(torch.zeros(1, 2, 3, 4, 32), 3, torch.zeros(1, 2, 4, 32))
    with pytest.raises(KernelInputError, match=r"value must be \(B, H, N, hd\)"):
        kernels.kv_write(torch.zeros(1, 2, 3, 4, 32), 0, torch.zeros(1, 2, 5, 32))
    with pytest.raises(KernelInputError, match="go together"):
        kernels.euler_update(q.clone(), q, 0.1, guidance=2.0)
    with pytest.raises(KernelInputError, match="x's shape"):
        kernels.euler_update(q.clone(), k, 0.1)
    with pytest.raises(KernelInputError, match=r"shift must be \(\*G, D\)"):
        kernels.ada_layernorm(torch.zeros(2, 3, 5, 8), torch.zeros(2, 4, 8), torch.zeros(2, 3, 8))


# ---------------------------------------------------------------------------
# The model with and without the kernels
# ---------------------------------------------------------------------------


def _random_model():
    """A tiny world model with every weight random (the adaLN-Zero init would make the
    blocks identities and hide the attention)."""
    from simcore.model import WorldModel, config_for

    torch.manual_seed(0)
    model = WorldModel(config_for("tiny", scenes=("s",), num_actions=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def test_model_velocity_and_rollout_match_reference(monkeypatch):
    if kernels.native() is None:
        pytest.skip("extension not built or forced off: the model runs the reference path only")
    from simcore.rollout import Rollout

    model = _random_model()
    dit = model.dit
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2, 3, *model.latent_shape, generator=g)
    tau = torch.rand(2, 3, generator=g)
    acts = torch.randint(0, 4, (2, 3), generator=g)
    scene = torch.zeros(2, dtype=torch.long)
    lat = torch.randn(2, 4, *model.latent_shape, generator=g)

    def run():
        with torch.no_grad():
            v = dit(z, tau, acts, scene)  # block-causal prefill form over 3 frames
        frames = []
        for use_cache in (True, False):
            r = Rollout(model, batch=2, steps=3, window=3, seed=1, use_cache=use_cache)
            r.prompt(lat, torch.ones(2, 4, dtype=torch.long))
            frames.append(torch.stack([r.generate(torch.tensor([1, 2])) for _ in range(3)], 1))
        return v, frames

    v_k, frames_k = run()
    monkeypatch.setenv(kernels.FORCE_REFERENCE_ENV, "1")
    v_r, frames_r = run()
    _close(v_k, v_r.double(), rtol=1e-4)
    for fk, fr in zip(frames_k, frames_r):
        _close(fk, fr.double(), rtol=1e-4)


def test_training_keeps_autograd():
    """With grad enabled the blocks take the torch ops, so a loss still backpropagates."""
    model = _random_model().train()
    z = torch.randn(1, 2, *model.latent_shape)
    v = model.dit(z, torch.rand(1, 2), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    v.square().mean().backward()
    grads = [p.grad for p in model.dit.blocks[0].attn.qkv.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)


def test_installed_wheel_has_no_generic_top_level_names():
    import importlib.metadata

    files = importlib.metadata.files("simcore") or []
    tops = {str(f).split("/")[0] for f in files}
    assert "plugins" not in tops and "scenes" not in tops
    assert importlib.util.find_spec("simcore.plugins") is not None
    assert importlib.util.find_spec("simcore.scenes") is not None
