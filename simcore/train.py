"""``simcore train``: fit a world model to recordings, stage by stage.

    1. ae        autoencoder on single frames (L1 + L2), then frozen; latent scale measured
    2. dynamics  DiT with rectified flow: a share of the clips teacher-forced (lightly
                 noised context, noisy last frame), the rest with a noise level per
                 frame (diffusion forcing); what a batch is scored on is simcore.objective
    3. finetune  self-forcing-style: the context of each clip is the model's own
                 rollout (no grad), the target the recorded next frame, so the model
                 learns to correct its own drift over long horizons

``backend="render"`` trains a render model (``simcore.render``): the same stages, with
the engine state of every recorded step as a per-step condition (``--backend render``);
``init_from`` starts from another model: its autoencoder (so the ``ae`` stage can be
skipped), and its DiT too when the configs match (``init_parts="ae"``: only the
autoencoder). Every ``eval_every`` steps a learning-curve point on held-out episodes
goes to ``curves.jsonl`` / ``curves.png``. ``step_conditions`` adds other per-step conditions (e.g. ``event``).

Runs alone or under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU);
rank 0 logs and saves. ``train_state.safetensors`` in the output directory makes a
run resumable; the finished model is ``model.safetensors`` + ``model_card.json``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from simcore.checkpoint import save_model
from simcore.machine import describe as describe_machine
from simcore.data import Dataset
from simcore.errors import SimcoreError
from simcore.model import ModelConfig, WorldModel, config_for
from simcore.objective import ae_loss, flow_loss, sample_tau
from simcore.rollout import Rollout

STAGES = ("ae", "dynamics", "finetune")
#: model settings that only change how frames are sampled (not the weights): a resumed run may set them anew
SAMPLING_SETTINGS = ("sample_steps", "guidance")


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    size: str = "small"
    stages: tuple[str, ...] = STAGES
    window: int | None = None  # context frames (default: the size's)
    ae_steps: int = 2000
    ae_batch: int = 32
    ae_lr: float = 2e-3
    dyn_steps: int = 4000
    dyn_batch: int = 16
    dyn_lr: float = 1e-3
    ft_steps: int = 400
    ft_batch: int = 8
    ft_lr: float = 3e-4
    ft_rollout_steps: int = 2  # Euler steps when generating the fine-tune context
    max_minutes: float | None = None  # per stage; a stage stops early when it runs out
    eval_every: int = 500
    save_every: int = 250
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    resume: bool = True
    note: str = ""
    command: str | None = None  # how this run was started, for the model card (the CLI fills it in)
    progress: bool = True
    extra_card: dict[str, Any] = field(default_factory=dict)
    backend: str = "model"  # "model" (world model) or "render" (state-conditioned renderer, simcore.render)
    step_conditions: tuple[str, ...] = ()  # per-step conditions besides the render backend's "state" (e.g. "event")
    init_from: str | None = None  # start from this model: its autoencoder, and its DiT too where the configs match
    init_parts: str = "all"  # "all": the DiT too where it matches; "ae": only the autoencoder
    # -- objective (simcore.objective: sample_tau, flow_loss) --
    tf_share: float = 0.5  # share of teacher-forced clips: clean-ish context (τ ≤ ctx_max), noisy last frame
    context_loss: bool = True  # teacher-forced clips: the lightly noised context frames count in the loss too
    tau_dist: str = "uniform"  # noise levels of noisy frames: uniform | logit-normal (σ(N(tau_loc, tau_scale)))
    tau_loc: float = 0.0
    tau_scale: float = 1.0
    motion_weight: float = 0.0  # extra loss weight on latent positions that change between frames (objects)
    action_dropout: float = 0.0  # share of frames trained without their action (row 0), for action guidance
    ema: float = 0.0  # EMA decay of the DiT weights used for evaluation and the saved model (0: off)
    model_set: dict[str, Any] = field(default_factory=dict)  # model config overrides, "dit.dim" -> 96
    # -- learning curves on held-out episodes (curves.jsonl / curves.png) --
    holdout: float = 0.05  # share of each scene's episodes kept out of training for the curves
    eval_clips: int = 8  # held-out clips per scene per curve point
    eval_steps: int | None = None  # denoising steps of the curves' sampler (default: the rollout's 4)
    p7_rollouts: int = 4  # P7 control rollouts per curve point (action scenes; 0: none)
    latent_cache: str | None = "auto"  # directory for cached latents; "auto": simcore's cache dir; None: off


# ---------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------


def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _wrap(module: torch.nn.Module, world: int, dev: torch.device):
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    return module


def apply_model_set(mcfg: ModelConfig, sets: dict[str, Any]) -> None:
    """Override model config fields named like ``dit.dim`` or ``ctx_noise`` (values
    converted to the field's type); an unknown name is an error that lists the known."""
    for key, value in (sets or {}).items():
        part, _, name = key.rpartition(".")
        holder = {"": mcfg, "dit": mcfg.dit, "ae": mcfg.ae}.get(part)
        if holder is None or name not in holder.__dataclass_fields__ or name in ("frame_size", "scenes", "cond_dims"):
            known = [f"dit.{f}" for f in mcfg.dit.__dataclass_fields__] + \
                [f for f in ("ctx_noise", "prompt_frames", "latent_clip", "guidance", "sample_steps")]
            raise SimcoreError(f"unknown model setting {key!r}; known: {', '.join(known)}")
        old = getattr(holder, name)
        if isinstance(old, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        elif isinstance(old, (int, float, str)):
            try:
                value = type(old)(value)
            except ValueError:
                raise SimcoreError(f"model setting {key!r} takes a {type(old).__name__}, got {value!r}") from None
        setattr(holder, name, value)


def _portable(path: Path) -> str:
    """A model path as the card shows it: relative to the working directory or the
    package when inside them, else the file name (cards hold no absolute paths)."""
    import simcore

    path = Path(path).resolve()
    for root in (Path.cwd(), Path(simcore.__file__).resolve().parent):
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return path.name


# ---------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.rank, self.world, self.device = _dist_setup(cfg.device)
        self.main = self.rank == 0
        self.log = log if self.main else (lambda *_: None)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed + 1000 * self.rank)  # data order differs per rank
        self.gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)
        if cfg.backend not in ("model", "render"):
            raise ValueError(f"backend must be 'model' or 'render', got {cfg.backend!r}")
        conds = tuple(cfg.step_conditions)
        if cfg.backend == "render" and "state" not in conds:
            conds = ("state",) + conds
        self.data = Dataset(cfg.data, step_conditions=conds)
        overrides = dict(frame_size=tuple(self.data.frame_size), scenes=tuple(self.data.scenes),
                         num_actions=self.data.num_actions, cond_dims=self.data.cond_dims())
        if cfg.backend == "render":
            overrides["prompt_frames"] = 1  # only the reset frame comes from the rasterizer
        mcfg = config_for(cfg.size, **overrides)
        if cfg.window:
            mcfg.dit.window = int(cfg.window)
        apply_model_set(mcfg, cfg.model_set)
        if cfg.backend == "render":
            from simcore.render import RenderModel

            self.model = RenderModel(mcfg).to(self.device)
        else:
            self.model = WorldModel(mcfg).to(self.device)
        self.out = Path(cfg.out)
        self.val_eps = self.data.holdout(cfg.holdout)
        self.train_eps = np.setdiff1d(np.arange(len(self.data.episodes)), self.val_eps)
        self.ema: dict[str, torch.Tensor] | None = None  # DiT weights' moving average (cfg.ema > 0)
        self.state: dict[str, Any] = {"stage": cfg.stages[0], "step": 0, "done": [], "wall": {}, "steps": {},
                                      "losses": {}, "eval": {}, "cpu_s": 0.0}
        self.amp = self.device.type == "cuda"
        self.latents: list[torch.Tensor] | None = None
        self.log_file = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open(self.out / "train_log.jsonl", "a")
        if cfg.resume and (self.out / "train_state.safetensors").is_file():
            self._load_state()
        elif cfg.init_from:
            self._init_from(cfg.init_from)
        self._cpu_mark = time.process_time()
        self._wall_mark = time.time() / 60 - sum(self.state["wall"].values()) / 60
        self.state.setdefault("commands", []).append(cfg.command or "simcore.train.train(...) from Python")
        self._check_ranks_agree()

    def _check_ranks_agree(self) -> None:
        """Under torchrun every rank must start from rank 0's snapshot, or the ranks run
        different stages and hang. Multi-node: resuming needs --out on a file system
        every node shares (rank 0 alone writes it)."""
        if self.world < 2:
            return
        stage = STAGES.index(self.state["stage"]) if self.state["stage"] in STAGES else -1
        mine = torch.tensor([float(stage), float(self.state["step"]), float(len(self.state["done"]))],
                            device=self.device)
        ref = mine.clone()
        dist.broadcast(ref, 0)
        if not torch.equal(mine, ref):
            raise RuntimeError(f"rank {self.rank} would start at stage {self.state['stage']} step {self.state['step']} "
                               f"but rank 0 elsewhere: is --out ({self.out}) shared by every node? "
                               "(resume needs the same train_state.safetensors on every rank)")

    def _init_from(self, source: str) -> None:
        """Start from a trained model (world or render model; a shipped name, directory or
        .safetensors file): its autoencoder (weights + latent scale) always, and its DiT
        too when its config, scenes, actions and conditioning match this run's, so a run
        can continue a committed model with more data or another schedule."""
        from safetensors import safe_open

        from simcore.checkpoint import CheckpointError, resolve

        path = resolve(source)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        try:
            theirs = ModelConfig.from_dict(json.loads(meta.get("config", "{}")))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its config does not describe a world model: {exc}") from exc
        ae = {k[3:]: v for k, v in tensors.items() if k.startswith("ae.")}
        if asdict(theirs.ae) != asdict(self.model.cfg.ae) or not ae:
            raise CheckpointError(f"{path}: its autoencoder {asdict(theirs.ae)} does not match this run's "
                                  f"{asdict(self.model.cfg.ae)} (pick a --size with the same autoencoder)")
        self.model.ae.load_state_dict(ae)
        mine = self.model.cfg
        same_dit = (asdict(theirs.dit) == asdict(mine.dit) and tuple(theirs.scenes) == tuple(mine.scenes)
                    and theirs.num_actions == mine.num_actions and theirs.cond_dims == mine.cond_dims)
        if self.cfg.init_parts not in ("all", "ae"):
            raise SimcoreError(f"init parts must be 'all' or 'ae', got {self.cfg.init_parts!r}")
        dit = {k[4:]: v for k, v in tensors.items() if k.startswith("dit.")} if self.cfg.init_parts == "all" else {}
        same_dit = same_dit and set(dit) == set(self.model.dit.state_dict())  # world vs render DiT
        if same_dit and dit:
            self.model.dit.load_state_dict(dit)
        self.state["init_from"] = {"path": _portable(path), "parts": ["ae", "dit"] if same_dit and dit else ["ae"]}
        self.log(f"started from {path}: autoencoder (latent scale {float(self.model.ae.latent_scale):.3f})"
                 + (" and DiT" if same_dit and dit else "; DiT trained anew" + (" (its config differs from this run's)"
                                                                           if self.cfg.init_parts == "all" else "")))

    def _save_model(self) -> None:
        with self._ema_weights():
            self._save_model_now()

    def _save_model_now(self) -> None:
        if self.cfg.backend == "render":
            from simcore.render import save_render_model

            save_render_model(self.model, self.out, self.card())
        else:
            save_model(self.model, self.out, self.card())

    # -- snapshots --------------------------------------------------------------------
    def _save_state(self, opt) -> None:
        if not self.main:
            return
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        for k, v in (self.ema or {}).items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
        osd = opt.state_dict() if opt is not None else {"state": {}, "param_groups": []}
        for idx, st in osd["state"].items():
            for name, val in st.items():
                tensors[f"opt.{idx}.{name}"] = torch.as_tensor(val).detach().cpu().contiguous()
        meta = {"state": json.dumps(self.state), "param_groups": json.dumps(osd["param_groups"]),
                "model_config": json.dumps(self.model.cfg.to_dict()), "backend": self.cfg.backend}
        tmp = self.out / "train_state.safetensors.tmp"
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, self.out / "train_state.safetensors")

    def _load_state(self) -> None:
        from safetensors import safe_open

        path = self.out / "train_state.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        saved = ModelConfig.from_dict(json.loads(meta["model_config"])).to_dict()  # fills newer defaults
        mine = self.model.cfg.to_dict()
        # how the model samples is not part of its weights: a resumed run may change it
        sampling = {k: mine[k] for k in SAMPLING_SETTINGS}
        if {**saved, **sampling} != mine or meta.get("backend", "model") != self.cfg.backend:
            raise ValueError(f"{path} was written for another model config; use another --out or --no-resume")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("ema.")}
        self.ema = ema or None
        self.state = json.loads(meta["state"])
        self.state.setdefault("cpu_s", 0.0)
        groups = json.loads(meta["param_groups"])
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = v
        self._resume_opt = {"state": opt_state, "param_groups": groups} if groups else None
        self.log(f"resumed {path}: stage {self.state['stage']} step {self.state['step']}")

    # -- helpers -----------------------------------------------------------------------
    def _optimizer(self, params, lr: float):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
        resume = getattr(self, "_resume_opt", None)
        if resume is not None and self.state["step"] > 0:
            opt.load_state_dict(resume)
        self._resume_opt = None
        return opt

    @staticmethod
    def _lr(step: int, total: int, base: float, warmup: int = 100, elapsed: float = 0.0) -> float:
        """Linear warmup, then cosine decay over the stage; ``elapsed`` (0..1, the share
        of --max-minutes used) ends the decay on time when the clock, not the step
        count, ends the stage."""
        if step < warmup:
            return base * (step + 1) / warmup
        done = max((step - warmup) / max(1, total - warmup), elapsed)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    def _elapsed(self, start: float) -> float:
        """Share of the stage's --max-minutes used so far (0 without a limit)."""
        if self.cfg.max_minutes is None:
            return 0.0
        return (time.time() - start) / (60 * self.cfg.max_minutes)

    def _record(self, **row: Any) -> None:
        if self.log_file is not None:
            self.log_file.write(json.dumps(row) + "\n")
            self.log_file.flush()

    def _bar(self, total: int, initial: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not (self.main and self.cfg.progress),
                    dynamic_ncols=True)

    def _optimize(self, stage: str, opt, loss: torch.Tensor, clip_params, step: int, start: float, bar,
                  log_every: int = 50) -> int:
        """One optimizer step (gradients clipped to norm 1 when ``clip_params`` is given)
        and the bookkeeping every stage shares: progress, log rows, snapshots. Returns
        the new step count."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_params is not None:
            torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
        opt.step()
        if stage != "ae":
            self._ema_update(step)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        prev = getattr(self, "_loss_avg", None)
        self._loss_avg = round(loss.item() if prev is None else 0.98 * prev + 0.02 * loss.item(), 5)
        if step % log_every == 0:
            self._record(stage=stage, step=step, loss=loss.item(), time=time.time() - start)
        if step % self.cfg.save_every == 0:
            self.state.update(step=step, wall={**self.state["wall"], stage: time.time() - start})
            self._save_state(opt)
        return step

    # -- EMA of the DiT's weights ---------------------------------------------------------
    @torch.no_grad()
    def _ema_update(self, step: int) -> None:
        if self.cfg.ema <= 0:
            return
        params = dict(self.model.dit.named_parameters())
        if self.ema is None:
            self.ema = {k: p.detach().clone() for k, p in params.items()}
            return
        decay = min(self.cfg.ema, (1 + step) / (10 + step))  # short memory early, when the weights move fast
        for k, p in params.items():
            self.ema[k].lerp_(p.detach(), 1 - decay)

    def _ema_weights(self):
        """Context: the DiT holds its EMA weights inside (evaluation, saving), its own after."""
        import contextlib

        @contextlib.contextmanager
        def swap():
            if self.ema is None:
                yield
                return
            params = dict(self.model.dit.named_parameters())
            own = {k: p.detach().clone() for k, p in params.items()}
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(self.ema[k])
            try:
                yield
            finally:
                with torch.no_grad():
                    for k, p in params.items():
                        p.copy_(own[k])
        return swap()

    def _out_of_time(self, start: float) -> bool:
        """Same decision on every rank (rank 0's clock, broadcast)."""
        if self.cfg.max_minutes is None:
            return False
        flag = torch.tensor([float(time.time() - start > 60 * self.cfg.max_minutes)], device=self.device)  # nccl: on GPU
        if self.world > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    # -- stage 1: autoencoder ------------------------------------------------------------
    def train_ae(self) -> None:
        cfg, ae = self.cfg, self.model.ae
        net = _wrap(ae, self.world, self.device)
        opt = self._optimizer(ae.parameters(), cfg.ae_lr)
        step, start = self.state["step"], time.time() - self.state["wall"].get("ae", 0.0)
        bar = self._bar(cfg.ae_steps, step, "autoencoder")
        ae.train()
        loss = None
        while step < cfg.ae_steps and not self._out_of_time(start):
            for g in opt.param_groups:
                g["lr"] = self._lr(step, cfg.ae_steps, cfg.ae_lr, elapsed=self._elapsed(start))
            frames = self.data.random_frames(cfg.ae_batch, self.rng).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = ae_loss(net, frames)
            step = self._optimize("ae", opt, loss, None, step, start, bar)
        bar.close()
        ae.eval()
        with torch.no_grad():  # measure the latent scale on a fixed sample (same on every rank)
            frames = self.data.random_frames(256, np.random.default_rng(cfg.seed)).to(self.device)
            ae.latent_scale.fill_(1.0)
            ae.latent_scale.fill_(float(ae.encode(WorldModel.to_unit(frames)).std()))
        self.state["eval"]["ae_psnr_train_sample"] = round(self.ae_psnr(), 2)
        self._finish_stage("ae", step, start, loss.item() if loss is not None else None)

    @torch.no_grad()
    def ae_psnr(self, n: int = 256) -> float:
        frames = self.data.random_frames(n, np.random.default_rng(self.cfg.seed + 7)).to(self.device)
        rec = self.model.to_uint8(self.model.ae(self.model.to_unit(frames)))
        mse = (rec.float() - frames.float()).pow(2).mean().item()
        return 10 * math.log10(255.0**2 / max(mse, 1e-10))

    # -- latents ------------------------------------------------------------------------
    def encode_all(self) -> None:
        """Latents of every episode, from the latent cache when this autoencoder already
        encoded these recordings (simcore.latent_cache), else encoded and cached."""
        from simcore.latent_cache import default_cache_dir, encode_dataset

        self.model.eval()
        where = self.cfg.latent_cache
        cache_dir = None if where is None else (default_cache_dir() if where == "auto" else Path(where))
        t0 = time.time()
        got = encode_dataset(self.model.ae, [ep.frames for ep in self.data.episodes],
                             [ep.file for ep in self.data.episodes], self.data.files,
                             self.device, cache_dir if self.main or cache_dir is None else None)
        self.latents = [z.to(self.device) for z in got.latents]  # (T, C, h, w) per episode
        self.log(f"latents of {self.data.num_frames} frames: {got.hits}/{got.files} recordings from the cache,"
                 f" encoded the rest in {time.time() - t0:.0f} s")

    def _drop_actions(self, a: torch.Tensor) -> torch.Tensor:
        """Actions (B, T) with a share ``action_dropout`` of them replaced by 0 ("no
        action"), so the model also learns the action-free prediction guidance needs."""
        if self.cfg.action_dropout <= 0:
            return a
        drop = torch.rand(a.shape, generator=self.gen) < self.cfg.action_dropout
        return a.masked_fill(drop.to(a.device), 0)

    def clips(self, length: int, batch: int):
        """A batch of clips: z (B, T, C, h, w), actions (B, T), scene (B,), extra {name: (B, T, n)}."""
        idx = self.data.clip_index(length, batch, self.rng, among=self.train_eps)
        z = torch.stack([self.latents[e][s:s + length] for e, s in idx])
        a = torch.stack([self.data.episodes[e].actions[s:s + length] for e, s in idx]).to(self.device)
        scene = torch.tensor([self.data.episodes[e].scene for e, _ in idx], device=self.device)
        extras = [self.data.extra(e, s, length) for e, s in idx]
        return z, a, scene, {k: torch.stack([x[k] for x in extras]).to(self.device) for k in extras[0]}

    # -- stage 2: dynamics ----------------------------------------------------------------
    def train_dynamics(self) -> None:
        cfg, dit = self.cfg, self.model.dit
        net = _wrap(dit, self.world, self.device)
        if cfg.compile:
            net = torch.compile(net)
        opt = self._optimizer(dit.parameters(), cfg.dyn_lr)
        length = self.model.cfg.dit.window + 1
        step, start = self.state["step"], time.time() - self.state["wall"].get("dynamics", 0.0)
        bar = self._bar(cfg.dyn_steps, step, "dynamics")
        if step == 0:
            start += self._periodic_eval("dynamics", 0)  # where the curve starts (a residual model: copying)
        dit.train()
        loss = None
        while step < cfg.dyn_steps and not self._out_of_time(start):
            for g in opt.param_groups:
                g["lr"] = self._lr(step, cfg.dyn_steps, cfg.dyn_lr, elapsed=self._elapsed(start))
            z, a, scene, extra = self.clips(length, cfg.dyn_batch)
            a = self._drop_actions(a)
            tau, forced = sample_tau(z.shape[0], length, self.gen, ctx_max=max(0.1, 2 * self.model.cfg.ctx_noise),
                                     tf_share=cfg.tf_share, dist=cfg.tau_dist, loc=cfg.tau_loc, scale=cfg.tau_scale)
            weight = None
            if not cfg.context_loss:  # teacher-forced clips learn only their noisy last frame
                weight = torch.ones(z.shape[0], length)
                weight[forced, :-1] = 0.0
                weight = weight.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = flow_loss(net, z, tau.to(self.device), a, scene, extra, self.gen, weight=weight,
                                 motion_weight=cfg.motion_weight)
            step = self._optimize("dynamics", opt, loss, dit.parameters(), step, start, bar)
            if step % cfg.eval_every == 0:
                start += self._periodic_eval("dynamics", step)  # the stage's clock counts training only
                dit.train()
        bar.close()
        if step % cfg.eval_every:  # the curve ends where the stage ends
            start += self._periodic_eval("dynamics", step)
        self._finish_stage("dynamics", step, start, loss.item() if loss is not None else None)

    # -- stage 3: self-forcing fine-tune ------------------------------------------------------
    def train_finetune(self) -> None:
        cfg, dit = self.cfg, self.model.dit
        net = _wrap(dit, self.world, self.device)
        opt = self._optimizer(dit.parameters(), cfg.ft_lr)
        W = self.model.cfg.dit.window
        length = W + 1
        step, start = self.state["step"], time.time() - self.state["wall"].get("finetune", 0.0)
        bar = self._bar(cfg.ft_steps, step, "finetune")
        loss = None
        while step < cfg.ft_steps and not self._out_of_time(start):
            for g in opt.param_groups:
                g["lr"] = self._lr(step, cfg.ft_steps, cfg.ft_lr, warmup=20, elapsed=self._elapsed(start))
            z, a, scene, extra = self.clips(length, cfg.ft_batch)
            k = int(self.rng.integers(1, W))  # ground-truth prompt frames; the rest of the context is generated
            dit.eval()
            roll = Rollout(self.model, batch=z.shape[0], steps=cfg.ft_rollout_steps, window=W,
                           seed=int(self.rng.integers(2**31)), scene=scene)
            for t in range(k):  # per-step conditions: each frame gets its own vectors
                roll.append(z[:, t], a[:, t], {n: v[:, t] for n, v in extra.items()})
            gen = [roll.generate(a[:, t], {n: v[:, t] for n, v in extra.items()}) for t in range(k, W)]
            ctx = torch.cat([z[:, :k], torch.stack(gen, dim=1)], dim=1) if gen else z[:, :k]
            dit.train()
            zin = torch.cat([ctx, z[:, W:]], dim=1)  # generated context + the true next frame
            tau, _ = sample_tau(z.shape[0], length, self.gen, dist=cfg.tau_dist, loc=cfg.tau_loc, scale=cfg.tau_scale)
            tau[:, :-1] = torch.rand(z.shape[0], W, generator=self.gen) * max(0.1, 2 * self.model.cfg.ctx_noise)
            weight = torch.zeros(z.shape[0], length, device=self.device)
            weight[:, -1] = 1.0  # learn the next frame given the model's own context
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = flow_loss(net, zin, tau.to(self.device), a, scene, extra, self.gen, weight=weight,
                                 motion_weight=cfg.motion_weight)
            step = self._optimize("finetune", opt, loss, dit.parameters(), step, start, bar, log_every=25)
            if step % cfg.eval_every == 0:
                start += self._periodic_eval("finetune", step)
        bar.close()
        if step % cfg.eval_every:
            start += self._periodic_eval("finetune", step)
        self._finish_stage("finetune", step, start, loss.item() if loss is not None else None)

    # -- learning curves on held-out episodes -------------------------------------------------
    def _cpu_tick(self) -> None:
        """Add the process CPU time since the last mark to the training CPU budget
        (every thread of this process counts: 2 threads busy for a minute = 2 CPU-minutes)."""
        now = time.process_time()
        self.state["cpu_s"] = self.state.get("cpu_s", 0.0) + now - getattr(self, "_cpu_mark", now)
        self._cpu_mark = now

    def _val_clips(self, length: int, scene: int, n: int, seed: int):
        """n fixed held-out clips of one scene: latents, actions, scene, extra, uint8 frames."""
        among = np.asarray([e for e in self.val_eps if self.data.episodes[e].scene == scene], dtype=np.int64)
        if len(among) == 0 or self.data.lengths[among].max() < length:
            return None  # no held-out episode (long enough) of this scene
        idx = self.data.clip_index(length, n, np.random.default_rng(seed + scene), among=among)
        z = torch.stack([self.latents[e][s:s + length] for e, s in idx]).to(self.device)
        a = torch.stack([self.data.episodes[e].actions[s:s + length] for e, s in idx]).to(self.device)
        sc = torch.full((len(idx),), scene, device=self.device)
        extras = [self.data.extra(e, s, length) for e, s in idx]
        extra = {k: torch.stack([x[k] for x in extras]).to(self.device) for k in extras[0]}
        frames = torch.stack([self.data.episodes[e].frames[s:s + length] for e, s in idx]).to(self.device)
        return z, a, sc, extra, frames

    @staticmethod
    def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-frame PSNR (dB) of uint8 frames (..., H, W, 3): (...,)."""
        mse = (x.float() - y.float()).pow(2).mean(dim=(-3, -2, -1))
        return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))

    def _generate(self, z, a, sc, extra, prompt: int, horizon: int, seed: int) -> torch.Tensor:
        """Prompt a rollout with ``prompt`` true frames, generate ``horizon``: (B, horizon, C, h, w)."""
        steps = self.cfg.eval_steps or self.model.cfg.sample_steps
        roll = Rollout(self.model, batch=z.shape[0], steps=steps, seed=seed, scene=sc)
        for t in range(prompt):
            roll.append(z[:, t], a[:, t], {k: v[:, t] for k, v in extra.items()})
        return torch.stack([roll.generate(a[:, t], {k: v[:, t] for k, v in extra.items()})
                            for t in range(prompt, prompt + horizon)], dim=1)

    @torch.no_grad()
    def curve_point(self, horizon: int = 16, seed: int = 123) -> dict[str, Any]:
        """Held-out figures per scene: teacher-forced one-step PSNR (a full window of true
        context) next to copying the last true frame and the autoencoder's round trip,
        rollout PSNR @1/@8/@16 from the model's prompt frames, and P7 control on action
        scenes (simulator in lockstep, seeds 1,000,000+)."""
        self.model.eval()
        W, p = self.model.cfg.dit.window, self.model.cfg.prompt_frames
        out: dict[str, Any] = {}
        for k, sid in enumerate(self.data.scenes):
            n = self.cfg.eval_clips
            longest = max((int(self.data.lengths[e]) for e in self.val_eps if self.data.episodes[e].scene == k), default=0)
            h = min(horizon, longest - p)  # short recordings: a shorter rollout
            tf = self._val_clips(W + 1, k, n, seed)
            ro = self._val_clips(p + h, k, n, seed + 1) if h >= 1 else None
            if tf is None or ro is None:
                continue
            z, a, sc, extra, frames = tf
            one = self.model.decode_latents(self._generate(z, a, sc, extra, W, 1, seed))[:, 0]
            rec = self.model.decode_latents(z[:, W:])[:, 0]
            row = {"tf1_psnr": float(self._psnr(one, frames[:, W]).mean()),
                   "copy_psnr": float(self._psnr(frames[:, W - 1], frames[:, W]).mean()),
                   "ae_psnr": float(self._psnr(rec, frames[:, W]).mean())}
            z, a, sc, extra, frames = ro
            gen = self.model.decode_latents(self._generate(z, a, sc, extra, p, h, seed))
            curve = self._psnr(gen, frames[:, p:]).mean(dim=0)  # (horizon,)
            row.update({f"rollout_psnr@{j}": float(curve[j - 1]) for j in (1, 8, 16) if j <= h})
            if (self.cfg.backend == "model" and self.data.num_actions > 1 and self.cfg.p7_rollouts > 0
                    and sid == "simcore/Pong-v0"):
                from simcore.plugins.probes import control

                rep = control(self.model, scene=sid, rollouts=self.cfg.p7_rollouts, horizon=16,
                              denoise_steps=self.cfg.eval_steps)
                row.update(p7_accuracy=rep["accuracy"], p7_delta_psnr=rep["delta_psnr"])
            out[sid] = {key: round(v, 3) if isinstance(v, float) else v for key, v in row.items()}
        return out

    def _periodic_eval(self, stage: str, step: int) -> float:
        """One learning-curve point (EMA weights where kept): a row in curves.jsonl, the
        curves.png plot redrawn, and the newest point in the model card."""
        self._cpu_tick()
        if not self.main:
            return 0.0
        t0 = time.time()
        with self._ema_weights():
            point = self.curve_point()
        row = {"stage": stage, "step": step, "cpu_min": round(self.state["cpu_s"] / 60, 3),
               "wall_min": round(time.time() / 60 - self._wall_mark, 2), "loss": getattr(self, "_loss_avg", None),
               "scenes": point}
        self.state["eval"][f"{stage}_curve"] = row
        with open(self.out / "curves.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        from simcore.curves import plot_curves

        plot_curves(self.out / "curves.jsonl", self.out / "curves.png")
        brief = "; ".join(f"{sid.split('/')[-1]} tf1 {r['tf1_psnr']:.1f} (copy {r['copy_psnr']:.1f}) "
                          f"@1/8/16 {r.get('rollout_psnr@1', math.nan):.1f}/{r.get('rollout_psnr@8', math.nan):.1f}/"
                          f"{r.get('rollout_psnr@16', math.nan):.1f}"
                          + (f" P7 {r['p7_accuracy']:.2f}" if r.get("p7_accuracy") is not None else "")
                          for sid, r in point.items())
        self.log(f"[{stage} {step}, {row['cpu_min']:.1f} CPU-min] {brief} ({time.time() - t0:.0f} s)")
        self._cpu_mark = time.process_time()  # evaluation is not training time
        return time.time() - t0

    # -- stage bookkeeping --------------------------------------------------------------------
    def _finish_stage(self, stage: str, step: int, start: float, loss: float | None) -> None:
        self._cpu_tick()
        self.state["wall"][stage] = time.time() - start
        self.state["steps"][stage] = step
        self.state["losses"][stage] = loss
        self.state["done"].append(stage)
        order = list(self.cfg.stages)
        nxt = order[order.index(stage) + 1] if order.index(stage) + 1 < len(order) else None
        self.state.update(stage=nxt, step=0)
        self._save_state(None)
        if self.main:
            self._save_model()
        self.log(f"stage {stage}: {step} steps in {self.state['wall'][stage] / 60:.1f} min, final loss {loss}")

    def _portable_config(self) -> dict[str, Any]:
        """The run's TrainConfig for the card, paths shown without this machine's
        directories (data and output by their folder names)."""
        c = asdict(self.cfg)
        c["data"] = [Path(d).name for d in c["data"]]
        c["out"] = Path(c["out"]).name
        if c.get("init_from") and (os.sep in str(c["init_from"]) or Path(c["init_from"]).exists()):
            c["init_from"] = _portable(Path(c["init_from"]))
        return c

    def card(self) -> dict[str, Any]:
        per_scene = {}
        for sid, opts in self.data.options.items():
            per_scene[sid] = {"episodes": len(opts), "options": opts[0] if opts else {}}
        return {
            "name": self.out.name,
            "backend": self.cfg.backend,
            "conditioning": {"per_episode": ["scene_params"], "per_step": list(self.data.step_conditions)},
            "init_from": self.state.get("init_from"),
            "scenes": self.data.scenes,
            "data": {"files": [f"{f.parent.name}/{f.name}" for f in self.data.files], "episodes": len(self.data.episodes),
                     "frames": self.data.num_frames, "per_scene": per_scene},
            "training": {"commands": self.state.get("commands", []), "config": self._portable_config(), "stages_done": self.state["done"],
                         "cpu_minutes": round(self.state.get("cpu_s", 0.0) / 60, 3),
                         "steps": self.state["steps"], "final_loss": self.state["losses"],
                         "wall_time_s": {k: round(v, 1) for k, v in self.state["wall"].items()},
                         "processes": self.world, "hardware": describe_machine(str(self.device))},
            "evaluation_during_training": self.state["eval"],
            "note": self.cfg.note,
            **self.cfg.extra_card,
        }

    # -- run ------------------------------------------------------------------------------
    def run(self) -> Path:
        order = list(self.cfg.stages)
        unknown = set(order) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
        targets = {"ae": self.cfg.ae_steps, "dynamics": self.cfg.dyn_steps, "finetune": self.cfg.ft_steps}
        for stage in order:
            if stage in self.state["done"]:
                done_steps = self.state["steps"].get(stage, 0)
                if done_steps >= targets[stage]:
                    self.log(f"stage {stage} already done ({done_steps} steps); skipping")
                    continue
                # asked for more steps than the finished stage ran: continue it
                self.state["done"].remove(stage)
                self.state.update(stage=stage, step=done_steps)
                if stage == "ae" and "dynamics" in self.state["done"]:
                    self.log("warning: retraining the autoencoder after the dynamics stage changes the latents "
                             "the DiT was trained on; rerun the dynamics stage afterwards")
            if self.state["stage"] != stage:  # a later invocation continuing with the next stage
                self.state.update(stage=stage, step=0)
            if stage != "ae" and self.latents is None:
                self.model.ae.eval()
                self._cpu_tick()
                self.encode_all()
                self._cpu_mark = time.process_time()  # encoding (or reading the cache) is not training
            {"ae": self.train_ae, "dynamics": self.train_dynamics, "finetune": self.train_finetune}[stage]()
        if self.main:
            self._save_model()
        if self.world > 1:
            dist.barrier()
        return self.out


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) and return the output directory."""
    return Trainer(cfg, log=log).run()
