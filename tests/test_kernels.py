"""The native-path switch: the extension when built, the reference when forced or absent."""
from __future__ import annotations

import importlib.util

from simcore import kernels


def test_force_reference(monkeypatch):
    monkeypatch.setenv(kernels.FORCE_REFERENCE_ENV, "1")
    assert kernels.native() is None
    assert "forced" in kernels.describe()


def test_native_when_built(monkeypatch):
    monkeypatch.delenv(kernels.FORCE_REFERENCE_ENV, raising=False)
    built = importlib.util.find_spec("simcore._C") is not None
    mod = kernels.native()
    assert (mod is not None) == built
    if built:
        info = mod.build_info()
        assert {"openmp", "max_threads", "simd", "compiler"} <= set(info)
        assert "simcore._C" in kernels.describe()
    else:
        assert "not built" in kernels.describe()


def test_installed_wheel_has_no_generic_top_level_names():
    import importlib.metadata

    files = importlib.metadata.files("simcore") or []
    tops = {str(f).split("/")[0] for f in files}
    assert "plugins" not in tops and "scenes" not in tops
    assert importlib.util.find_spec("simcore.plugins") is not None
    assert importlib.util.find_spec("simcore.scenes") is not None
