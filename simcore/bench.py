"""``simcore bench``: the native kernels against PyTorch, side by side in one process.

Two figures, every one a ratio of medians measured in the same process with the two
sides interleaved rep by rep (so machine load hits both alike):

1. **Patch attention, rollout form** — queries = one frame of P patches, keys/values =
   ctx cached frames + that frame ((ctx+1)·P keys, all visible). ``simcore.kernels.
   patch_attention`` (the active path) against ``F.scaled_dot_product_attention`` and
   an unfused matmul → softmax → matmul reference, over the grid batch × heads × head
   dim × patches/frame × context frames. Reports per-config medians and ratios, and
   the geometric mean and minimum of each ratio.
2. **End to end** — the shipped default model dreaming ``simcore/Pong-v0`` at 64×64,
   batch 1, 4 Euler steps: frames/s of ``env.step`` with the extension and with the
   pure-PyTorch path (``$SIMCORE_FORCE_REFERENCE`` toggled per call in the same run),
   plus the same split for ``Rollout.generate`` alone.

Each grid config gets a time budget: a few warm-up calls, then as many interleaved
reps as fit (at least ``MIN_REPS``), so the big configs get fewer repeats and the
full grid stays around 15 minutes on 2 cores. On a CUDA machine the GPU figures of
``simcore.bench_gpu.run`` (when that module exists) are merged in under ``"gpu"``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from simcore import kernels

#: the issue's grid (CPU): batch x heads x head dim x patches per frame x context frames
GRID = {"batch": (1, 8, 64), "heads": (4, 8), "head_dim": (32, 64), "patches": (64, 256), "context": (8, 16, 32)}
#: --quick: two small configs, enough for a smoke test of the whole pipeline
QUICK_GRID = [(1, 4, 32, 64, 8), (2, 4, 64, 64, 4)]
MIN_REPS, MAX_REPS, WARMUP = 5, 25, 2
UNFUSED_SCORE_BYTES = 256 << 20  # the unfused reference runs in batch chunks of at most this many score bytes
TARGETS = {"attention_geomean_vs_sdpa": 1.0, "attention_min_vs_sdpa": 0.8, "attention_geomean_vs_unfused": 5.0,
           "e2e_frames_per_s": 30.0, "e2e_speedup_vs_pytorch": 1.5}
SCENE = "simcore/Pong-v0"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def forced_reference(on: bool) -> Iterator[None]:
    """Run the block with $SIMCORE_FORCE_REFERENCE set (``on``), or as the caller has it
    (so a run that forces the reference everywhere measures reference on both sides and
    says so in ``path``), then restore it."""
    old = os.environ.get(kernels.FORCE_REFERENCE_ENV)
    if on:
        os.environ[kernels.FORCE_REFERENCE_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(kernels.FORCE_REFERENCE_ENV, None)
        else:
            os.environ[kernels.FORCE_REFERENCE_ENV] = old


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    """Seconds one call takes: wall-clock, or — when ``CLOCK["cpu"]`` is set (single-
    threaded CPU runs) — the calling thread's CPU time, which a busy machine's
    preemptions do not inflate (with one thread, torch and the kernels both run all
    their work on this thread)."""
    sync()
    clock = time.thread_time if CLOCK["cpu"] else time.perf_counter
    t0 = clock()
    fn()
    sync()
    return clock() - t0


#: which clock _timed uses; run() switches to thread CPU time for --threads 1 on CPU
CLOCK = {"cpu": False}


def _ms(xs: list[float]) -> dict[str, float]:
    s = sorted(x * 1e3 for x in xs)
    return {"median_ms": round(statistics.median(s), 4), "min_ms": round(s[0], 4), "n": len(s)}


def geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")


def unfused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale)·v as three separate ops, the score matrix materialised; run in
    batch chunks so the (B, H, Lq, Lk) scores stay under UNFUSED_SCORE_BYTES."""
    b, h, lq, _ = q.shape
    per_batch = h * lq * k.shape[2] * q.element_size()
    step = max(1, UNFUSED_SCORE_BYTES // per_batch)
    outs = []
    for i in range(0, b, step):
        s = torch.matmul(q[i:i + step], k[i:i + step].transpose(-1, -2)) * scale  # (b', H, Lq, Lk)
        outs.append(torch.matmul(torch.softmax(s, dim=-1), v[i:i + step]))
        del s
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def attention_configs(quick: bool) -> list[tuple[int, int, int, int, int]]:
    if quick:
        return list(QUICK_GRID)
    return list(itertools.product(*GRID.values()))


# ---------------------------------------------------------------------------
# 1. attention grid
# ---------------------------------------------------------------------------


def bench_attention_config(b: int, h: int, hd: int, p: int, ctx: int, *, device: str = "cpu",
                           budget_s: float = 10.0, seed: int = 0) -> dict[str, Any]:
    """One grid config: kernel vs SDPA vs unfused, interleaved, median ms and ratios."""
    lk = (ctx + 1) * p
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, p, hd, generator=g).to(device)  # (B, H, P, hd): the frame being denoised
    k = torch.randn(b, h, lk, hd, generator=g).to(device)  # (B, H, (ctx+1)·P, hd): cache + the frame
    v = torch.randn(b, h, lk, hd, generator=g).to(device)
    out = torch.empty_like(q)
    scale = 1.0 / math.sqrt(hd)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fns = {
        "kernel": lambda: kernels.patch_attention(q, k, v, frame_len=p, q_frame_offset=ctx, out=out),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "unfused": lambda: unfused_attention(q, k, v, scale),
    }
    with torch.inference_mode():
        ref = F.scaled_dot_product_attention(q, k, v)
        fns["kernel"]()
        max_diff = float((out - ref).abs().max())
        del ref
        first = {}
        for name, fn in fns.items():
            for _ in range(WARMUP - 1):
                fn()
            first[name] = _timed(fn, sync)
        reps = int(max(MIN_REPS, min(MAX_REPS, budget_s / max(sum(first.values()), 1e-6))))
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(reps):
            for name, fn in fns.items():
                times[name].append(_timed(fn, sync))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    flops = 4 * b * h * p * lk * hd
    return {
        "batch": b, "heads": h, "head_dim": hd, "patches": p, "context": ctx, "keys": lk, "reps": reps,
        "flops": flops, "bytes_min": 4 * (2 * b * h * p * hd + 2 * b * h * lk * hd),
        **{f"{name}_ms": round(m * 1e3, 4) for name, m in med.items()},
        "kernel_gflop_per_s": round(flops / med["kernel"] / 1e9, 2),
        "ratio_vs_sdpa": round(med["sdpa"] / med["kernel"], 4),
        "ratio_vs_unfused": round(med["unfused"] / med["kernel"], 4),
        "max_abs_diff_vs_sdpa": max_diff,
    }


def bench_attention(quick: bool, *, device: str = "cpu", budget_s: float | None = None,
                    progress: bool = True) -> dict[str, Any]:
    configs = attention_configs(quick)
    budget = budget_s if budget_s is not None else (0.5 if quick else 8.0)
    rows = []
    t0 = time.perf_counter()
    for i, (b, h, hd, p, ctx) in enumerate(configs):
        rows.append(bench_attention_config(b, h, hd, p, ctx, device=device, budget_s=budget, seed=i))
        if progress:
            r = rows[-1]
            print(f"[{i + 1}/{len(configs)} {time.perf_counter() - t0:.0f}s] B={b} H={h} hd={hd} P={p} ctx={ctx}: "
                  f"kernel {r['kernel_ms']:.3f} ms, x{r['ratio_vs_sdpa']:.2f} vs SDPA, "
                  f"x{r['ratio_vs_unfused']:.2f} vs unfused", file=sys.stderr, flush=True)
    vs_sdpa = [r["ratio_vs_sdpa"] for r in rows]
    vs_unf = [r["ratio_vs_unfused"] for r in rows]
    summary = {
        "configs": len(rows),
        "geomean_vs_sdpa": round(geomean(vs_sdpa), 4), "min_vs_sdpa": round(min(vs_sdpa), 4),
        "geomean_vs_unfused": round(geomean(vs_unf), 4), "min_vs_unfused": round(min(vs_unf), 4),
        "max_abs_diff_vs_sdpa": max(r["max_abs_diff_vs_sdpa"] for r in rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return {"form": "rollout: Lq = P (one frame), Lk = (ctx+1)*P, every key visible",
            "grid": {k: list(v) for k, v in GRID.items()} if not quick else [list(c) for c in QUICK_GRID],
            "path": kernels.active_path(device), "rows": rows, "summary": summary}


# ---------------------------------------------------------------------------
# 2. end to end
# ---------------------------------------------------------------------------


def bench_end_to_end(quick: bool, *, model_name: str = "default", steps: int = 4, device: str = "cpu",
                     progress: bool = True) -> dict[str, Any]:
    """The default model dreaming at batch 1: env.step and Rollout.generate, extension vs
    pure PyTorch, interleaved in one process."""
    import numpy as np

    import simcore
    from simcore.checkpoint import load_model, resolve
    from simcore.rollout import Rollout

    model = load_model(model_name, device=device)
    reps, warmup = (5, 1) if quick else (60, 5)
    rng = np.random.default_rng(0)
    envs = {}
    for side in ("kernels", "pytorch"):
        env = simcore.make(SCENE, backend="model", model=model, denoise_steps=steps, device=device)
        env.reset(seed=0)
        while not env.dreaming:
            env.step(int(rng.integers(env.action_space.n)))
        envs[side] = env
    scene = model.scene_index(SCENE) if SCENE in model.cfg.scenes else 0
    window = envs["kernels"].dreamer.context
    extra = envs["kernels"].dreamer.conditioning(envs["kernels"].t)
    rolls = {}
    for side in envs:
        r = Rollout(model, batch=1, steps=steps, window=window, scene=scene, seed=1)
        g = torch.Generator().manual_seed(5)
        r.prompt(torch.randn(1, window, *model.latent_shape, generator=g).to(device),
                 torch.ones(1, window, dtype=torch.long), extra)
        rolls[side] = r
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t_env: dict[str, list[float]] = {s: [] for s in envs}
    t_gen: dict[str, list[float]] = {s: [] for s in envs}
    for i in range(warmup + reps):
        a = int(rng.integers(envs["kernels"].action_space.n))
        for side, env in envs.items():
            with forced_reference(side == "pytorch"):
                dt_env = _timed(lambda env=env, a=a: env.step(a), sync)
                dt_gen = _timed(lambda r=rolls[side], a=a: r.generate(a + 1, extra), sync)
            if i >= warmup:
                t_env[side].append(dt_env)
                t_gen[side].append(dt_gen)
        if progress and i % 20 == 0:
            print(f"  end to end: rep {i}/{warmup + reps}", file=sys.stderr, flush=True)
    for env in envs.values():
        env.close()
    e = {s: _ms(t) for s, t in t_env.items()}
    gsum = {s: _ms(t) for s, t in t_gen.items()}
    fps = {s: 1e3 / e[s]["median_ms"] for s in e}
    return {
        "model": model_name, "model_path": str(resolve(model_name)), "scene": SCENE,
        "frame_size": list(model.cfg.frame_size), "batch": 1, "denoise_steps": steps, "context": window,
        "path": kernels.active_path(device),
        "env_step": e, "generate": gsum,
        "frames_per_s": {s: round(f, 3) for s, f in fps.items()},
        "speedup_vs_pytorch": round(fps["kernels"] / fps["pytorch"], 4),
        "generate_speedup_vs_pytorch": round(gsum["pytorch"]["median_ms"] / gsum["kernels"]["median_ms"], 4),
    }


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def which() -> dict[str, str]:
    """The active kernel path per device (what ``simcore bench --which`` prints)."""
    paths = {"cpu": kernels.active_path("cpu")}
    if torch.cuda.is_available():
        paths["cuda"] = kernels.active_path("cuda")
    return paths


def run(*, quick: bool = False, threads: int | None = None, progress: bool = True,
        attention_budget_s: float | None = None, end_to_end: bool = True) -> dict[str, Any]:
    """Every CPU figure (and the GPU ones on a CUDA machine) as one JSON-able dict."""
    from simcore.machine import describe as describe_machine

    if threads:
        torch.set_num_threads(int(threads))
    CLOCK["cpu"] = torch.get_num_threads() == 1 and not torch.cuda.is_available()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    native = kernels.native()
    report: dict[str, Any] = {
        "benchmark": "simcore bench", "quick": quick,
        "command": " ".join(["simcore", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None,
        "machine": {**describe_machine("cpu"), "loadavg_start": load_start,
                    "extension": native.build_info() if native is not None else None},
        "paths": which(), "describe": kernels.describe(),
        "clock": "thread CPU time (single-threaded: immune to preemption by other processes)" if CLOCK["cpu"]
                 else "wall clock (perf_counter)",
    }
    t0 = time.perf_counter()
    report["attention_cpu"] = bench_attention(quick, budget_s=attention_budget_s, progress=progress)
    if end_to_end:
        report["end_to_end_cpu"] = bench_end_to_end(quick, progress=progress)
    if torch.cuda.is_available() and importlib.util.find_spec("simcore.bench_gpu") is not None:
        report["gpu"] = importlib.import_module("simcore.bench_gpu").run(quick=quick)
    report["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["targets"] = targets(report)
    report["note"] = ("Ratios are medians measured side by side in one process, sides interleaved rep by rep; "
                      "absolute times depend on machine load (see loadavg), ratios much less. See 'clock'.")
    return report


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    s = report["attention_cpu"]["summary"]
    out = {
        "attention_geomean_vs_sdpa>=1.0": (s["geomean_vs_sdpa"], TARGETS["attention_geomean_vs_sdpa"]),
        "attention_min_vs_sdpa>=0.8": (s["min_vs_sdpa"], TARGETS["attention_min_vs_sdpa"]),
        "attention_geomean_vs_unfused>=5": (s["geomean_vs_unfused"], TARGETS["attention_geomean_vs_unfused"]),
    }
    if "end_to_end_cpu" in report:
        e = report["end_to_end_cpu"]
        out["e2e_frames_per_s>=30"] = (e["frames_per_s"]["kernels"], TARGETS["e2e_frames_per_s"])
        out["e2e_speedup_vs_pytorch>=1.5"] = (e["speedup_vs_pytorch"], TARGETS["e2e_speedup_vs_pytorch"])
    return {k: {"value": v, "threshold": t, "pass": bool(v >= t)} for k, (v, t) in out.items()}


def summary_lines(report: dict[str, Any]) -> list[str]:
    s = report["attention_cpu"]["summary"]
    lines = [f"paths: {report['paths']}",
             (f"attention ({s['configs']} configs, path {report['attention_cpu']['path']}): "
              f"x{s['geomean_vs_sdpa']:.2f} vs SDPA (geomean; min x{s['min_vs_sdpa']:.2f}), "
              f"x{s['geomean_vs_unfused']:.2f} vs unfused (min x{s['min_vs_unfused']:.2f})")]
    if "end_to_end_cpu" in report:
        e = report["end_to_end_cpu"]
        lines.append(f"end to end ({e['model']}, batch 1, {e['denoise_steps']} steps): "
                     f"{e['frames_per_s']['kernels']:.1f} frames/s with kernels vs "
                     f"{e['frames_per_s']['pytorch']:.1f} pure PyTorch (x{e['speedup_vs_pytorch']:.2f}; "
                     f"generate x{e['generate_speedup_vs_pytorch']:.2f})")
    for name, t in report["targets"].items():
        lines.append(f"  [{'PASS' if t['pass'] else 'FAIL'}] {name}: {t['value']}")
    return lines
