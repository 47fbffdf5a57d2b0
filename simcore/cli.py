"""The ``simcore`` command line (also ``python -m simcore``).

    simcore scenes                       list scenes (and --options)
    simcore play [SCENE]                 play live (window) or headless (GIF/MP4)
    simcore collect SCENE --episodes N --steps T --out DIR [--workers K] [--ray local|ADDRESS]
    simcore replay FILE                  play a recording back (window or GIF)
    simcore plugins                      loaded plugins, their hooks, native extension
    simcore bench [--which] [--quick]    native kernels vs PyTorch (attention grid, end to end)

Global options before the command: ``--plugin/-p MODULE|FILE.py`` (repeatable) adds
a plugin (e.g. a file that registers your own scene), ``--disable NAME`` removes one.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from simcore.errors import SimcoreError

app = typer.Typer(
    help="simcore: a plugin-based world simulator with generative rendering.",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

DEFAULT_SCENE = "simcore/Pong-v0"


# ---------------------------------------------------------------------------
# parsing helpers
# ---------------------------------------------------------------------------


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["count=3", "radius_range=[4,6]", "collisions=false"]`` -> dict (values as JSON
    when they parse, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SimcoreError(f"options are given as NAME=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"64x96"`` (height x width) -> (64, 96)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise SimcoreError(f"frame size is given as HEIGHTxWIDTH (e.g. 64x64), got {text!r}") from None
    return h, w


def _pm():
    from simcore.plugin_manager import get_plugin_manager

    return get_plugin_manager()


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


@app.callback()
def _global(
    plugin: list[str] = typer.Option([], "--plugin", "-p", help="Extra plugin: a module name or a .py file (repeatable)."),
    disable: list[str] = typer.Option([], "--disable", help="Disable a plugin by name (repeatable)."),
) -> None:
    from simcore.plugin_manager import create_plugin_manager, set_plugin_manager

    pm = create_plugin_manager(disable=disable, plugins=plugin)
    set_plugin_manager(pm)
    pm.hook.simcore_configure.call_historic(kwargs={"config": {"plugins": list(plugin), "disable": list(disable)}})


@app.command()
def scenes(options: bool = typer.Option(False, "--options", help="Also list each scene's options.")) -> None:
    """List the registered scenes."""
    from simcore.plugin_manager import get_registry

    registry = get_registry(_pm())
    for sid in registry.ids():
        cls = registry.get(sid)
        scene = cls()
        actions = ", ".join(cls.action_meanings) if cls.action_meanings else f"{scene.action_space}"
        typer.echo(f"{sid:<28} {cls.describe()}  [actions: {actions}]")
        if options:
            for name, spec in cls.options.items():
                typer.echo(f"    {name:<18} = {json.dumps(scene.default_options[name])}  {spec.doc}")


@app.command()
def play(
    scene: str = typer.Argument(DEFAULT_SCENE, help="Scene id (see `simcore scenes`)."),
    backend: str = typer.Option("model", help="model: the world model draws the frames (dream); "
                                "sim: the scene's own simulator; render: the simulator steps, a render model "
                                "draws (default model: render)."),
    model: str = typer.Option("default", help="World model for --backend model: a shipped name or a path."),
    compare: Optional[bool] = typer.Option(None, "--compare/--no-compare",
                                           help="Show the simulator side by side in lockstep (default: on "
                                                "for the model backend)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps per model frame (default 4)."),
    agent: Optional[str] = typer.Option(None, help="Policy as module:function or file.py:function; "
                                        "default: the keyboard (window) or the scene's demo policy (headless)."),
    seed: int = typer.Option(0, help="Seed of the first episode (later episodes: seed+1, ...)."),
    headless: bool = typer.Option(False, "--headless", help="No window: write a GIF/MP4 (automatic without a display)."),
    frames: Optional[int] = typer.Option(None, help="Stop after this many steps (headless default: 200)."),
    out: Optional[Path] = typer.Option(None, help="Video file for headless play (.gif or .mp4; default simcore-play.gif)."),
    fps: Optional[float] = typer.Option(None, help="Simulation rate (default: the scene's)."),
    scale: int = typer.Option(6, help="Window pixels per frame pixel."),
    frame_size: str = typer.Option("64x64", "--frame-size", help="HEIGHTxWIDTH, both divisible by 8."),
    option: list[str] = typer.Option([], "--option", "-o", help="Scene option NAME=VALUE (repeatable)."),
    record: Optional[Path] = typer.Option(None, help="Record episodes to this directory (C toggles)."),
    max_episode_steps: Optional[int] = typer.Option(None, help="Truncate episodes after this many steps."),
    load: Optional[Path] = typer.Option(None, "--load", help="Resume a saved session (.simsave): its scene, "
                                        "backend, model and options replace those given here."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Where F5/F9 quick-save and quick-load "
                                            "(default: the current directory)."),
    rewind_steps: int = typer.Option(30, "--rewind-steps", help="Steps one Backspace/B press rewinds."),
    target_fps: Optional[float] = typer.Option(None, "--target-fps", help="Hold this frame rate by adapting the "
                                               "model's denoising steps (1..8) per frame; also the loop rate "
                                               "unless --fps is given (docs/governor-watchdog.md)."),
    watchdog: bool = typer.Option(False, "--watchdog", help="Watch the dream for drift and re-anchor it on the "
                                  "simulator twin (or raise context noise without one)."),
    event: list[str] = typer.Option([], "--event", help="World event STEP:PROMPT, e.g. '20:add a red ball' "
                                    "(repeatable; docs/render-and-events.md). Live keys: G, A, K."),
) -> None:
    """Play a scene: live in a window (keys move, P pause, N step, R reset, C record, Esc quit,
    F5/F9 quick-save/load, Backspace rewind, F6 branch, Tab switch, F7 close branch)
    or, headless, into a GIF/MP4. With no arguments: Pong, dreamed by the shipped world model,
    next to the simulator."""
    import simcore
    from simcore.agents import load_policy
    from simcore.loop import Session
    from simcore.plugins.display import auto_headless

    size, options = parse_frame_size(frame_size), parse_options(option)
    session: Session | None = None
    if load is not None:  # the file says which worlds; the loop options below still apply
        from simcore.savefile import load_session

        session = load_session(load, model=None if model == "default" else model)
        world, twin = session.world, session.compare
    else:
        model_kw = {"model": model, "denoise_steps": steps} if backend in ("model", "render") else {}
        world = simcore.make(scene, backend, frame_size=size, max_episode_steps=max_episode_steps, **model_kw,
                             **options)
        if compare is None:
            compare = backend != "sim"
        twin = simcore.make(scene, "sim", frame_size=size, max_episode_steps=max_episode_steps, **options) \
            if compare else None
    headless = headless or auto_headless()
    if agent:
        policy = load_policy(agent)
    elif headless:
        demo = world.scene.demo_policy(seed)
        # the demo policy reads ground truth; while the model dreams, the simulator twin has it
        policy = demo if twin is None else (lambda obs, info: demo(session.compare_observation, session.compare_info))
    else:
        policy = None
    display: dict[str, Any] = {"headless": headless, "scale": scale, "rewind": rewind_steps}
    if save_dir is not None:
        display["save_dir"] = str(save_dir)
    if headless:
        display["out"] = str(out or "simcore-play.gif")
        frames = frames or 200
    config: dict[str, Any] = {"display": display}
    if record:
        config["record"] = {"dir": str(record)}
    if target_fps is not None:
        from simcore.governor import GovernorSettings

        config["governor"] = {"target_fps": GovernorSettings.from_config(target_fps).target_fps}  # error if <= 0
        fps = target_fps if fps is None else fps
    if watchdog:
        config["watchdog"] = True
    if session is not None:  # resumed from --load: keep its worlds, seeds and counters
        session = Session.from_loaded(session, policy=policy, fps=fps, realtime=not headless, max_steps=frames,
                                      config=config)
    else:
        session = Session(world, policy=policy, compare=twin, seed=seed, fps=fps, realtime=not headless,
                          max_steps=frames, config=config)
    if event:  # scheduled world events (parsed now: a bad prompt fails before the window opens)
        from simcore.events import ScheduledEvents

        _pm().register(ScheduledEvents.from_specs(event), name="scheduled-events")
    summary = session.run()
    world.close()
    typer.echo(_summary_line(summary))


def _summary_line(summary: dict[str, Any]) -> str:
    parts = [f"{summary.get('steps', 0)} steps", f"{summary.get('episodes', 0)} episodes finished"]
    if summary.get("video"):
        parts.append(f"video: {summary['video']}")
    if summary.get("recordings"):
        parts.append(f"recordings: {', '.join(summary['recordings'])}")
    if summary.get("governor"):
        g = summary["governor"]
        parts.append(f"governor: target {g['target_fps']:g} fps, steps now {g['steps']} "
                     f"(mean {g['mean_steps'] or 0:.1f}, {g['changes']} changes)")
    if summary.get("watchdog"):
        w = summary["watchdog"]
        parts.append(f"watchdog: {w['events']} event(s) in {w['checked']} dreamed frames "
                     f"({w['reanchors']} re-anchors, {w['context_noise']} context-noise boosts)")
    return "; ".join(parts)


@app.command()
def collect(
    scene: str = typer.Argument(..., help="Scene id."),
    episodes: int = typer.Option(..., help="Number of episodes."),
    steps: int = typer.Option(..., help="Steps per episode (after the reset frame)."),
    out: Path = typer.Option(..., help="Output directory for the msgpack shards."),
    workers: int = typer.Option(1, help="Parallel worker processes."),
    seed: int = typer.Option(0, help="Episode i uses seed+i."),
    policy: str = typer.Option("demo", help="demo | random | noop | sticky (held 3-8 steps) | module:function."),
    frame_size: str = typer.Option("64x64", "--frame-size", help="HEIGHTxWIDTH, both divisible by 8."),
    option: list[str] = typer.Option([], "--option", "-o", help="Scene option NAME=VALUE (repeatable)."),
    shard_size: int = typer.Option(16, help="Episodes per shard file."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run the workers as Ray actors: 'local' (start Ray "
                                      "here) or a cluster address (auto, ray://HEAD:10001). Needs "
                                      "pip install 'simcore[ray]'; see docs/scale-out.md."),
    max_restarts: int = typer.Option(3, "--max-restarts", help="With --ray: dead actors rebuilt (their shard "
                                     "redone) before giving up."),
) -> None:
    """Record episodes of a scene to msgpack shards (see docs/recording-format.md)."""
    from simcore.collect import collect as run_collect

    summary = run_collect(scene, episodes=episodes, steps=steps, out_dir=out, workers=workers, seed=seed,
                          policy=policy, frame_size=parse_frame_size(frame_size), options=parse_options(option),
                          shard_size=shard_size, progress=progress,
                          plugins=tuple(_pm_plugins()), ray=ray, max_restarts=max_restarts)
    typer.echo(f"wrote {summary['frames']} frames in {len(summary['files'])} shard(s) to {out} "
               f"({summary['frames_per_s']:.0f} frames/s)"
               + (f"; {summary['restarts']} Ray worker(s) rebuilt" if summary.get("restarts") else ""))


def _pm_plugins() -> list[str]:
    """Extra plugin modules/files given with --plugin, so workers load them too."""
    pm = _pm()
    return list(getattr(pm, "_simcore_extra", []))


@app.command()
def replay(
    file: Path = typer.Argument(..., help="A recording (.msgpack, or a .tmp left by a crash)."),
    episode: Optional[int] = typer.Option(None, help="Only this episode of a shard (0-based)."),
    fps: Optional[float] = typer.Option(None, help="Playback rate (default: the recording's)."),
    headless: bool = typer.Option(False, "--headless", help="No window: write a GIF/MP4 (automatic without a display)."),
    out: Optional[Path] = typer.Option(None, help="Video file for headless replay (default: FILE with .gif)."),
    scale: int = typer.Option(8, help="Window pixels per frame pixel."),
) -> None:
    """Play a recording back in a window, or write it as a GIF/MP4."""
    from simcore.replay import replay as run_replay

    summary = run_replay(file, episode=episode, fps=fps, headless=headless, out=out, scale=scale)
    typer.echo(f"replayed {summary['frames']} frames from {summary['episodes']} episode(s)"
               + (f"; video: {summary['video']}" if summary.get("video") else "")
               + ("; the recording was cut off (truncated)" if summary.get("truncated") else ""))


def _settings(items: list[str]) -> dict[str, str]:
    """NAME=VALUE pairs of --set (values converted later, by the field's type)."""
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise SimcoreError(f"--set takes NAME=VALUE (e.g. dit.target=x0), got {item!r}")
        out[name.strip()] = value.strip()
    return out


@app.command()
def train(
    data: list[Path] = typer.Argument(..., help="Recordings: msgpack files or directories of them."),
    out: Path = typer.Option(..., help="Run directory: model.safetensors, model_card.json, train_state, logs."),
    size: str = typer.Option("small", help="Model size: tiny | small | base."),
    stages: str = typer.Option("ae,dynamics,finetune", help="Comma-separated stages to run, in order."),
    ae_steps: int = typer.Option(2000, help="Autoencoder steps."),
    dyn_steps: int = typer.Option(4000, help="Dynamics (diffusion-forcing) steps."),
    ft_steps: int = typer.Option(400, help="Self-forcing fine-tune steps."),
    ae_batch: int = typer.Option(32, help="Frames per autoencoder batch."),
    dyn_batch: int = typer.Option(16, help="Clips per dynamics batch."),
    ft_batch: int = typer.Option(8, help="Clips per fine-tune batch."),
    window: Optional[int] = typer.Option(None, help="Context frames (default: the size's)."),
    dyn_lr: float = typer.Option(1e-3, "--dyn-lr", help="Dynamics learning rate (peak, after warmup)."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop each stage after this many minutes."),
    eval_every: int = typer.Option(500, help="Learning-curve point (held-out PSNR, P7) every N steps; "
                                   "curves.jsonl and curves.png in the run directory."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the DiT (GPU)."),
    resume: bool = typer.Option(True, help="Continue from RUN/train_state.safetensors if present."),
    note: str = typer.Option("", help="Free text for the model card (e.g. how it was trained)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    backend: str = typer.Option("model", "--backend", help="model: a world model; render: a renderer conditioned "
                                "on each step's engine state (for `--backend render` worlds)."),
    condition: list[str] = typer.Option([], "--condition", help="Extra per-step condition from the recordings "
                                        "(repeatable): event (world events), state (engine state)."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start from this model (name or path): its "
                                            "autoencoder, and its DiT too when the configs match; then train "
                                            "--stages dynamics,finetune."),
    init_parts: str = typer.Option("all", "--init-parts", help="With --init-from: all (the DiT too, when its "
                                   "config matches) | ae (only the autoencoder)."),
    tf_share: float = typer.Option(0.5, "--tf-share", help="Share of teacher-forced clips (clean context, noisy "
                                   "last frame); the rest get a noise level per frame."),
    context_loss: bool = typer.Option(True, "--context-loss/--no-context-loss", help="Teacher-forced clips: "
                                      "count the lightly noised context frames in the loss too."),
    tau_dist: str = typer.Option("uniform", "--tau-dist", help="Noise levels: uniform | logit-normal."),
    tau_loc: float = typer.Option(0.0, "--tau-loc", help="Logit-normal mean (> 0: more high-noise levels)."),
    tau_scale: float = typer.Option(1.0, "--tau-scale", help="Logit-normal spread."),
    motion_weight: float = typer.Option(0.0, "--motion-weight", help="Extra loss weight where latents change "
                                        "between frames (moving objects)."),
    action_dropout: float = typer.Option(0.0, "--action-dropout", help="Share of frames trained without their "
                                         "action, for action guidance at sampling (--set guidance=2)."),
    ema: float = typer.Option(0.0, "--ema", help="EMA decay of the weights used to evaluate and save (0: off; "
                              "e.g. 0.999)."),
    set_: list[str] = typer.Option([], "--set", help="Model setting NAME=VALUE (repeatable), e.g. dit.target=x0, "
                                   "dit.residual=true, dit.dim=96, dit.depth=4, dit.window=4, ctx_noise=0.05."),
    holdout: float = typer.Option(0.05, "--holdout", help="Share of each scene's episodes kept out of training "
                                  "for the learning curves."),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="Denoising steps in the learning-curve "
                                             "evaluation (default 4)."),
    p7_rollouts: int = typer.Option(4, "--p7-rollouts", help="Control-probe rollouts per curve point on Pong "
                                    "(0: none)."),
    latent_cache: Optional[str] = typer.Option("auto", "--latent-cache", help="Directory of cached latents "
                                               "('auto': $SIMCORE_CACHE_DIR or ~/.cache/simcore/latents; "
                                               "'none': encode every run)."),
) -> None:
    """Train a world model (or, with --backend render, a render model) from recordings
    (alone, or under torchrun for DDP)."""
    from simcore.train import TrainConfig
    from simcore.train import train as run_train

    cfg = TrainConfig(data=[str(d) for d in data], out=str(out), size=size,
                      stages=tuple(s.strip() for s in stages.split(",") if s.strip()), window=window,
                      ae_steps=ae_steps, dyn_steps=dyn_steps, ft_steps=ft_steps, ae_batch=ae_batch,
                      dyn_batch=dyn_batch, dyn_lr=dyn_lr, ft_batch=ft_batch, max_minutes=max_minutes,
                      eval_every=eval_every, seed=seed, device=device, compile=compile, resume=resume, note=note,
                      progress=progress, command=" ".join(["simcore"] + sys.argv[1:]), backend=backend,
                      step_conditions=tuple(condition), init_from=init_from, init_parts=init_parts,
                      tf_share=tf_share, context_loss=context_loss, tau_dist=tau_dist, tau_loc=tau_loc,
                      tau_scale=tau_scale, motion_weight=motion_weight, action_dropout=action_dropout, ema=ema,
                      model_set=_settings(set_), holdout=holdout, eval_steps=eval_steps, p7_rollouts=p7_rollouts,
                      latent_cache=None if (latent_cache or "").lower() == "none" else latent_cache)
    path = run_train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        typer.echo(f"model: {path}/model.safetensors (card: {path}/model_card.json)")


@app.command()
def eval(  # noqa: A001 - the command is `simcore eval`
    model: str = typer.Option("default", help="Shipped model name, run directory or .safetensors file."),
    scene: list[str] = typer.Option([], "--scene", help="Scene to evaluate (repeatable; default: all the model's)."),
    rollouts: int = typer.Option(8, help="Rollouts per scene (seeds SEED .. SEED+N-1)."),
    horizon: int = typer.Option(64, help="Model-generated steps per rollout."),
    long_horizon: int = typer.Option(1200, "--long-horizon", help="Steps of the one long rollout per scene (0: none)."),
    seed: int = typer.Option(1_000_000, help="First held-out seed (training data uses seeds < 200000)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising (Euler) steps per frame (default 4)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default eval/<model name>/)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    card: bool = typer.Option(False, "--card", help="Also write the headline figures into the model's card."),
    split: list[str] = typer.Option(["id"], "--split", help="id | ood | composition (repeatable; see "
                                    "simcore/splits.py). ood brings id along for P1's OOD/ID ratio."),
    probes: bool = typer.Option(True, "--probes/--no-probes", help="Apply every physics probe (P1-P8 and "
                                "plugins' simcore_probe hooks) with bootstrap intervals and pass/fail against each bar."),
    condition_as: Optional[str] = typer.Option(None, "--condition-as", help="Dream scenes outside the model's "
                                               "training set under this (known) scene's conditioning."),
    gif_scale: int = typer.Option(3, "--gif-scale", help="Pixels per frame pixel in the side-by-side GIFs."),
    backend: str = typer.Option("model", "--backend", help="model: dream and compare (this report); render: "
                                "a render model drawing the simulated state, vs the rasterizer (simcore.render)."),
) -> None:
    """Roll a world model out against the simulator on held-out seeds: PSNR/SSIM per step,
    AE round-trip PSNR, long-rollout collapse checks, every physics probe (P1-P8, plugins)
    against its floors with 95% bootstrap intervals and pass/fail per quality bar; report.json, plots, GIFs."""
    import shlex

    if backend == "render":  # a separate report: simcore.render.evaluate_render
        _eval_render(model, scene, rollouts, horizon, seed, steps, out, progress, probes)
        return
    if backend != "model":
        raise SimcoreError(f"--backend must be model or render, got {backend!r}")

    from simcore.evaluate import evaluate

    cmd = ["simcore", "eval", "--model", model] + [a for s in scene for a in ("--scene", s)]
    cmd += ["--rollouts", str(rollouts), "--horizon", str(horizon), "--long-horizon", str(long_horizon),
            "--seed", str(seed)] + (["--steps", str(steps)] if steps else []) + (["--out", str(out)] if out else [])
    cmd += [a for s in split for a in ("--split", s)] + ([] if probes else ["--no-probes"])
    cmd += (["--condition-as", condition_as] if condition_as else []) + \
        (["--gif-scale", str(gif_scale)] if gif_scale != 3 else [])
    report = evaluate(model, scenes=scene or None, rollouts=rollouts, horizon=horizon, long_horizon=long_horizon,
                      seed=seed, denoise_steps=steps, out_dir=out, progress=progress, plugin_manager=_pm(),
                      command=shlex.join(cmd), splits=split or ["id"], probes=probes, condition_as=condition_as,
                      gif_scale=gif_scale)

    def fmt(v: Any, nd: int = 1) -> str:
        if v is None:
            return "-"
        return "inf" if v == float("inf") else f"{v:.{nd}f}"

    typer.echo(f"model {report['model']['name']}: {report['rollouts']} rollouts x {report['horizon']} steps, "
               f"{report['denoise_steps']} denoising steps, seeds {report['seed']}+")
    typer.echo(f"{'scene':<28} {'AE':>6} {'@1':>6} {'@16':>6} {'@32':>6} {'@64':>6} {'SSIM@16':>8}  long rollout")
    for sid, r in report["per_scene"].items():
        p, lg = r["psnr_at"], r["long"]
        if lg is None:
            flags = "-"
        else:
            bad = [n for n, b in (("NaN", lg["nan_free"] is False), ("blank", lg["collapsed_blank"]),
                                  ("static", lg["collapsed_static"])) if b]
            flags = f"{lg['steps']} steps: " + (", ".join(bad) if bad else "ok")
        typer.echo(f"{sid:<28} {fmt(r['ae_psnr']):>6} {fmt(p.get('1')):>6} {fmt(p.get('16')):>6} "
                   f"{fmt(p.get('32')):>6} {fmt(p.get('64')):>6} {fmt(r['ssim_at'].get('16'), 3):>8}  {flags}")
    for t in report["targets"].values():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        measured = fmt(t["measured"], 2) if isinstance(t["measured"], (int, float)) or t["measured"] is None else ""
        typer.echo(f"  [{verdict}] {t['description']}" + (f": {measured}" if measured else "")
                   + (f" ({t['note']})" if t.get("note") else ""))
    for t in report.get("probe_targets", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["passed"]]
        ci = f" [{t['ci'][0]:.3g}, {t['ci'][1]:.3g}]" if t.get("ci") and not math.isnan(t["ci"][0]) else ""
        miss = f"; missed by {t['miss']:.3g} ({t['factor']:.3g}x)" if t["miss"] is not None else ""
        if t.get("floor_unusable"):
            miss += "; floor unusable: the autoencoder round trip loses the objects"
        typer.echo(f"  [{verdict}] {t['scene']}: {t['description']}: "
                   + (f"{t['measured']:.3g}{ci}{miss}" if t["measured"] is not None else t.get("note", "-")))
    files = report["files"]
    typer.echo(f"report: {files['report']}; plot: {files['plot'] or '(none)'}; "
               f"GIFs: {', '.join(files['gifs'].values())}"
               + "".join(f"; {k}: {v}" for k, v in (files.get("probe_plots") or {}).items()))
    if card:
        from simcore.checkpoint import update_card

        summary = {sid: {"ae_psnr": r["ae_psnr"], "psnr_at": r["psnr_at"], "ssim_at": r["ssim_at"],
                         "long": None if r["long"] is None else {k: r["long"][k] for k in (
                             "steps", "psnr_at", "nan_free", "collapsed_blank", "collapsed_static")}}
                   for sid, r in report["per_scene"].items()}
        targets = {k: {"measured": t["measured"], "threshold": t.get("threshold"), "passed": t["passed"]}
                   for k, t in report["targets"].items()}
        path = update_card(model, evaluation={"command": report["command"], "created": report["created"],
                                              "rollouts": report["rollouts"], "horizon": report["horizon"],
                                              "seed": report["seed"], "per_scene": summary, "targets": targets,
                                              "report": files["report"]})
        typer.echo(f"model card updated: {path}")


def _eval_render(model: str, scene: list[str], rollouts: int, horizon: int, seed: int, steps: Optional[int],
                 out: Optional[Path], progress: bool, probes: bool) -> None:
    """``simcore eval --backend render``: PSNR/SSIM of a render model's frames against the
    scene's rasterizer (same simulated states) and the physics probes next to their floor."""
    import shlex

    from simcore.render import evaluate_render

    cmd = ["simcore", "eval", "--backend", "render", "--model", model] + [a for s in scene for a in ("--scene", s)]
    cmd += ["--rollouts", str(rollouts), "--horizon", str(horizon), "--seed", str(seed)]
    cmd += (["--steps", str(steps)] if steps else []) + (["--out", str(out)] if out else [])
    cmd += [] if probes else ["--no-probes"]
    report = evaluate_render(model, scenes=scene or None, rollouts=rollouts, horizon=horizon, seed=seed,
                             denoise_steps=steps, out_dir=out, probes=probes, progress=progress, plugin_manager=_pm(),
                             command=shlex.join(cmd))
    typer.echo(f"render model {report['model']['name']}: {rollouts} rollouts x {horizon} steps, "
               f"{report['denoise_steps']} denoising steps, seeds {seed}+ (PSNR vs the scene's rasterizer)")
    typer.echo(f"{'scene':<28} {'AE':>6} {'@1':>6} {'@16':>6} {'@32':>6} {'@64':>6} {'mean':>6}  probes (floor)")
    for sid, r in report["per_scene"].items():
        p = r["psnr_at"]
        cells = " ".join(f"{p[k]:6.1f}" if k in p else f"{'-':>6}" for k in ("1", "16", "32", "64"))
        pr = r.get("probes")
        ptxt = "-" if pr is None else (f"H* {pr['mean']['p8_h_star']:.0f}/{horizon}, P1 "
                                       + ("-" if pr["mean"]["p1_vel_rel_err"] is None else f"{pr['mean']['p1_vel_rel_err']:.3f}")
                                       + " (" + ("-" if pr["floor_mean"]["p1_vel_rel_err"] is None
                                                 else f"{pr['floor_mean']['p1_vel_rel_err']:.3f}") + ")")
        typer.echo(f"{sid:<28} {r['ae_psnr']:6.1f} {cells} {r['psnr_mean']:6.1f}  {ptxt}")
    files = report["files"]
    typer.echo(f"report: {files['report']}; plot: {files['plot']}; GIFs: {', '.join(files['gifs'].values())}")


@app.command()
def probe(
    file: Path = typer.Argument(..., help="A recording (.msgpack): its frames are probed against its ground truth."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the full report (per-step curves too) as JSON."),
    episode: list[int] = typer.Option([], "--episode", help="Only these episodes (0-based, repeatable)."),
) -> None:
    """Physics probes (P1 inertia, P2 gravity, P3 collision, P4 bounce, P5 permanence, P8 drift) of a
    recording's frames against the ground truth in its steps, each next to its floor
    (the same probe on frames re-rendered from the truth). Exit status 1 when a
    violation is flagged."""
    from simcore.plugins.probes import probe_recording

    report = probe_recording(file, episodes=episode or None, plugin_manager=_pm())

    def fmt(v: Any, nd: int = 3) -> str:
        return "-" if v is None else f"{v:.{nd}g}"

    typer.echo(f"{'ep':>3} {'scene':<26} {'P1 v-err (floor)':>18} {'P2 g fit/true':>15} "
               f"{'P4 e-err (floor)':>18} {'P3 P-err (floor)':>18} {'P5 events':>9} {'P8 H*':>7}  verdict")
    for e in report["episodes"]:
        f = e["floor"]
        p5 = sum(e["p5"]["events"].values())
        g = f"{fmt(e['p2']['g_fit'])}/{fmt(e['p2']['g_true'])}" if e["p2"]["segments"] else "-"
        typer.echo(f"{e['episode']:>3} {e['scene']:<26} "
                   f"{fmt(e['p1']['vel_rel_err']):>8} ({fmt(f['p1']['vel_rel_err']):>7}) {g:>15} "
                   f"{fmt(e['p4']['restitution_err']):>8} ({fmt(f['p4']['restitution_err']):>7}) "
                   f"{fmt(e.get('p3', {}).get('momentum_err')):>8} ({fmt(f.get('p3', {}).get('momentum_err')):>7}) {p5:>9} "
                   f"{e['p8']['h_star']:>3}/{e['p8']['horizon']:<3}  "
                   + ("; ".join(e["violations"]) if e["violations"] else "ok"))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        typer.echo(f"report: {out}")
    n = report["violations"]
    typer.echo(f"{len(report['episodes'])} episode(s), {n} violation(s)")
    if n:
        raise typer.Exit(1)


@app.command()
def plugins() -> None:
    """List loaded plugins with the hooks each implements, and the native extension."""
    from simcore.kernels import describe as describe_kernels

    pm = _pm()
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            typer.echo(f"{name:<12} (disabled)")
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        where = getattr(plugin, "__name__", type(plugin).__name__)
        typer.echo(f"{name:<12} {where:<32} {', '.join(hooks)}")
    typer.echo(f"native extension: {describe_kernels()}")


@app.command()
def bench(
    which: bool = typer.Option(False, "--which", help="Only print the active kernel path per device."),
    quick: bool = typer.Option(False, "--quick", help="A tiny subset (smoke test, seconds)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON report here."),
    threads: int = typer.Option(0, "--threads", help="torch (and kernel) threads; 0 = torch's default."),
) -> None:
    """Native kernels vs PyTorch: patch attention over a grid of shapes and the default model end to end."""
    from simcore import bench as bench_mod

    if which:
        from simcore.kernels import describe as describe_kernels

        for device, path in bench_mod.which().items():
            typer.echo(f"{device}: {path}")
        typer.echo(f"native extension: {describe_kernels()}")
        return
    report = bench_mod.run(quick=quick, threads=threads or None)
    for line in bench_mod.summary_lines(report):
        typer.echo(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning simcore's own errors into one clear line."""
    try:
        app(args=argv, prog_name="simcore", standalone_mode=True)
    except (SimcoreError, OSError) as exc:  # bad input or a missing/unreadable file
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    main()
