"""Latent cache, one entry per recording file: a hit returns exactly what was encoded; a
run on a combination of recordings reuses each one's entry; any change to the
autoencoder's weights or to one file's bytes misses (for that file only); a damaged
entry is re-encoded, never trusted."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import simcore.collect
from simcore.data import Dataset
from simcore.latent_cache import (LatentCacheWarning, default_cache_dir, encode_dataset, encode_episodes,
                                  file_digest)
from simcore.model import AEConfig, Autoencoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def recs(tmp_path_factory) -> dict[str, Path]:
    """Two recording folders: Pong (3 episodes in 2 shard files) and bouncing balls (2 in 1)."""
    out = {}
    for name, scene, episodes in [("pong", "simcore/Pong-v0", 3), ("balls", "simcore/BouncingBalls-v0", 2)]:
        out[name] = tmp_path_factory.mktemp(name)
        simcore.collect.collect(scene, episodes=episodes, steps=9, out_dir=out[name], shard_size=2,
                                frame_size=(16, 16), progress=False, seed=1)
    return out


@pytest.fixture(scope="module")
def data(recs) -> Dataset:
    return Dataset([recs["pong"]])


def _ae(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    ae = Autoencoder(AEConfig(latent_channels=4, base_channels=8, factor=4))
    ae.latent_scale.fill_(1.7)
    return ae


def _enc(ae: Autoencoder, data: Dataset, cache_dir, files=None):
    return encode_dataset(ae, [ep.frames for ep in data.episodes], [ep.file for ep in data.episodes],
                          data.files if files is None else files, "cpu", cache_dir)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_episodes_know_their_file(data):
    assert len(data.files) == 2
    assert [ep.file for ep in data.episodes] == [0, 0, 1]


def test_miss_then_hit_gives_identical_latents(data, tmp_path):
    ae = _ae()
    frames = [ep.frames for ep in data.episodes]
    first = _enc(ae, data, tmp_path)
    assert not first.hit and (first.hits, first.files) == (0, 2)
    assert sorted(first.paths) == [0, 1] and all(p.is_file() and p.parent == tmp_path for p in first.paths.values())
    assert len(set(first.paths.values())) == 2 == len(list(tmp_path.glob("*.safetensors")))
    assert [tuple(z.shape) for z in first.latents] == [(len(f), 4, 4, 4) for f in frames]
    assert all(z.dtype == torch.float32 and z.device.type == "cpu" for z in first.latents)
    assert not list(tmp_path.glob("*.tmp"))
    second = _enc(ae, data, tmp_path)
    assert second.hit and (second.hits, second.files) == (2, 2) and second.paths == first.paths
    assert _same(second.latents, first.latents)
    assert _same(first.latents, encode_episodes(ae, frames, "cpu"))


def test_a_combination_reuses_each_parts_entries(recs, data, tmp_path):
    ae = _ae()
    pong, balls = _enc(ae, data, tmp_path), _enc(ae, Dataset([recs["balls"]]), tmp_path)
    assert not pong.hit and not balls.hit
    both = Dataset([recs["pong"], recs["balls"]])
    assert [ep.file for ep in both.episodes] == [0, 0, 1, 2, 2]
    got = _enc(ae, both, tmp_path)
    assert got.hit and (got.hits, got.files) == (3, 3)
    assert _same(got.latents, pong.latents + balls.latents)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3  # nothing new written


def test_no_cache_dir_encodes_without_writing(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = _enc(_ae(), data, None)
    assert not got.hit and (got.hits, got.files) == (0, 2) and got.paths == {}
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("SIMCORE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SIMCORE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "simcore" / "latents"


def test_bad_episode_files_are_refused(data, tmp_path):
    frames = [ep.frames for ep in data.episodes]
    for episode_files, why in [([0, 0], "entries"), ([0, 0, 2], "there are 2 files"), ([1, 0, 0], "file order")]:
        with pytest.raises(ValueError, match=why):
            encode_dataset(_ae(), frames, episode_files, data.files, "cpu", tmp_path)


def test_any_weight_change_misses(data, tmp_path):
    ae = _ae()
    base = _enc(ae, data, tmp_path)
    with torch.no_grad():
        next(ae.parameters()).view(-1)[0] += 1e-3
    changed = _enc(ae, data, tmp_path)
    assert changed.hits == 0 and not set(changed.paths.values()) & set(base.paths.values())
    ae.latent_scale.fill_(2.0)  # a buffer, not a parameter: still part of the key
    rescaled = _enc(ae, data, tmp_path)
    assert rescaled.hits == 0
    assert len(list(tmp_path.glob("*.safetensors"))) == 6


def test_one_files_bytes_decide_its_entry_not_its_name(data, tmp_path):
    ae = _ae()
    base = _enc(ae, data, tmp_path / "cache")
    copies = []
    for f in data.files:
        copies.append(tmp_path / f.name)
        shutil.copy(f, copies[-1])
    assert _enc(ae, data, tmp_path / "cache", copies).hit  # same bytes elsewhere
    with open(copies[-1], "ab") as fh:
        fh.write(b"\x00")
    assert file_digest(copies[-1]) != file_digest(data.files[-1])
    changed = _enc(ae, data, tmp_path / "cache", copies)
    assert not changed.hit and (changed.hits, changed.files) == (1, 2)  # only the changed file re-encoded
    assert changed.paths[0] == base.paths[0] and changed.paths[1] != base.paths[1]
    assert _same(changed.latents, base.latents)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _wrong_shape(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["ep000000"] = tensors["ep000000"][:, :, :2].contiguous()  # right name and key, wrong (T, C, h, w)
    save_file(tensors, str(path), metadata=meta)


def _not_finite(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    tensors["ep000001"][0, 0, 0, 0] = float("nan")
    save_file(tensors, str(path), metadata=meta)


def _missing_episode(path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {"ep000000": f.get_tensor("ep000000")}
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("damage, why", [(_truncate, "truncated or corrupt"), (_wrong_shape, "expected"),
                                         (_not_finite, "non-finite"), (_missing_episode, "expected 2 episodes"),
                                         (lambda p: p.write_bytes(b""), "corrupt")])
def test_a_damaged_entry_is_reencoded_with_a_warning(data, tmp_path, damage, why):
    ae = _ae()
    fresh = _enc(ae, data, tmp_path)
    damage(fresh.paths[0])  # file 0 holds 2 episodes; file 1's entry stays good
    with pytest.warns(LatentCacheWarning, match=why):
        again = _enc(ae, data, tmp_path)
    assert not again.hit and (again.hits, again.files) == (1, 2) and again.paths == fresh.paths
    assert _same(again.latents, fresh.latents)
    assert _enc(ae, data, tmp_path).hit  # the rewritten entry is good


def test_an_unwritable_cache_only_warns(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(LatentCacheWarning, match="could not write"):
        got = _enc(_ae(), data, blocker / "cache")
    assert not got.hit and len(got.latents) == 3
