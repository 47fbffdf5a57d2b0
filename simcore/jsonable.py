"""Turning results (numpy scalars/arrays, paths, non-finite floats) into strict JSON,
one way for eval reports, probe reports and model cards."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any, nonfinite: str = "null") -> Any:
    """Plain JSON types. Non-finite floats become None (``nonfinite="null"``) or the
    strings "inf"/"-inf"/"nan" (``nonfinite="string"``, where inf is a meaningful value,
    e.g. the PSNR of identical frames)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nonfinite) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), nonfinite)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isfinite(v):
            return v
        if nonfinite == "null":
            return None
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj
