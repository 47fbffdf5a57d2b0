"""``simcore train``: fit a world model to recordings, stage by stage.

    1. ae        autoencoder on single frames (L1 + L2), then frozen; latent scale measured
    2. dynamics  DiT with rectified flow, an independent noise level per frame
                 (diffusion forcing), context frames often only lightly noised
    3. finetune  self-forcing-style: the context of each clip is the model's own
                 rollout (no grad), the target the recorded next frame, so the model
                 learns to correct its own drift over long horizons

``backend="render"`` trains a render model (``simcore.render``): the same stages, with
the engine state of every recorded step as a per-step condition (``--backend render``);
``init_from`` copies a trained autoencoder from another model, so the ``ae`` stage can
be skipped. ``step_conditions`` adds other per-step conditions (e.g. ``event``).

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
import torch.nn.functional as F

from simcore.checkpoint import save_model
from simcore.machine import describe as describe_machine
from simcore.data import Dataset
from simcore.model import ModelConfig, WorldModel, config_for
from simcore.rollout import Rollout

STAGES = ("ae", "dynamics", "finetune")


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
    init_from: str | None = None  # copy the autoencoder (weights + latent scale) from this model


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


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


def ae_loss(ae, frames: torch.Tensor) -> torch.Tensor:
    """L1 + L2 reconstruction of uint8 frames (B, H, W, 3)."""
    x = WorldModel.to_unit(frames)
    rec = ae(x)
    return F.l1_loss(rec, x) + F.mse_loss(rec, x)


def sample_tau(b: int, t: int, gen: torch.Generator, ctx_max: float = 0.1) -> torch.Tensor:
    """Noise levels (B, T): half the clips fully independent per frame (diffusion
    forcing), half rollout-like (light noise on the context, any level on the last frame)."""
    tau = torch.rand(b, t, generator=gen)
    rollout_like = torch.rand(b, generator=gen) < 0.5
    ctx = torch.rand(b, t, generator=gen) * ctx_max
    tau[rollout_like, :-1] = ctx[rollout_like, :-1]
    return tau


def flow_loss(dit, z, tau, actions, scene, extra, gen: torch.Generator, weight=None) -> torch.Tensor:
    """Rectified-flow loss: x_τ = (1-τ)z + τε, predict v = ε - z (per-frame τ)."""
    eps = torch.randn(z.shape, generator=gen).to(z)
    t = tau.to(z)[:, :, None, None, None]
    v = dit(((1 - t) * z + t * eps), tau.to(z), actions, scene, extra)
    err = (v.float() - (eps - z).float()).pow(2).mean(dim=(2, 3, 4))  # (B, T)
    if weight is not None:
        err = err * weight
        return err.sum() / weight.sum()
    return err.mean()


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
        if cfg.backend == "render":
            from simcore.render import RenderModel

            self.model = RenderModel(mcfg).to(self.device)
        else:
            self.model = WorldModel(mcfg).to(self.device)
        self.out = Path(cfg.out)
        self.state: dict[str, Any] = {"stage": cfg.stages[0], "step": 0, "done": [], "wall": {}, "steps": {},
                                      "losses": {}, "eval": {}}
        self.amp = self.device.type == "cuda"
        self.latents: list[torch.Tensor] | None = None
        self.log_file = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open(self.out / "train_log.jsonl", "a")
        if cfg.resume and (self.out / "train_state.safetensors").is_file():
            self._load_state()
        elif cfg.init_from:
            self._init_autoencoder(cfg.init_from)
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

    def _init_autoencoder(self, source: str) -> None:
        """Copy the autoencoder (and its latent scale) of a trained model (world or
        render model; a shipped name, directory or .safetensors file)."""
        from safetensors import safe_open

        from simcore.checkpoint import CheckpointError, resolve

        path = resolve(source)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k[3:]: f.get_tensor(k) for k in f.keys() if k.startswith("ae.")}
        theirs = ModelConfig.from_dict(json.loads(meta.get("config", "{}"))).ae
        if asdict(theirs) != asdict(self.model.cfg.ae) or not tensors:
            raise CheckpointError(f"{path}: its autoencoder {asdict(theirs)} does not match this run's "
                                  f"{asdict(self.model.cfg.ae)} (pick a --size with the same autoencoder)")
        self.model.ae.load_state_dict(tensors)
        self.state["init_from"] = str(path)
        self.log(f"autoencoder copied from {path} (latent scale {float(self.model.ae.latent_scale):.3f})")

    def _save_model(self) -> None:
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
        if saved != self.model.cfg.to_dict() or meta.get("backend", "model") != self.cfg.backend:
            raise ValueError(f"{path} was written for another model config; use another --out or --no-resume")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.state = json.loads(meta["state"])
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
    def _lr(step: int, total: int, base: float, warmup: int = 100) -> float:
        if step < warmup:
            return base * (step + 1) / warmup
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

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
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % log_every == 0:
            self._record(stage=stage, step=step, loss=loss.item(), time=time.time() - start)
        if step % self.cfg.save_every == 0:
            self.state.update(step=step, wall={**self.state["wall"], stage: time.time() - start})
            self._save_state(opt)
        return step

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
                g["lr"] = self._lr(step, cfg.ae_steps, cfg.ae_lr)
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
    @torch.no_grad()
    def encode_all(self) -> None:
        self.model.eval()
        self.latents = []
        for ep in self.data.episodes:
            zs = [self.model.ae.encode(self.model.to_unit(ep.frames[i:i + 256].to(self.device)))
                  for i in range(0, len(ep.frames), 256)]
            self.latents.append(torch.cat(zs))  # (T, C, h, w)

    def clips(self, length: int, batch: int):
        """A batch of clips: z (B, T, C, h, w), actions (B, T), scene (B,), extra {name: (B, T, n)}."""
        idx = self.data.clip_index(length, batch, self.rng)
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
        dit.train()
        loss = None
        while step < cfg.dyn_steps and not self._out_of_time(start):
            for g in opt.param_groups:
                g["lr"] = self._lr(step, cfg.dyn_steps, cfg.dyn_lr)
            z, a, scene, extra = self.clips(length, cfg.dyn_batch)
            tau = sample_tau(z.shape[0], length, self.gen, ctx_max=max(0.1, 2 * self.model.cfg.ctx_noise))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = flow_loss(net, z, tau.to(self.device), a, scene, extra, self.gen)
            step = self._optimize("dynamics", opt, loss, dit.parameters(), step, start, bar)
            if step % cfg.eval_every == 0:
                self._periodic_eval("dynamics", step)
                dit.train()
        bar.close()
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
                g["lr"] = self._lr(step, cfg.ft_steps, cfg.ft_lr, warmup=20)
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
            tau = sample_tau(z.shape[0], length, self.gen)
            tau[:, :-1] = torch.rand(z.shape[0], W, generator=self.gen) * max(0.1, 2 * self.model.cfg.ctx_noise)
            weight = torch.zeros(z.shape[0], length, device=self.device)
            weight[:, -1] = 1.0  # learn the next frame given the model's own context
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = flow_loss(net, zin, tau.to(self.device), a, scene, extra, self.gen, weight=weight)
            step = self._optimize("finetune", opt, loss, dit.parameters(), step, start, bar, log_every=25)
        bar.close()
        self._finish_stage("finetune", step, start, loss.item() if loss is not None else None)

    # -- evaluation during training ----------------------------------------------------------
    @torch.no_grad()
    def rollout_psnr(self, horizon: int = 16, n: int = 8, seed: int = 123) -> list[float]:
        """Mean PSNR per generated step on n clips, prompted with the model's prompt frames."""
        self.model.eval()
        p = self.model.cfg.prompt_frames
        length = p + horizon
        rng_state = self.rng
        self.rng = np.random.default_rng(seed)
        try:
            z, a, scene, extra = self.clips(length, n)
        finally:
            self.rng = rng_state
        roll = Rollout(self.model, batch=n, seed=seed, scene=scene)
        for t in range(p):
            roll.append(z[:, t], a[:, t], {k: v[:, t] for k, v in extra.items()})
        gen = torch.stack([roll.generate(a[:, t], {k: v[:, t] for k, v in extra.items()})
                           for t in range(p, length)], dim=1)
        frames = self.model.decode_latents(gen).float()
        truth = self._truth_frames(length, n, seed)[:, p:].float()
        mse = (frames - truth).pow(2).mean(dim=(2, 3, 4))  # (n, horizon)
        return [round(float(10 * torch.log10(255.0**2 / m.clamp_min(1e-10)).mean()), 2) for m in mse.T]

    def _truth_frames(self, length: int, n: int, seed: int) -> torch.Tensor:
        idx = self.data.clip_index(length, n, np.random.default_rng(seed))
        return torch.stack([self.data.episodes[e].frames[s:s + length] for e, s in idx]).to(self.device)

    def _periodic_eval(self, stage: str, step: int) -> None:
        if not self.main:
            return
        curve = self.rollout_psnr()
        self.state["eval"][f"{stage}_rollout_psnr"] = {"step": step, "psnr_per_step": curve}
        self._record(stage=stage, step=step, eval_rollout_psnr=curve)
        self.log(f"[{stage} {step}] rollout PSNR step 1/8/16: {curve[0]:.1f} / {curve[7]:.1f} / {curve[-1]:.1f} dB")

    # -- stage bookkeeping --------------------------------------------------------------------
    def _finish_stage(self, stage: str, step: int, start: float, loss: float | None) -> None:
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
            "data": {"files": [str(f) for f in self.data.files], "episodes": len(self.data.episodes),
                     "frames": self.data.num_frames, "per_scene": per_scene},
            "training": {"commands": self.state.get("commands", []), "config": asdict(self.cfg), "stages_done": self.state["done"],
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
                self.encode_all()
            {"ae": self.train_ae, "dynamics": self.train_dynamics, "finetune": self.train_finetune}[stage]()
        if self.main:
            self._save_model()
        if self.world > 1:
            dist.barrier()
        return self.out


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) and return the output directory."""
    return Trainer(cfg, log=log).run()
