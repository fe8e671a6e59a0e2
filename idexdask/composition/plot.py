"""Ternary diagram helper (matplotlib is an optional dependency, imported lazily)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idexdask.errors import AnalysisError

__all__ = ["plot_ternary", "ternary_xy"]

_SQRT3_2 = float(np.sqrt(3.0) / 2.0)


def ternary_xy(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian position of ternary coordinates (a, b, c) in an equilateral triangle.

    Corner ``a`` is at the top (0.5, sqrt(3)/2), ``b`` bottom-left (0, 0), ``c``
    bottom-right (1, 0).

    Parameters
    ----------
    coords : ndarray, shape (..., 3)
        Fractions summing to 1 (any positive scale is normalised).

    Returns
    -------
    x, y : ndarray, shape (...)
    """
    c = np.asarray(coords, dtype=float)
    total = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, cc = c[..., 0] / total, c[..., 2] / total
    return cc + 0.5 * a, _SQRT3_2 * a


def plot_ternary(
    coords: np.ndarray,
    labels: Sequence[str] = ("Mg", "Si", "Fe"),
    *,
    references: Mapping[str, Sequence[float]] | None = None,
    color: np.ndarray | None = None,
    ax: Any = None,
    path: str | Path | None = None,
    title: str | None = None,
) -> Any:
    """Scatter events on a ternary diagram.

    Parameters
    ----------
    coords : ndarray, shape (n_events, 3)
        Ternary coordinates (e.g. ``ternary_mg_si_fe``); NaN rows are skipped.
    labels : sequence of 3 str
        Corner labels, in the order of ``coords`` columns (top, left, right).
    references : mapping of str to 3 floats, optional
        Named reference points (e.g. mineral compositions), drawn as stars.
    color : ndarray, shape (n_events,), optional
        Values mapped to colour (e.g. ``mg_number``).
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure otherwise.
    path : str or Path, optional
        Write the figure there (format from the suffix, e.g. ``.png``).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    AnalysisError
        When matplotlib is not installed or ``coords`` is not (n, 3).
    """
    try:
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise AnalysisError("plot_ternary needs matplotlib (pip install matplotlib)") from exc
    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 3 or len(labels) != 3:
        raise AnalysisError(f"plot_ternary: coords must be (n, 3), got {coords.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5.0))
    else:
        fig = ax.figure
    corners = np.array([[0.5, _SQRT3_2], [0.0, 0.0], [1.0, 0.0], [0.5, _SQRT3_2]])
    ax.plot(corners[:, 0], corners[:, 1], color="black", linewidth=1.0)
    for level in (0.2, 0.4, 0.6, 0.8):  # grid lines of constant a, b, c
        for k in range(3):
            ends = np.zeros((2, 3))
            ends[:, k] = level
            ends[0, (k + 1) % 3] = 1.0 - level
            ends[1, (k + 2) % 3] = 1.0 - level
            gx, gy = ternary_xy(ends)
            ax.plot(gx, gy, color="0.85", linewidth=0.6, zorder=0)
    offsets = [(0.0, 0.03), (-0.04, -0.04), (0.04, -0.04)]
    for (cx, cy), (dx, dy), text in zip(corners[:3], offsets, labels, strict=True):
        ax.text(cx + dx, cy + dy, text, ha="center", va="center", fontsize=11)
    good = np.all(np.isfinite(coords), axis=1)
    px, py = ternary_xy(coords[good])
    if color is not None:
        values = np.asarray(color, dtype=float)[good]
        sc = ax.scatter(px, py, c=values, s=14, cmap="viridis", zorder=3)
        fig.colorbar(sc, ax=ax, shrink=0.7)
    else:
        ax.scatter(px, py, s=14, color="tab:blue", zorder=3)
    for name, point in (references or {}).items():
        rx, ry = ternary_xy(np.asarray(point, dtype=float)[np.newaxis])
        if np.isfinite(rx[0]):
            ax.scatter(rx, ry, marker="*", s=90, color="tab:red", zorder=4)
            ax.annotate(name, (rx[0], ry[0]), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.08, _SQRT3_2 + 0.08)
    ax.axis("off")
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
