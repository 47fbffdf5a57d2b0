"""Test defaults: no installed third-party plugins, no windows, a fresh plugin manager."""
from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ["SIMCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("SIMCORE_DISABLE_PLUGINS", None)

import pytest  # noqa: E402

import simcore  # noqa: E402
from simcore.plugin_manager import set_plugin_manager  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_default_plugin_manager():
    """Each test starts with a new process-wide plugin manager (built lazily)."""
    set_plugin_manager(None)
    yield
    set_plugin_manager(None)


@pytest.fixture
def pm():
    return simcore.create_plugin_manager(autoload=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one intra-op thread (no thread-pool overhead), and the
    DDP test's worker processes share the two cores; restore the count afterwards."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
