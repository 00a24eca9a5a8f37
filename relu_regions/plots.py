"""Figures, written to files; nothing is displayed.

Built on ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module
neither needs a display nor switches the backend of a user's notebook (no ``matplotlib.use``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import torch
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure

from .analysis.plane import count_regions_2d
from .analysis.regions import RegionCount, count_regions, count_regions_segment
from .atomic import atomic_write
from .errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from torch import nn

    from .analysis.plane import PlaneCount
    from .analysis.tracking import RegionTracker
    from .targets import Dataset

EXACT_GRAPH_LIMIT = 200_000  # up to this many knots the graph is drawn through the knots exactly
LINE_LIMIT = 256  # up to this many breakpoints each gets a vertical line; beyond, a rug


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's output at the points x ((n,) for 1D, (n, k) for k inputs; float64)."""
    p = next(iter(model.parameters()))
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:  # e.g. the knots of a one-piece net: reshape(0, -1) has no width to infer
        return np.empty(x.shape[0] if x.ndim else 0)
    xt = torch.as_tensor(x, device=p.device).reshape(x.shape[0] if x.ndim else 1, -1)
    return model(xt.to(p.dtype)).reshape(-1).double().cpu().numpy()


def subplots(*args: Any, figsize: tuple[float, float] | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, on an Agg canvas outside pyplot's state."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def check_figure_path(path: Path | str, what: str = "figure") -> Path:
    """``path`` as a Path if matplotlib can write its format (from the suffix; none: png)."""
    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise InputError(f"{what} {str(path)!r}: .{suffix} is not an image format matplotlib "
                         f"writes; use one of {', '.join('.' + f for f in sorted(formats))}")
    return Path(path)


def save_figure(fig: Figure, path: Path | str, dpi: int = 120) -> Path:
    """Render to memory (format from the suffix: .png, .svg, .pdf), then write atomically."""
    check_figure_path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write(Path(path), lambda f: f.write(buf.getvalue()))
    return Path(path)


def plot_regions(model: nn.Module, lo: float, hi: float, path: Path | str,
                 count: RegionCount | None = None,
                 target: Callable[[np.ndarray], np.ndarray] | None = None,
                 title: str | None = None) -> Path:
    """A 1D net's output with its breakpoints and piece boundaries, and its slope per piece.

    Top: the output, drawn through its knots (exact for a piecewise-linear function), with the
    activation-region boundaries as vertical lines (or a rug when there are many) and the target
    if given (a callable on numpy arrays). Bottom: the slope of every linear piece.
    """
    count = count or count_regions(model, lo, hi)
    if count.knots.size <= EXACT_GRAPH_LIMIT:
        x = np.concatenate([[count.lo], count.knots, [count.hi]])
    else:
        x = np.linspace(count.lo, count.hi, 20_001)
    y = evaluate(model, x)
    fig, (top, bottom) = subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.4]})
    if target is not None:
        xs = np.linspace(count.lo, count.hi, 2001)
        top.plot(xs, target(xs), color="0.6", lw=3, alpha=0.6, label="target")
    top.plot(x, y, color="C0", lw=1.2, label="network")
    bps = count.breakpoints
    if bps.size <= LINE_LIMIT:
        for b in bps:
            top.axvline(b, color="C3", lw=0.5, alpha=0.35)
    else:
        top.plot(bps, np.full(bps.size, 0.0), "|", color="C3", ms=6, alpha=0.25,
                 transform=top.get_xaxis_transform())
    if count.knots.size <= 4096:
        top.plot(count.knots, evaluate(model, count.knots), ".", color="C1", ms=3, label="knots")
    top.set_ylabel("output")
    top.legend(loc="best", fontsize=8)
    top.set_title(title or (f"{count.linear_pieces} linear pieces, "
                            f"{count.activation_regions} activation regions"))
    edges = np.concatenate([[count.lo], count.knots, [count.hi]])
    bottom.stairs(count.slopes, edges, color="C2", baseline=None)
    bottom.set_ylabel("slope per piece")
    bottom.set_xlabel("x")
    return save_figure(fig, path)


def plot_fit(model: nn.Module, data: Dataset, path: Path | str, count: RegionCount | None = None,
             title: str | None = None) -> Path:
    """A trained 1D net on its data: fit (top), error (middle), slope per piece (bottom).

    Training points are dots, separate test points crosses; breakpoints are a rug on the error
    panel (vertical lines when few).
    """
    lo, hi = data.interval
    count = count or count_regions(model, lo, hi)
    xs = np.concatenate([[lo], count.knots, [hi]]) if count.knots.size <= EXACT_GRAPH_LIMIT \
        else np.linspace(lo, hi, 20_001)
    fig, (top, mid, bottom) = subplots(3, 1, figsize=(8, 8), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 2, 1.3]})
    top.plot(data.x, data.y, ".", color="0.4", ms=3, label="training data")
    if data.held_out:
        top.plot(data.test_x, data.test_y, "x", color="C3", ms=5, label="test data")
    top.plot(xs, evaluate(model, xs), color="C0", lw=1.2, label="network")
    top.legend(fontsize=8)
    top.set_ylabel("y")
    top.set_title(title or f"{count.linear_pieces} linear pieces")
    mid.plot(data.x, evaluate(model, data.x) - data.y, ".", color="C0", ms=2, label="train error")
    if data.held_out:
        mid.plot(data.test_x, evaluate(model, data.test_x) - data.test_y, "x", color="C3", ms=5,
                 label="test error")
    mid.axhline(0, color="0.7", lw=0.8)
    bps = count.breakpoints
    if bps.size <= LINE_LIMIT:
        for b in bps:
            mid.axvline(b, color="C3", lw=0.5, alpha=0.3)
    else:
        mid.plot(bps, np.zeros(bps.size), "|", color="C3", alpha=0.3,
                 transform=mid.get_xaxis_transform())
    mid.set_ylabel("network - data")
    mid.legend(fontsize=8)
    bottom.stairs(count.slopes, np.concatenate([[lo], count.knots, [hi]]), color="C2",
                  baseline=None)
    bottom.set_ylabel("slope")
    bottom.set_xlabel("x")
    return save_figure(fig, path)


def plot_history(loss: np.ndarray, boundary: int, path: Path | str,
                 title: str = "training loss", pieces: dict | None = None) -> Path:
    """Per-seed MSE per step (thin), their median (thick), and the phase boundary; with
    ``pieces`` (a fit's ``history["pieces"]``), every row's linear pieces at each stage end on a
    second axis."""
    fig, ax = subplots(figsize=(7, 4))
    steps = np.arange(1, loss.shape[1] + 1)
    for row in loss:
        ax.plot(steps, row, color="C0", lw=0.4, alpha=0.3)
    ax.plot(steps, np.median(loss, axis=0), color="C1", lw=2, label="median over seeds")
    if 0 < boundary < loss.shape[1]:
        ax.axvline(boundary + 0.5, color="k", ls="--", lw=1, label="phase 1 | phase 2")
    ax.set_yscale("log")
    ax.set_xlabel("step (full batch)")
    ax.set_ylabel("MSE")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if pieces is not None and len(pieces["pieces"]):
        right = ax.twinx()
        counted = pieces["pieces"] >= 0  # -1: a diverged row
        right.scatter(pieces["step"][counted], pieces["pieces"][counted], s=10, color="C2",
                      alpha=0.5, label="linear pieces at a stage end (each row)")
        right.set_ylabel("linear pieces")
        right.set_ylim(bottom=0)
        extra = right.get_legend_handles_labels()
        handles, labels = handles + extra[0], labels + extra[1]
    ax.legend(handles, labels, fontsize=8)
    return save_figure(fig, path)


def plot_surface(model: nn.Module, data: Dataset, path: Path | str, title: str | None = None,
                 grid: int = 121) -> Path:
    """A trained 2D net: target (data), network surface, error, and the net's region map
    (exact cells on the input box, :func:`plot_region_map`), with the network's breakpoints along
    the box's diagonal (exact 1D counter) marked on the error.
    """
    (xlo, xhi), (ylo, yhi) = data.box
    gx, gy = np.linspace(xlo, xhi, grid), np.linspace(ylo, yhi, grid)
    pts = np.stack(np.meshgrid(gx, gy, indexing="xy"), axis=-1).reshape(-1, 2)
    net = evaluate(model, pts).reshape(grid, grid)
    fig, (a, b, c, m) = subplots(1, 4, figsize=(20, 4.6))
    extent = (xlo, xhi, ylo, yhi)
    sc = a.scatter(data.x[:, 0], data.x[:, 1], c=data.y, s=6, cmap="viridis")
    a.set_title("data")
    fig.colorbar(sc, ax=a)
    im = b.imshow(net, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    b.set_title("network")
    fig.colorbar(im, ax=b)
    err = evaluate(model, data.x) - data.y
    lim = float(np.abs(err).max()) or 1.0
    sc = c.scatter(data.x[:, 0], data.x[:, 1], c=err, s=6, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(sc, ax=c)
    line = count_regions_segment(model, [xlo, ylo], [xhi, yhi])
    t = line.breakpoints
    c.plot(xlo + t * (xhi - xlo), ylo + t * (yhi - ylo), "|", color="k", ms=5, alpha=0.6)
    c.set_title(f"network - data (max |error| {lim:.2e})\n"
                f"{line.linear_pieces} linear pieces along the diagonal (ticks)", fontsize=10)
    for ax in (a, b, c):
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    count = count_regions_2d(model, extent)
    plot_region_map(count, None, ax=m, title=f"regions: {count.activation_regions:,} cells, "
                    f"{count.linear_pieces:,} linear pieces"
                    + ("" if count.resolved else " (unresolved)"))
    m.set_xlabel("x")
    m.set_ylabel("y")
    fig.subplots_adjust(wspace=0.35, top=0.82)  # room for the two-line titles and colorbars
    fig.suptitle(title or "2D fit")
    return save_figure(fig, path)


MAP_EDGE_LIMIT = 60_000  # up to this many cells every edge is drawn; beyond, the fill alone


def region_edges(count: PlaneCount) -> np.ndarray:
    """The edges of a plane count's map as segments (m, 2, 2): every edge of the cells' graph
    once, except those shared by two cells of one activation region (``count.regions``; a model
    with max windows, where cells that differ only in how two losers of a window compare are one
    region). Box-border edges are kept. Shared edges are bit-identical in both cells (the plane
    counter's rule), so they are matched by their end points' bits."""
    pts = np.ascontiguousarray(count.polygons, dtype=np.float64)
    off = np.asarray(count.offsets, dtype=np.int64)
    if pts.shape[0] == 0:
        return np.empty((0, 2, 2))
    nxt = np.arange(1, pts.shape[0] + 1)
    nxt[off[1:] - 1] = off[:-1]  # each ring closes on its first vertex
    p, q = pts.view(np.uint64), pts[nxt].view(np.uint64)
    swap = (p[:, 0] > q[:, 0]) | ((p[:, 0] == q[:, 0]) & (p[:, 1] > q[:, 1]))
    key = np.concatenate([np.where(swap[:, None], q, p), np.where(swap[:, None], p, q)], axis=1)
    order = np.lexsort(key.T[::-1])
    key = key[order]
    start = np.flatnonzero(np.concatenate([[True], np.any(key[1:] != key[:-1], axis=1)]))
    labels = np.repeat(np.arange(off.size - 1), np.diff(off))
    if getattr(count, "regions", None) is not None:
        labels = np.asarray(count.regions)[labels]
    labels = labels[order]
    one_region = ((np.diff(np.append(start, order.size)) > 1)
                  & (np.minimum.reduceat(labels, start) == np.maximum.reduceat(labels, start)))
    first = order[start[~one_region]]
    return np.stack([pts[first], pts[nxt[first]]], axis=1)


def plot_region_map(count: PlaneCount, path: Path | str | None, color: str = "gradient",
                    points: np.ndarray | None = None, title: str | None = None,
                    ax: Axes | None = None, boundary: bool | None = None) -> Path | None:
    """The cells of a plane count (``count_regions_2d`` / ``count_regions_plane``) as a map.

    ``color="gradient"``: hue = the output gradient's direction, brightness = its size (log
    scale), so neighbouring linear pieces differ; ``color="output"``: the output at the cell
    (viridis). With k > 1 outputs, the gradient is the winning output's and ``"output"`` colors
    the winning class. Edges are drawn up to MAP_EDGE_LIMIT regions; the decision boundary in
    red (the argmax's; for one output its level set, with ``boundary=True``; ``boundary=False``
    draws none), and ``points`` ((n, 2) plane coordinates) on top. PNG, SVG, PDF... by the
    suffix of ``path`` (with ``ax`` given, draws there and writes nothing). With max windows
    (``count.cells`` > ``count.activation_regions``) each region is drawn as one: coloured as its
    largest cell, with only the edges between regions (:func:`region_edges`).
    """
    if color not in ("gradient", "output"):
        raise InputError(f"color must be 'gradient' or 'output', got {color!r}")
    if ax is None:
        check_figure_path(path, "the map")
    polys = np.split(count.polygons, count.offsets[1:-1])
    k = getattr(count, "outputs", 1)
    values, gradients = count.values, count.gradients
    regions = getattr(count, "regions", None)
    merged = regions is not None and count.activation_regions < regions.size
    if merged:  # max windows: each region drawn as one, coloured as its largest cell
        order = np.lexsort((-count.areas, regions))
        first = order[np.concatenate([[True], np.diff(regions[order]) != 0])]
        values, gradients = values[first[regions]], gradients[first[regions]]
    winner = np.argmax(values, axis=1) if k > 1 else None
    if color == "gradient":
        g = gradients if k == 1 else gradients[np.arange(winner.size), winner]
        size = np.log10(np.hypot(g[:, 0], g[:, 1]) + 1e-300)
        finite = size[size > -300]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        value = 0.25 + 0.75 * (size - lo) / (hi - lo if hi > lo else 1.0)
        hue = (np.arctan2(g[:, 1], g[:, 0]) / (2 * np.pi)) % 1.0
        rgb = hsv_to_rgb(np.stack([hue, np.full_like(hue, 0.65), np.clip(value, 0, 1)], 1))
        coll = PolyCollection(polys, facecolors=rgb)
    elif k == 1:
        coll = PolyCollection(polys, array=values, cmap="viridis")
    else:
        coll = PolyCollection(polys, array=winner, cmap="tab10" if k <= 10 else "tab20",
                              clim=(-0.5, k - 0.5))
    many = count.activation_regions > MAP_EDGE_LIMIT
    # merged regions: cells filled without seams (face-coloured edges wide enough to cover the
    # antialiased fills' light seams), the edges between regions drawn on top
    coll.set_edgecolor("none" if many else "face" if merged else (0, 0, 0, 0.6))
    coll.set_linewidth(0.0 if many else 0.8 if merged else 0.25)
    coll.set_rasterized(many)  # an SVG of 10^6 polygons would be hundreds of MB
    own = ax is None
    if own:
        fig, ax = subplots(figsize=(6.4, 6.0))
    ax.add_collection(coll)
    if merged and not many:  # alpha 0.84: a cell edge above is drawn twice at 0.6
        ax.add_collection(LineCollection(region_edges(count), colors=[(0, 0, 0, 0.84)],
                                         linewidths=0.25, zorder=coll.get_zorder()))
    if color == "output":
        ax.figure.colorbar(coll, ax=ax, shrink=0.8, label="output" if k == 1 else "argmax")
    segments = getattr(count, "decision_segments", None)
    if boundary is None:
        boundary = k > 1
    if boundary and segments is not None and len(segments):
        ax.add_collection(LineCollection(segments, colors="red", linewidths=1.2,
                                         label="decision boundary"))
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], "o", ms=5, mfc="white", mec="black")
    x0, x1, y0, y1 = count.box
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("u" if count.plane is not None else "x1")
    ax.set_ylabel("v" if count.plane is not None else "x2")
    ax.set_title(title or f"{count.activation_regions:,} activation regions, "
                          f"{count.linear_pieces:,} linear pieces"
                 + ("" if count.resolved else " (unresolved)"), fontsize=10)
    if not own:
        return None
    return save_figure(fig, path)


def plot_tracked_counts(tracker: RegionTracker, path: Path | str) -> Path:
    """Activation regions (solid) and linear pieces (dashed) against the step, one panel per
    probe kind: the median over the probes and, shaded, their 25-75 % band. Log step axis
    (symlog when step 0 is recorded)."""
    rows = tracker.rows()
    if not rows:
        raise InputError("nothing recorded yet: call record(model, step) at least once")
    kinds = [k for k in ("segment", "plane") if any(r["kind"] == k for r in rows)]
    fig, axes = subplots(1, len(kinds), figsize=(5.0 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        mine = [r for r in rows if r["kind"] == kind]
        steps = sorted({r["step"] for r in mine})
        for column, style in (("activation_regions", "o-"), ("linear_pieces", "s--")):
            values = [np.array([r[column] for r in mine if r["step"] == s], dtype=float)
                      for s in steps]
            low, mid, high = (np.array([np.percentile(v, q) for v in values])
                              for q in (25, 50, 75))
            (line,) = ax.plot(steps, mid, style, ms=3, label=column.replace("_", " "))
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
        if steps[0] == 0:
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            ax.set_xscale("log")
        n = sum(1 for k in tracker.kinds() if k == kind)
        ax.set_title(f"{n} {kind}{'s' if n != 1 else ''}: median, 25-75 % band", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("count per probe")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_density_profile(tracker: RegionTracker, path: Path | str,
                         steps: Sequence[int] | None = None, bins: int = 10) -> Path:
    """Breakpoints per unit length against the distance from the segments' centres (the data
    points), one line per step (default: up to six of the recorded steps, log-spaced, first and
    last included); :meth:`RegionTracker.density_profile`."""
    recorded = tracker.steps
    if steps is None:
        at = np.unique(np.rint(np.geomspace(1, len(recorded), min(6, len(recorded)))) - 1)
        steps = [recorded[int(i)] for i in at] if recorded else []
    profiles = [tracker.density_profile(s, bins=bins) for s in steps]
    if not profiles:
        raise InputError("nothing recorded yet: call record(model, step) at least once")
    fig, ax = subplots(figsize=(5.2, 3.6))
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, len(profiles)))
    for profile, color in zip(profiles, colors, strict=True):
        ax.plot(profile.distance, profile.density, "o-", ms=3, color=color,
                label=f"step {profile.step}")
    ax.set_xlabel("distance from the data point (input units)")
    ax.set_ylabel("breakpoints per unit length")
    ax.set_title(f"{profiles[0].segments} segments through data points", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
