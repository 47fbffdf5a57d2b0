"""CUDA-graph replay of the rollout's per-frame work, once the context window is full.

A frame of ``Rollout.generate`` is ``steps`` DiT calls (Euler steps) plus one more DiT
call in ``append`` that computes the new frame's keys/values: at batch 1 with the
default model that is ~1,000 small kernel launches, and the GPU mostly waits for the
CPU. Once every ring slot of the KV cache is live, every tensor shape in that work is
fixed, so the whole frame — gather + rotate the cached keys, all Euler steps, clamp,
the context re-encode and the KV write into the evicted slot — can be captured once
into a ``torch.cuda.CUDAGraph`` and replayed with one launch.

What changes from frame to frame enters through static device buffers filled before
each replay: the starting noise and the context noise (drawn from the rollout's own
generator in the same order as eager, so both produce the same frames), the actions,
the plugin conditioning, the slot order (oldest first) and the slot being evicted.
The ring bookkeeping (``slot_frame``, ``count``) stays on the CPU in the wrapped
``Rollout``, whose ``k``/``v`` buffers the graph reads and writes in place, so
``state_dict``/``load_state_dict``/``prompt``/``append`` keep working and eager and
graphed frames can be mixed.

Before the window fills (and on CPU, and with ``use_cache=False``) ``generate`` is the
eager ``Rollout.generate``. The first full-window frame runs the same static-buffer
code eagerly on a side stream (warm-up: lazy inits, cupy JIT, cuBLAS handles); the next
one is captured and from then on replayed. A capture that fails (an op that syncs with
the host, say) leaves the graph off for good, with the reason in ``fallback_reason``.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from simcore import kernels
from simcore.model import apply_rope
from simcore.rollout import Rollout


class GraphedRollout:
    """Wraps a ``Rollout`` (or builds one from the same arguments) and replays its
    per-frame work as a CUDA graph when it can; every other attribute is the rollout's."""

    def __init__(self, rollout: Rollout | Any, *args: Any, graphs: bool = True, **kwargs: Any):
        if not isinstance(rollout, Rollout):  # GraphedRollout(model, batch=..., ...)
            rollout = Rollout(rollout, *args, **kwargs)
        elif args or kwargs:
            raise TypeError("pass either a Rollout, or a model and Rollout's arguments")
        self.rollout = rollout
        self.graphs = bool(graphs)
        self.fallback_reason: str | None = None
        self.replays = 0  # frames produced by graph replay
        self.static_frames = 0  # frames produced by the static-buffer code run eagerly
        self._static: dict[str, Any] | None = None
        self._signature: Any = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._warm = False

    def __getattr__(self, name: str) -> Any:  # prompt, append, state_dict, k, v, count, ...
        if name == "rollout":  # not set yet (during unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.rollout, name)

    # -- when the graph applies --------------------------------------------------------
    @property
    def active(self) -> bool:
        """True when the next ``generate`` runs graphed (or is the warm-up/capture frame)."""
        r = self.rollout
        return (self.graphs and self.fallback_reason is None and r.use_cache and r.device.type == "cuda"
                and bool((r.slot_frame >= 0).all()))

    def reset_graph(self) -> None:
        """Drop the captured graph and static buffers (recaptured on a later frame)."""
        self._graph, self._static, self._signature, self._warm = None, None, None, False

    # -- static buffers -----------------------------------------------------------------
    def _prepare(self, ex: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        """(Re)allocate the static buffers when the conditioning signature changes."""
        r = self.rollout
        sig = (None if not ex else tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in ex.items())),
               r.k.data_ptr(), r.v.data_ptr(), r.steps, r.ctx_noise)  # steps/ctx noise are baked into the graph
        if self._static is None or sig != self._signature:
            self.reset_graph()
            dev, w = r.device, r.window
            shape = (r.batch, *r.latent_shape)
            taus = torch.linspace(1.0, 0.0, r.steps + 1)  # as Rollout.generate
            self._static = {
                "x": torch.zeros((r.batch, 1, *r.latent_shape), device=dev, dtype=r.dtype),  # (B, 1, C, h, w)
                "eps": torch.zeros(shape, device=dev, dtype=r.dtype),  # context noise of the new frame
                "z": torch.zeros(shape, device=dev, dtype=r.dtype),  # output
                "actions": torch.zeros((r.batch, 1), device=dev, dtype=torch.long),
                "ex": None if not ex else {k: torch.zeros_like(v) for k, v in ex.items()},
                "order": torch.zeros(w, device=dev, dtype=torch.long),  # live slots, oldest first
                "order2": torch.zeros(max(w - 1, 0), device=dev, dtype=torch.long),  # same, evicted slot removed
                "slot": torch.zeros(1, device=dev, dtype=torch.long),  # slot the new frame's k/v go to
                "pos_gen": torch.tensor([w], device=dev),
                "pos_app": torch.tensor([w - 1], device=dev),
                "taus": [float(t) for t in taus],
                "dts": [(taus[i + 1] - taus[i]).item() for i in range(r.steps)],
            }
            self._signature = sig
        return self._static

    def _gather(self, order: torch.Tensor) -> list[dict[str, torch.Tensor]] | None:
        """Rollout._cache with a device index (capturable): per block {"k", "v"}
        (B, H, L·N, hd) of the slots in ``order``, keys rotated to positions 0..L-1."""
        r = self.rollout
        n = order.shape[0]
        if n == 0:
            return None
        cos, sin = r.dit.rope(torch.arange(n, device=r.device))
        out = []
        for i in range(len(r.dit.blocks)):
            k = r.k[i].index_select(2, order).flatten(2, 3)  # (B, H, L·N, hd)
            v = r.v[i].index_select(2, order).flatten(2, 3)
            out.append({"k": apply_rope(k, cos, sin), "v": v})
        return out

    def _body(self) -> None:
        """One full-window frame from the static buffers: Rollout.generate + append, with
        every host-dependent value already on the device. This is what gets captured."""
        r, S = self.rollout, self._static
        cache = self._gather(S["order"])
        x = S["x"]  # (B, 1, C, h, w), updated in place
        for i in range(r.steps):
            tau = torch.full((r.batch, 1), S["taus"][i], device=r.device)
            v = r.dit(x, tau, S["actions"], r.scene, S["ex"], positions=S["pos_gen"], cache=cache)
            kernels.euler_update(x, v, S["dts"][i])  # Euler step towards τ = 0
        z = x[:, 0].clamp(-r.model.cfg.latent_clip, r.model.cfg.latent_clip)
        S["z"].copy_(z)
        # append: the oldest slot is evicted, the remaining W-1 frames are the context
        zc = (1 - r.ctx_noise) * z + r.ctx_noise * S["eps"] if r.ctx_noise > 0 else z
        tau = torch.full((r.batch, 1), r.ctx_noise, device=r.device)
        _, kvs = r.dit(zc[:, None], tau, S["actions"], r.scene, S["ex"], positions=S["pos_app"],
                       cache=self._gather(S["order2"]), return_kv=True)
        for i, (k, v) in enumerate(kvs):  # (B, H, N, hd) into the evicted slot
            r.k[i].index_copy_(2, S["slot"], k[:, :, None])
            r.v[i].index_copy_(2, S["slot"], v[:, :, None])

    # -- public API -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, actions, extra=None) -> torch.Tensor:
        """As ``Rollout.generate``: the next latent frames (B, C, h, w), appended to the context."""
        if not self.active:
            return self.rollout.generate(actions, extra)
        return self._generate_static(actions, extra, capture=True)

    def _generate_static(self, actions, extra, capture: bool) -> torch.Tensor:
        r = self.rollout
        gen_state = r.generator.get_state()
        acts = torch.as_tensor(actions, dtype=torch.long).expand(r.batch)[:, None]  # (B, 1)
        ex = r._extra_frames(extra)
        S = self._prepare(ex)
        live = r._live_slots()  # all W slots, oldest first
        noise = r._noise((r.batch, *r.latent_shape))  # same draws, same order as eager generate + append
        eps = r._noise((r.batch, *r.latent_shape)) if r.ctx_noise > 0 else None
        slot = r._next_slot()  # the oldest: evicted
        S["x"].copy_(noise[:, None])
        if eps is not None:
            S["eps"].copy_(eps)
        S["actions"].copy_(acts)
        if ex:
            for k, v in ex.items():
                S["ex"][k].copy_(v)
        S["order"].copy_(live)
        S["order2"].copy_(live[live != slot])
        S["slot"].fill_(slot)

        if not capture:
            self._body()
            self.static_frames += 1
        elif not self._warm:  # warm-up: the real frame, eagerly, on a side stream
            side = torch.cuda.Stream(device=r.device)
            side.wait_stream(torch.cuda.current_stream(r.device))
            with torch.cuda.stream(side):
                self._body()
            torch.cuda.current_stream(r.device).wait_stream(side)
            self._warm = True
            self.static_frames += 1
        else:
            if self._graph is None:
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph):
                        self._body()
                except Exception as exc:  # noqa: BLE001 - any capture failure: stay eager from now on
                    self.fallback_reason = f"CUDA graph capture failed: {type(exc).__name__}: {exc}"
                    warnings.warn(f"GraphedRollout: {self.fallback_reason}; running eagerly", RuntimeWarning,
                                  stacklevel=3)
                    self.reset_graph()
                    torch.cuda.synchronize(r.device)
                    r.generator.set_state(gen_state)  # nothing of this frame ran: redo it eagerly
                    return r.generate(actions, extra)
                self._graph = graph
            self._graph.replay()
            self.replays += 1
        r.slot_frame[slot] = r.count  # the ring bookkeeping append() would have done
        r.count += 1
        return S["z"].clone()
