"""World-model rollout speed: frames/s through the env, KV cache vs none, flat cost
over long rollouts, batch scaling. One process, ratios from the same run.

    python benchmarks/rollout_speed.py [--model default] [--long 10000] [--reps 50]
    python benchmarks/rollout_speed.py --quick --model /tmp/bench_model --out /tmp/r.json

Figures (see benchmarks/NOTES.md for what each one measures):
  1. env      end-to-end frames/s of simcore.make("simcore/Pong-v0", backend="model")
              while dreaming (64x64, batch 1, 4 steps), and the split: conditioning
              hook, Rollout.generate, decode (ms/frame).   target >= 15 frames/s
  2. cache    ms per generated frame, KV-cached vs uncached, context 16.   target >= 5x
  3. flat     per-frame ms around frame ~100 vs ~--long of one cached rollout; RSS and
              KV-cache bytes at both points.   target: within 10 %, cache bytes equal
  4. batch    env-frames/s of Rollout batch 1, 8, 64 (generate + decode), no target.
Also prints the FLOPs per generated frame derived from the model config.

Writes benchmarks/results/rollout_speed_<device>.json (--out) with the machine
described. Exits non-zero if any measurement is NaN/inf. Timings are medians over
--reps repetitions after --warmup, with the variants of a ratio interleaved rep by rep.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import simcore
from simcore.checkpoint import load_card, load_model, resolve
from simcore.model import SIZES, ModelConfig, WorldModel
from simcore.machine import describe as describe_machine
from simcore.rollout import Rollout

SCENE = "simcore/Pong-v0"
TARGET_ENV_FPS = 15.0
TARGET_CACHE_SPEEDUP = 5.0
TARGET_FLAT_TOLERANCE = 0.10


# ---------------------------------------------------------------------------
# Machine, memory, timing helpers
# ---------------------------------------------------------------------------


def machine(device: str) -> dict[str, Any]:
    return {**describe_machine(device), "torch_interop_threads": torch.get_num_interop_threads()}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def rss_bytes() -> int:
    """Current resident set size (from /proc/self/statm; peak RSS where that is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def make_sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


class Clock:
    """perf_counter timings with a device sync on both ends."""

    def __init__(self, device: str):
        self.sync = make_sync(device)

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """Median, mean, min and p90 in ms of a list of per-call durations (s)."""
    if not seconds:
        return {"median_ms": float("nan"), "mean_ms": float("nan"), "min_ms": float("nan"),
                "p90_ms": float("nan"), "n": 0}
    ms = sorted(s * 1e3 for s in seconds)
    return {"median_ms": round(statistics.median(ms), 4), "mean_ms": round(statistics.fmean(ms), 4),
            "min_ms": round(ms[0], 4), "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 4),
            "n": len(ms)}


def cache_bytes(r: Rollout) -> int:
    """Bytes held by a rollout's context state (KV ring or the uncached context tensors)."""
    if r.use_cache:
        return r.k.numel() * r.k.element_size() + r.v.numel() * r.v.element_size()
    return r.ctx_z.numel() * r.ctx_z.element_size() + r.ctx_a.numel() * r.ctx_a.element_size()


# ---------------------------------------------------------------------------
# FLOPs per generated frame, from the config
# ---------------------------------------------------------------------------


def dit_forward_flops(cfg: ModelConfig, q_frames: int, key_frames: int) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) of one DiT forward: ``q_frames`` frames of
    tokens in, attending to ``key_frames`` frames of keys (dense: a masked forward
    still computes the whole score matrix). Elementwise ops (norms, RoPE, adaLN
    modulation, softmax) are left out."""
    d = cfg.dit
    D, P = d.dim, cfg.ae.latent_channels * d.patch * d.patch
    h, w = (s // cfg.ae.factor for s in cfg.frame_size)
    N = (h // d.patch) * (w // d.patch)
    T, K = q_frames, key_frames * N
    hidden = int(D * d.mlp_ratio)
    linear = 2 * T * N * P * D  # patch embed
    linear += 2 * T * (2 * D * D + sum(cfg.cond_dims.values()) * D)  # t_embed MLP + plugin cond
    per_block = 2 * T * D * 6 * D + 2 * T * N * D * (3 * D + D + 2 * hidden)  # ada, qkv, proj, mlp
    linear += d.depth * per_block
    linear += 2 * T * D * 2 * D + 2 * T * N * D * P  # final adaLN + out
    attention = d.depth * 2 * (2 * T * N * K * D)  # q·kᵀ and p·v over all heads
    return {"linear": linear, "attention": attention, "total": linear + attention}


def decoder_flops(cfg: ModelConfig) -> int:
    """Conv FLOPs of decoding one latent frame to pixels (biases, norms, activations and
    upsampling left out)."""
    ae = cfg.ae
    levels = int(round(math.log2(ae.factor)))
    chans = [ae.base_channels * 2**i for i in range(levels + 1)]
    H, W = cfg.frame_size

    def conv(cin: int, cout: int, res: int, k: int = 3) -> int:
        return 2 * cin * cout * k * k * res

    res = (H // ae.factor) * (W // ae.factor)
    f = conv(ae.latent_channels, chans[-1], res) + 2 * conv(chans[-1], chans[-1], res)  # conv in + ResBlock
    for i in reversed(range(levels)):
        res *= 4
        f += conv(chans[i + 1], chans[i], res) + ae.blocks_per_level * 2 * conv(chans[i], chans[i], res)
    return f + conv(chans[0], 3, H * W)


def flops_per_frame(cfg: ModelConfig, steps: int, window: int) -> dict[str, Any]:
    """Steady state (context full, ``window`` frames): a cached frame is ``steps``
    one-frame forwards against window+1 frames of keys plus the forward that appends it
    to the cache (after evicting the oldest: window frames of keys); an uncached frame
    is ``steps`` forwards of all window+1 frames. Decode is one decoder pass."""
    step = dit_forward_flops(cfg, 1, window + 1)
    app = dit_forward_flops(cfg, 1, window)
    cached = {k: steps * step[k] + app[k] for k in step}
    unc_step = dit_forward_flops(cfg, window + 1, window + 1)
    uncached = {k: steps * unc_step[k] for k in unc_step}
    dec = decoder_flops(cfg)
    return {"window": window, "steps": steps, "dit_cached": cached, "dit_uncached": uncached, "decode": dec,
            "env_frame_total": cached["total"] + dec}


def flop_counter_check(model: WorldModel, r: Rollout, act, extra) -> dict[str, Any] | None:
    """The same counts measured with torch's FlopCounterMode on one generate + decode
    (it counts matmuls/convs; on CPU it does not see scaled_dot_product_attention)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover
        return None
    out: dict[str, Any] = {}
    with FlopCounterMode(display=False) as fc:
        z = r.generate(act, extra)
    ops = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    out["generate_linear"] = sum(v for k, v in ops.items() if "attention" not in k)
    out["generate_attention"] = sum(v for k, v in ops.items() if "attention" in k)
    with FlopCounterMode(display=False) as fc:
        model.decode_latents(z[:, None])
    out["decode"] = int(fc.get_total_flops())
    return out


# ---------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------


def cond_extra(model: WorldModel, batch: int = 1) -> dict[str, torch.Tensor] | None:
    """Placeholder conditioning vectors for direct Rollout use (values do not change cost)."""
    if not model.cfg.cond_dims:
        return None
    return {k: torch.full((batch, n), 0.1) for k, n in model.cfg.cond_dims.items()}


def prompted_rollout(model: WorldModel, *, batch: int, steps: int, window: int, frames: int, scene: int,
                     use_cache: bool = True, seed: int = 0, extra=None) -> Rollout:
    """A Rollout whose context holds ``frames`` random latent frames (seeded)."""
    r = Rollout(model, batch=batch, steps=steps, window=window, use_cache=use_cache, scene=scene, seed=seed)
    g = torch.Generator().manual_seed(1234 + seed)
    lat = torch.randn(batch, frames, *model.latent_shape, generator=g).to(r.device, r.dtype)
    acts = torch.randint(1, model.cfg.num_actions + 1, (batch, frames), generator=g)
    r.prompt(lat, acts, extra)
    return r


def figure_env(model, args, clock, scene_index) -> dict[str, Any]:
    """1. End-to-end env frames/s while dreaming, and the split, interleaved per rep."""
    env = simcore.make(SCENE, backend="model", model=model, denoise_steps=args.steps, device=args.device)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    prompt_steps = 0
    while not env.dreaming:
        env.step(int(rng.integers(env.action_space.n)))
        prompt_steps += 1
    dreamer = env.dreamer
    split = prompted_rollout(model, batch=1, steps=args.steps, window=dreamer.context, frames=dreamer.context,
                             scene=scene_index, seed=1, extra=dreamer.conditioning(env.t))
    t_env, t_cond, t_gen, t_dec = [], [], [], []
    z = None
    for i in range(args.warmup + args.reps):
        a = int(rng.integers(env.action_space.n))
        dt_env, (_, _, _, _, info) = clock.time(lambda: env.step(a))
        if not info.get("dream"):
            raise RuntimeError("the env stopped dreaming; the benchmark measures dream steps only")
        dt_cond, extra = clock.time(lambda: dreamer.conditioning(env.t))
        dt_gen, z = clock.time(lambda: split.generate(a + 1, extra))
        dt_dec, _ = clock.time(lambda: model.decode_latents(z[:, None])[0, 0].cpu().numpy())
        if i >= args.warmup:
            t_env.append(dt_env), t_cond.append(dt_cond), t_gen.append(dt_gen), t_dec.append(dt_dec)
    env.close()
    e2e = summary_ms(t_env)
    gen, dec, cond = summary_ms(t_gen), summary_ms(t_dec), summary_ms(t_cond)
    fps = 1e3 / e2e["median_ms"]
    return {
        "scene": SCENE, "frame_size": list(model.cfg.frame_size), "batch": 1, "denoise_steps": args.steps,
        "context": dreamer.context, "prompt_steps": prompt_steps,
        "frames_per_s": round(fps, 3),
        "frames_per_s_mean": round(1e3 / e2e["mean_ms"], 3),
        "end_to_end": e2e, "conditioning_hook": cond, "generate": gen, "decode": dec,
        "other_ms": round(e2e["median_ms"] - cond["median_ms"] - gen["median_ms"] - dec["median_ms"], 4),
        "target_frames_per_s": TARGET_ENV_FPS, "pass": bool(fps >= TARGET_ENV_FPS),
    }


def figure_cache(model, args, clock, scene_index) -> dict[str, Any]:
    """2. Cached vs uncached ms per generated frame at a full context of --ctx frames."""
    extra = cond_extra(model)
    kw = dict(batch=1, steps=args.steps, window=args.ctx, frames=args.ctx, scene=scene_index, seed=2, extra=extra)
    cached = prompted_rollout(model, use_cache=True, **kw)
    uncached = prompted_rollout(model, use_cache=False, **kw)
    t_c, t_u, diff = [], [], float("nan")
    rng = np.random.default_rng(1)
    for i in range(args.warmup + args.reps):
        a = int(rng.integers(1, model.cfg.num_actions + 1))
        dt_c, zc = clock.time(lambda: cached.generate(a, extra))
        dt_u, zu = clock.time(lambda: uncached.generate(a, extra))
        if i == 0:  # same seed, same context: the first frames agree (sanity of the comparison)
            diff = float((zc - zu).abs().max())
        if i >= args.warmup:
            t_c.append(dt_c), t_u.append(dt_u)
    c, u = summary_ms(t_c), summary_ms(t_u)
    speedup = u["median_ms"] / c["median_ms"]
    return {"context": args.ctx, "denoise_steps": args.steps, "batch": 1,
            "cached": c, "uncached": u, "speedup": round(speedup, 3),
            "first_frame_max_abs_diff": diff,
            "cache_bytes_cached": cache_bytes(cached), "context_bytes_uncached": cache_bytes(uncached),
            "target_speedup": TARGET_CACHE_SPEEDUP, "pass": bool(speedup >= TARGET_CACHE_SPEEDUP)}


def figure_flat(model, args, clock, scene_index) -> dict[str, Any]:
    """3. One cached rollout to --long frames: per-frame cost and memory near --short and --long."""
    extra = cond_extra(model)
    window = args.flat_window or model.cfg.dit.window
    r = prompted_rollout(model, batch=1, steps=args.steps, window=window, frames=1, scene=scene_index, seed=3,
                         extra=extra)
    half = args.span // 2
    points = {"short": args.short, "long": args.long}
    ranges = {k: range(p - half, p - half + args.span) for k, p in points.items()}
    times: dict[str, list[float]] = {k: [] for k in points}
    mem: dict[str, dict[str, int]] = {}
    chunk = max(args.long // 20, args.span)  # a coarse per-frame cost profile over the whole run
    profile: list[dict[str, float]] = []
    cur: list[float] = []
    rng = np.random.default_rng(2)
    acts = rng.integers(1, model.cfg.num_actions + 1, size=1024)
    t0 = time.perf_counter()
    last_report = t0
    end = ranges["long"].stop
    ref: Rollout | None = None  # a copy of the rollout at the start of the short window
    t_ref: list[float] = []
    while r.count < end:
        frame = r.count  # the global index of the frame about to be generated
        if frame == ranges["short"].start:
            ref = Rollout(model, batch=1, steps=args.steps, window=window, scene=scene_index)
            ref.load_state_dict(r.state_dict())
        a = int(acts[frame % len(acts)])
        dt, _ = clock.time(lambda: r.generate(a, extra))
        cur.append(dt)
        for k, rg in ranges.items():
            if frame in rg:
                times[k].append(dt)
            if frame == points[k]:
                mem[k] = {"frame": frame, "rss_bytes": rss_bytes(), "cache_bytes": cache_bytes(r)}
        if frame in ranges["long"] and ref is not None:  # replay the short window, interleaved
            a_ref = int(acts[ref.count % len(acts)])
            dt_ref, _ = clock.time(lambda: ref.generate(a_ref, extra))
            t_ref.append(dt_ref)
        if len(cur) == chunk:
            profile.append({"frames": f"{frame + 1 - chunk}-{frame}",
                            "median_ms": round(statistics.median(cur) * 1e3, 4)})
            cur = []
        now = time.perf_counter()
        if args.progress and now - last_report > 30:
            print(f"  flat: frame {frame}/{end} ({now - t0:.0f} s)", file=sys.stderr, flush=True)
            last_report = now
    s, lg, rf = summary_ms(times["short"]), summary_ms(times["long"]), summary_ms(t_ref)
    ratio = lg["median_ms"] / s["median_ms"]
    ratio_il = lg["median_ms"] / rf["median_ms"]
    cache_equal = mem["short"]["cache_bytes"] == mem["long"]["cache_bytes"]
    rss_growth = mem["long"]["rss_bytes"] - mem["short"]["rss_bytes"]
    return {"window": window, "denoise_steps": args.steps, "batch": 1, "span": args.span,
            "short": {**s, **mem["short"], "frames": f"{ranges['short'].start}-{ranges['short'].stop - 1}"},
            "long": {**lg, **mem["long"], "frames": f"{ranges['long'].start}-{ranges['long'].stop - 1}"},
            "ratio": round(ratio, 4),
            "short_replayed_during_long": {**rf, "frames": f"{ranges['short'].start}-{ranges['short'].stop - 1}"},
            "ratio_interleaved": round(ratio_il, 4),
            "pass_interleaved": bool(abs(ratio_il - 1.0) <= TARGET_FLAT_TOLERANCE and cache_equal),
            "rss_growth_bytes": rss_growth, "peak_rss_bytes": peak_rss_bytes(),
            "cache_bytes_equal": bool(cache_equal), "wall_s": round(time.perf_counter() - t0, 2),
            "profile": profile,
            "target_ratio_tolerance": TARGET_FLAT_TOLERANCE,
            "pass": bool(abs(ratio - 1.0) <= TARGET_FLAT_TOLERANCE and cache_equal)}


def figure_batch(model, args, clock, scene_index) -> dict[str, Any]:
    """4. Env-frames/s of a batched rollout (generate + decode per step)."""
    rows = []
    window = model.cfg.dit.window
    for b in args.batches:
        extra = cond_extra(model, b)
        r = prompted_rollout(model, batch=b, steps=args.steps, window=window, frames=window, scene=scene_index,
                             seed=4, extra=extra)
        g = torch.Generator().manual_seed(5)
        t_step, t_gen, t_dec = [], [], []
        for i in range(args.warmup + args.batch_reps):
            a = torch.randint(1, model.cfg.num_actions + 1, (b,), generator=g)
            dt_gen, z = clock.time(lambda: r.generate(a, extra))
            dt_dec, _ = clock.time(lambda: model.decode_latents(z[:, None]).cpu())
            if i >= args.warmup:
                t_step.append(dt_gen + dt_dec), t_gen.append(dt_gen), t_dec.append(dt_dec)
        st = summary_ms(t_step)
        rows.append({"batch": b, "step": st, "generate": summary_ms(t_gen), "decode": summary_ms(t_dec),
                     "env_frames_per_s": round(b * 1e3 / st["median_ms"], 3)})
    return {"window": window, "denoise_steps": args.steps, "rows": rows}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def nan_paths(x: Any, path: str = "") -> list[str]:
    """Paths of every NaN/inf float in a nested report."""
    if isinstance(x, float):
        return [path] if not math.isfinite(x) else []
    if isinstance(x, dict):
        return [p for k, v in x.items() for p in nan_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(x, (list, tuple)):
        return [p for i, v in enumerate(x) for p in nan_paths(v, f"{path}[{i}]")]
    return []


def mflop(x: float) -> str:
    return f"{x / 1e6:,.1f} MFLOP"


def print_summary(rep: dict[str, Any]) -> None:
    f, r = rep["flops_per_frame"], rep["results"]
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    m = rep["model"]
    print(f"model {m['name']} ({m['size_guess']}): {m['parameters']['total']:,} parameters "
          f"(AE {m['parameters']['autoencoder']:,}, DiT {m['parameters']['dit']:,}); "
          f"threads {rep['machine']['torch_threads']}; load avg {rep['machine']['loadavg_start']}")
    print(f"FLOPs per generated frame ({f['env']['steps']} steps, context {f['env']['window']}): "
          f"DiT {mflop(f['env']['dit_cached']['total'])} (attention {mflop(f['env']['dit_cached']['attention'])})"
          f" + decode {mflop(f['env']['decode'])} = {mflop(f['env']['env_frame_total'])}; "
          f"{TARGET_ENV_FPS:g} frames/s needs {f['env']['env_frame_total'] * TARGET_ENV_FPS / 1e9:.1f} GFLOP/s")
    print(f"  context {f['cache']['window']}: cached DiT {mflop(f['cache']['dit_cached']['total'])}, uncached "
          f"{mflop(f['cache']['dit_uncached']['total'])} ({f['cache']['flop_ratio']:.1f}x the work)")
    if "env" in r:
        e = r["env"]
        print(f"1. env {e['scene']} dreaming: {e['frames_per_s']:.1f} frames/s "
              f"(median {e['end_to_end']['median_ms']:.1f} ms) [{ok(e['pass'])} >= {TARGET_ENV_FPS:g}]; "
              f"split: generate {e['generate']['median_ms']:.1f} ms, "
              f"decode {e['decode']['median_ms']:.1f} ms, conditioning {e['conditioning_hook']['median_ms']:.3f} ms, "
              f"other {e['other_ms']:.1f} ms")
    if "cache" in r:
        c = r["cache"]
        print(f"2. context {c['context']}: cached {c['cached']['median_ms']:.1f} ms/frame, uncached "
              f"{c['uncached']['median_ms']:.1f} ms/frame: {c['speedup']:.2f}x [{ok(c['pass'])} >= "
              f"{TARGET_CACHE_SPEEDUP:g}x]")
    if "flat" in r:
        fl = r["flat"]
        print(f"3. flat: frames {fl['short']['frames']} {fl['short']['median_ms']:.1f} ms, "
              f"frames {fl['long']['frames']} {fl['long']['median_ms']:.1f} ms: "
              f"ratio {fl['ratio']:.3f} [{ok(fl['pass'])} within "
              f"{TARGET_FLAT_TOLERANCE:.0%}]; interleaved replay of the early frames: ratio "
              f"{fl['ratio_interleaved']:.3f} [{ok(fl['pass_interleaved'])}]; "
              f"RSS {fl['short']['rss_bytes'] / 2**20:.1f} -> "
              f"{fl['long']['rss_bytes'] / 2**20:.1f} MiB; cache {fl['short']['cache_bytes']:,} -> "
              f"{fl['long']['cache_bytes']:,} B ({fl['wall_s']:.0f} s)")
    if "batch" in r:
        print("4. batch: " + ", ".join(f"B={row['batch']} {row['env_frames_per_s']:.1f} frames/s "
                                       f"({row['step']['median_ms']:.1f} ms/step)" for row in r["batch"]["rows"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="shipped model name, directory or .safetensors file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=4, help="denoising (Euler) steps per frame")
    ap.add_argument("--reps", type=int, default=50, help="timed repetitions for figures 1 and 2")
    ap.add_argument("--warmup", type=int, default=5, help="untimed repetitions before each measurement")
    ap.add_argument("--ctx", type=int, default=16, help="context frames for the cached/uncached comparison")
    ap.add_argument("--short", type=int, default=100, help="early frame of the flat-cost comparison")
    ap.add_argument("--long", type=int, default=10000, help="late frame of the flat-cost comparison")
    ap.add_argument("--span", type=int, default=50, help="frames timed around each flat-cost point")
    ap.add_argument("--flat-window", type=int, default=0, help="rollout window for figure 3 (0: the model's)")
    ap.add_argument("--batches", default="1,8,64", help="batch sizes for figure 4")
    ap.add_argument("--batch-reps", type=int, default=20, help="timed steps per batch size")
    ap.add_argument("--only", default="env,cache,flat,batch", help="comma-separated subset of figures to run")
    ap.add_argument("--quick", action="store_true", help="smoke run: reps 5, warmup 2, --long 300, batch-reps 3")
    ap.add_argument("--note", default="", help="free text stored in the report's note")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/rollout_speed_<device>.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.long, args.batch_reps = min(args.reps, 5), min(args.warmup, 2), 300, 3
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := only - {"env", "cache", "flat", "batch"}:
        ap.error(f"unknown figures in --only: {sorted(unknown)}")
    if args.reps < 1 or args.span < 2 or args.short - args.span // 2 < 1:
        ap.error("need --reps >= 1, --span >= 2 and --short - span/2 >= 1")
    if args.long - args.span // 2 < args.short - args.span // 2 + args.span:
        ap.error("--long must leave its span after --short's")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = args.device.split(":")[0]
    out = Path(args.out or Path(__file__).parent / "results" / f"rollout_speed_{dev}.json")

    load_start = loadavg()
    model = load_model(args.model, device=args.device)
    cfg = model.cfg
    scene_index = model.scene_index(SCENE) if SCENE in cfg.scenes else 0
    clock = Clock(args.device)

    flops = {"env": flops_per_frame(cfg, args.steps, cfg.dit.window),
             "cache": flops_per_frame(cfg, args.steps, args.ctx)}
    fc = flops["cache"]
    fc["flop_ratio"] = round(fc["dit_uncached"]["total"] / fc["dit_cached"]["total"], 3)
    results: dict[str, Any] = {}
    with torch.inference_mode():
        probe = prompted_rollout(model, batch=1, steps=args.steps, window=cfg.dit.window, frames=cfg.dit.window,
                                 scene=scene_index, extra=cond_extra(model))
        counted = flop_counter_check(model, probe, 1, cond_extra(model))
        if counted is not None:
            counted["analytic_generate_linear"] = flops["env"]["dit_cached"]["linear"]
            counted["analytic_decode"] = flops["env"]["decode"]
            counted["agree"] = bool(counted["generate_linear"] == counted["analytic_generate_linear"]
                                    and counted["decode"] == counted["analytic_decode"])
        flops["flop_counter_check"] = counted
        del probe
        for name, fn in (("env", figure_env), ("cache", figure_cache), ("batch", figure_batch), ("flat", figure_flat)):
            if name in only:
                if args.progress:
                    print(f"running figure {name} ...", file=sys.stderr, flush=True)
                results[name] = fn(model, args, clock, scene_index)
    # achieved throughput, from the config's FLOPs and the measured medians
    if "env" in results:
        e = results["env"]
        e["gflop_per_s_generate"] = round(flops["env"]["dit_cached"]["total"] / e["generate"]["median_ms"] / 1e6, 3)
        e["gflop_per_s_decode"] = round(flops["env"]["decode"] / e["decode"]["median_ms"] / 1e6, 3)

    params = model.num_parameters()
    size_guess = next((k for k, v in SIZES.items()
                       if v["dit"]["dim"] == cfg.dit.dim and v["dit"]["depth"] == cfg.dit.depth
                       and v["ae"]["base_channels"] == cfg.ae.base_channels), "custom")
    mach = machine(args.device)
    mach.update(loadavg_start=load_start, loadavg_end=loadavg())
    targets = {}
    if "env" in results:
        targets["env_frames_per_s>=15"] = {"value": results["env"]["frames_per_s"], "pass": results["env"]["pass"]}
    if "cache" in results:
        targets["kv_cache_speedup>=5x"] = {"value": results["cache"]["speedup"], "pass": results["cache"]["pass"]}
    if "flat" in results:
        fl = results["flat"]
        targets["flat_cost_within_10%"] = {"value": fl["ratio"], "pass": fl["pass"],
                                           "cache_bytes_equal": fl["cache_bytes_equal"],
                                           "value_interleaved": fl["ratio_interleaved"],
                                           "pass_interleaved": fl["pass_interleaved"]}
    card = load_card(args.model) if args.model else {}
    busy = load_start is not None and mach["cores"] and load_start[0] > 0.5 * mach["cores"]
    report = {
        "benchmark": "rollout_speed",
        "command": shlex.join(["python", "benchmarks/rollout_speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": mach,
        "model": {"name": args.model, "path": str(resolve(args.model)), "size_guess": size_guess,
                  "parameters": params, "config": cfg.to_dict(), "card_note": card.get("note")},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "note", "progress")},
        "flops_per_frame": flops,
        "results": results,
        "targets": targets,
        "note": " ".join(s for s in [
            args.note,
            "Medians over the timed reps after warm-up; the two sides of each ratio are interleaved rep by rep. "
            "FLOPs are matmul/conv FLOPs (2 per multiply-add) derived from the config.",
            "WARNING: the machine was busy when the run started (1-min load average "
            f"{load_start[0]} on {mach['cores']} cores); absolute timings are depressed." if busy else "",
        ] if s),
    }
    bad = nan_paths(report)
    report["nan_check"] = {"ok": not bad, "nan_fields": bad}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"wrote {out}")
    if bad:
        print(f"error: NaN/inf measurements: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
