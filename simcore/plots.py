"""The two ends of every report plot (eval, probes, render): an off-screen matplotlib
figure and its save. Agg only, no pyplot state, so plotting works headless and in
worker processes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def figure(w: float, h: float, rows: int = 1, cols: int = 1) -> tuple[Any, np.ndarray]:
    """(figure, axes flattened to 1-D) of a w×h-inch Agg figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(rows, cols)).ravel()


def save(fig: Any, path: str | Path, title: str = "", dpi: int = 100) -> Path:
    """Title (if any), tight layout, PNG at ``path``; returns the path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)
