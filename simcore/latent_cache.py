"""Encode recordings' frames to autoencoder latents once, and reuse them from a disk cache.

Why: the dynamics stage trains on latents, not frames, so every training run, resume
and ablation first pushes every frame through the encoder; for 30,000 frames that takes
minutes on 2 CPU cores, repeated each time although neither the autoencoder nor the
data changed. The cache holds one entry PER RECORDING FILE, so a run on a combination of
recordings (say Pong shards plus bouncing-balls shards) reuses what runs on each part
already encoded, and changing one shard re-encodes only that shard.
:func:`encode_dataset` stores each file's latents as ``<cache_dir>/<key>.safetensors``,
named by a key that changes whenever anything they depend on changes:

* every tensor of ``ae.state_dict()`` (``latent_scale`` included), in sorted key order,
  with its name, dtype and shape;
* the bytes of that recording file (not its name or place: a copy hits);
* the number of episodes and frames that file contributes;
* :data:`CACHE_VERSION` (bumped if the encoding itself, e.g. ``to_unit``, changes).

A cache file is data from disk, so it is never trusted: it is read with safetensors
(no pickle, no code), and its metadata, episode count, shapes, dtype and values are
checked; an entry that fails any check is reported with a :class:`LatentCacheWarning`
and replaced by a fresh encode of that recording only. Entries are written to a
``.tmp`` and moved into place with ``os.replace``, so a crash or a concurrent run never
leaves a half-written entry under the final name. Failing to write the cache only
warns: it is an optimisation.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from simcore import __version__
from simcore.model import Autoencoder, WorldModel

__all__ = ["CACHE_VERSION", "CHUNK", "EncodedDataset", "LatentCacheWarning", "cache_key", "default_cache_dir",
           "encode_dataset", "encode_episodes", "file_digest", "weights_digest"]

CACHE_FORMAT = "simcore.latents"
#: Part of the key: bump when the frames -> latents computation changes in a way the
#: weights and data do not show (so old cache files stop matching).
CACHE_VERSION = "1"
#: Frames per encoder call: bounds peak memory on a long episode.
CHUNK = 256


class LatentCacheWarning(UserWarning):
    """A cache entry was unusable (and re-encoded) or could not be written."""


@dataclass(frozen=True)
class EncodedDataset:
    """What :func:`encode_dataset` returns.

    ``latents``: one float32 CPU tensor (T_i, C, h, w) per episode, in order.
    ``files``: how many recording files contributed episodes; ``hits``: how many of
    those were read from the cache (the rest were encoded).
    ``hit``: True when every one of them was read from the cache.
    ``paths``: file index (into ``encode_dataset``'s ``files``) -> its cache entry, for
    each file that contributed episodes (empty when caching is off).
    """

    latents: list[torch.Tensor]
    hits: int
    files: int
    paths: dict[int, Path] = field(default_factory=dict)

    @property
    def hit(self) -> bool:
        return self.files > 0 and self.hits == self.files


def default_cache_dir() -> Path:
    """``$SIMCORE_CACHE_DIR`` if set, else ``~/.cache/simcore/latents``."""
    env = os.environ.get("SIMCORE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simcore" / "latents"


def weights_digest(ae: torch.nn.Module) -> str:
    """blake2b of every state-dict tensor (name, dtype, shape, raw bytes), sorted by name."""
    h = hashlib.blake2b(digest_size=20)
    for name, t in sorted(ae.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def file_digest(path: os.PathLike | str, block: int = 1 << 20) -> str:
    """blake2b of a file's size and bytes, streamed."""
    h = hashlib.blake2b(digest_size=20)
    h.update(os.path.getsize(path).to_bytes(8, "little"))
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def cache_key(ae_digest: str, data_digest: str, episodes: int, frames: int) -> str:
    """A cache entry's name (without suffix), from the parts that determine the latents
    of one recording file: the autoencoder, the file's bytes, and the number of episodes
    and frames taken from it."""
    parts = f"{CACHE_FORMAT}/{CACHE_VERSION}\0{ae_digest}\0{data_digest}\0{episodes}\0{frames}"
    return hashlib.blake2b(parts.encode(), digest_size=16).hexdigest()


def encode_episodes(ae: Autoencoder, episodes_frames: Sequence[torch.Tensor],
                    device: torch.device | str) -> list[torch.Tensor]:
    """uint8 frames (T, H, W, 3) per episode -> float32 CPU latents (T, C, h, w), in
    chunks of :data:`CHUNK` frames, without gradients, with ``ae`` in eval mode (its
    previous mode is restored)."""
    was_training = ae.training
    ae.eval()
    try:
        with torch.no_grad():
            return [torch.cat([ae.encode(WorldModel.to_unit(frames[i:i + CHUNK].to(device))).float().cpu()
                               for i in range(0, len(frames), CHUNK)])
                    for frames in episodes_frames]
    finally:
        ae.train(was_training)


def _expected_shapes(ae: Autoencoder, episodes_frames: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    f, c = ae.cfg.factor, ae.cfg.latent_channels
    return [(int(fr.shape[0]), c, int(fr.shape[1]) // f, int(fr.shape[2]) // f) for fr in episodes_frames]


def _read(path: Path, key: str, shapes: list[tuple[int, ...]]) -> list[torch.Tensor] | str:
    """The cached latents, or why the file cannot be used."""
    from safetensors import SafetensorError, safe_open

    names = [f"ep{i:06d}" for i in range(len(shapes))]
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return f"metadata does not match (format {meta.get('format')!r}, key {meta.get('key')!r})"
            if meta.get("episodes") != str(len(shapes)) or sorted(f.keys()) != names:
                return f"holds tensors {sorted(f.keys())[:3]}..., expected {len(shapes)} episodes ep000000..."
            # clone: own the memory, not a view of a file mapping that a later writer may change
            latents = [f.get_tensor(n).clone() for n in names]
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        return f"not a readable safetensors file (truncated or corrupt?): {exc}"
    for name, z, shape in zip(names, latents, shapes):
        if z.dtype != torch.float32 or tuple(z.shape) != shape:
            return f"{name} is {z.dtype} {tuple(z.shape)}, expected torch.float32 {shape}"
        if not torch.isfinite(z).all():
            return f"{name} holds non-finite values"
    return latents


def _write(path: Path, latents: list[torch.Tensor], meta: dict[str, str]) -> None:
    """Save to a unique .tmp beside ``path``, then ``os.replace`` it into place."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file({f"ep{i:06d}": z.contiguous() for i, z in enumerate(latents)}, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _file_groups(episode_files: Sequence[int], n_episodes: int, n_files: int) -> list[tuple[int, int, int]]:
    """(file index, first episode, end episode) per file that contributes episodes, in
    order; checks ``episode_files`` is one in-range index per episode, contiguous and
    in file order."""
    if len(episode_files) != n_episodes:
        raise ValueError(f"episode_files has {len(episode_files)} entries for {n_episodes} episodes")
    groups: list[tuple[int, int, int]] = []
    for i, fi in enumerate(episode_files):
        fi = int(fi)
        if not 0 <= fi < n_files:
            raise ValueError(f"episode {i} comes from file {fi}, but there are {n_files} files")
        if groups and groups[-1][0] == fi:
            groups[-1] = (fi, groups[-1][1], i + 1)
        elif groups and fi < groups[-1][0]:
            raise ValueError(f"episode {i} comes from file {fi} after file {groups[-1][0]}: episodes must be "
                             "grouped by file, in file order")
        else:
            groups.append((fi, i, i + 1))
    return groups


def encode_dataset(ae: Autoencoder, episodes_frames: Sequence[torch.Tensor], episode_files: Sequence[int],
                   files: Sequence[os.PathLike | str], device: torch.device | str,
                   cache_dir: os.PathLike | str | None) -> EncodedDataset:
    """Latents of every episode; for each recording file, from its cache entry
    ``<cache_dir>/<key>.safetensors`` when a valid one exists, else encoded
    (:func:`encode_episodes`) and written there.

    ``episodes_frames``: uint8 (T_i, H, W, 3) per episode, decoded from ``files`` (e.g.
    ``Dataset.files``); ``episode_files[i]``: the index into ``files`` of the file
    episode i came from (e.g. ``EpisodeData.file``): episodes of one file contiguous, in
    file order. ``cache_dir`` None: no cache (nothing hashed, read or written). Call it
    with the trained autoencoder (``latent_scale`` set): the keys are taken from its
    weights now. The latents are on the CPU either way; move them to ``device`` if they
    should live there.
    """
    groups = _file_groups(episode_files, len(episodes_frames), len(files))
    if cache_dir is None:
        return EncodedDataset(encode_episodes(ae, episodes_frames, device), hits=0, files=len(groups))
    from safetensors import SafetensorError

    ae_digest = weights_digest(ae)
    latents: list[torch.Tensor] = []
    paths: dict[int, Path] = {}
    done: dict[str, tuple[list[torch.Tensor], bool]] = {}  # key -> (latents, read from the cache): same bytes twice
    hits = 0
    for fi, lo, hi in groups:
        frames_in = episodes_frames[lo:hi]
        data_digest = file_digest(files[fi])
        frames = sum(int(fr.shape[0]) for fr in frames_in)
        key = cache_key(ae_digest, data_digest, hi - lo, frames)
        path = paths[fi] = Path(cache_dir) / f"{key}.safetensors"
        if key in done:
            got, was_hit = done[key]
            latents += [z.clone() for z in got]  # no aliasing between episodes
            hits += was_hit
            continue
        if path.exists():
            got = _read(path, key, _expected_shapes(ae, frames_in))
            if not isinstance(got, str):
                latents += got
                done[key] = (got, True)
                hits += 1
                continue
            warnings.warn(f"latent cache {path} (of {files[fi]}) is unusable ({got}); encoding that recording "
                          "again", LatentCacheWarning, stacklevel=2)
        got = encode_episodes(ae, frames_in, device)
        meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "simcore_version": __version__, "key": key,
                "ae_digest": ae_digest, "data_digest": data_digest, "episodes": str(hi - lo),
                "frames": str(frames), "recording": os.path.basename(os.fspath(files[fi]))}
        try:
            _write(path, got, meta)
        except (OSError, SafetensorError) as exc:  # disk full, read-only dir, ...: the latents are still good
            warnings.warn(f"could not write the latent cache {path}: {exc}", LatentCacheWarning, stacklevel=2)
        latents += got
        done[key] = (got, False)
    return EncodedDataset(latents, hits=hits, files=len(groups), paths=paths)
