"""Which native code path is available: compiled extension or pure-Python reference.

The kernels themselves (patch attention, rollout ops) dispatch through here as they
land; today the extension reports its build. ``SIMCORE_FORCE_REFERENCE=1`` forces the
reference path, so the whole suite can run as if the extension were missing.
"""
from __future__ import annotations

import os
from typing import Any

FORCE_REFERENCE_ENV = "SIMCORE_FORCE_REFERENCE"


def native() -> Any | None:
    """The compiled ``simcore._C`` module, or None (not built, or forced off)."""
    if os.environ.get(FORCE_REFERENCE_ENV, "") not in ("", "0"):
        return None
    try:
        from simcore import _C
    except ImportError:
        return None
    return _C


def describe() -> str:
    """One line naming the active path, for ``simcore plugins`` and bug reports."""
    mod = native()
    if mod is None:
        why = "forced by $SIMCORE_FORCE_REFERENCE" if os.environ.get(FORCE_REFERENCE_ENV, "") not in ("", "0") \
            else "extension not built"
        return f"reference (pure Python/torch; {why})"
    info = mod.build_info()
    return (f"simcore._C CPU ({info['compiler']}, openmp={'on' if info['openmp'] else 'off'}, "
            f"threads={info['max_threads']}, simd={info['simd']})")
