"""Figures for the GmP studies (Chen & Ge, arXiv:2305.15912, Figs. 2 and 3), saved as PNG.

Built on ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module
neither needs a display nor changes pyplot's global backend.

* :func:`plot_location_spectrum` - 1D: every unit's CAB location ``phi_i`` over training
  (Fig. 2b).
* :func:`plot_location_trajectories` - 2D: each unit's path of ``phi_i`` in the input plane
  (Fig. 3).
* :func:`plot_stability` - per-epoch max change on a log2 axis (Fig. 2c / 3i).
* :func:`plot_levy_fits`, :func:`plot_banana_boundaries` - the fitted functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..plots import save_figure
from .cab import CABHistory

__all__ = [
    "plot_location_spectrum",
    "plot_location_trajectories",
    "plot_stability",
    "plot_levy_fits",
    "plot_banana_boundaries",
    "study_figures",
]

COLORS = {"SP": "tab:blue", "WN": "tab:orange", "BN": "tab:green", "GmP": "tab:red"}


def _figure(n_panels: int, width: float = 4.0, height: float = 3.4) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(save_figure(fig, path, dpi=110))


def plot_location_spectrum(histories: Mapping[str, CABHistory], path: str | Path,
                           xlim: tuple[float, float] = (-10.0, 10.0),
                           max_points: int = 2000) -> str:
    """1D: CAB location ``phi_i = -b_i / w_i`` of every unit against the epoch, one panel per
    method (Chen & Ge, Fig. 2b). The y-axis is the data range plus 20%; locations outside are
    cut off. At most ``max_points`` evenly strided epochs are drawn per unit."""
    fig, axes = _figure(len(histories))
    pad = 0.2 * (xlim[1] - xlim[0]) / 2
    for ax, (name, hist) in zip(axes, histories.items(), strict=True):
        phi = hist.cab.location[..., 0]
        stride = max(1, phi.shape[0] // max_points)
        epochs = torch.arange(phi.shape[0])[::stride]
        ax.plot(epochs.numpy(), phi[::stride].cpu().numpy(), lw=0.5, color=COLORS.get(name, "k"),
                alpha=0.6)
        ax.axhspan(*xlim, color="0.9", zorder=-1)
        ax.set_ylim(xlim[0] - pad, xlim[1] + pad)
        ax.set_title(f"{name}: CAB locations")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(r"$\phi_i$ (shaded: data range)")
    return _save(fig, path)


def plot_location_trajectories(histories: Mapping[str, CABHistory], path: str | Path,
                               x: Tensor | None = None, y: Tensor | None = None,
                               lim: float = 3.0) -> str:
    """2D: trajectory of each unit's CAB location ``phi_i`` over training (circle: start, cross:
    end), one panel per method, over the training data if given (Chen & Ge, Fig. 3)."""
    fig, axes = _figure(len(histories), width=3.6, height=3.6)
    for ax, (name, hist) in zip(axes, histories.items(), strict=True):
        if x is not None:
            c = None if y is None else y.reshape(-1).cpu().numpy()
            ax.scatter(x[:, 0].cpu().numpy(), x[:, 1].cpu().numpy(), c=c, cmap="coolwarm", s=4,
                       alpha=0.25)
        phi = hist.cab.location.cpu().numpy()
        for i in range(phi.shape[1]):
            ax.plot(phi[:, i, 0], phi[:, i, 1], lw=0.8, color=COLORS.get(name, "k"))
        ax.plot(phi[0, :, 0], phi[0, :, 1], "o", ms=3, color="k")
        ax.plot(phi[-1, :, 0], phi[-1, :, 1], "x", ms=5, color="k")
        ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
        ax.set_title(f"{name}: CAB location paths")
    return _save(fig, path)


def plot_stability(series: Mapping[str, Sequence[Tensor]], path: str | Path, ylabel: str,
                   title: str = "") -> str:
    """Per-epoch max-over-units change on a log2 axis (Chen & Ge, Fig. 2c / 3i). ``series`` maps
    a method to one curve per seed; the first is drawn solid, the rest faint. Zero changes are
    not drawn (log axis); infinite ones are drawn at the top edge."""
    fig, axes = _figure(1, width=6.0, height=3.6)
    ax = axes[0]
    finite_max = 1.0
    for curves in series.values():
        for c in curves:
            f = c[torch.isfinite(c)]
            if f.numel():
                finite_max = max(finite_max, float(f.max()))
    for name, curves in series.items():
        for k, c in enumerate(curves):
            v = c.detach().cpu().clone()
            v[v <= 0] = float("nan")
            v[torch.isinf(v)] = finite_max * 2
            ax.plot(torch.arange(1, v.numel() + 1).numpy(), v.numpy(), lw=0.8 if k == 0 else 0.4,
                    alpha=1.0 if k == 0 else 0.3, color=COLORS.get(name, "k"),
                    label=name if k == 0 else None)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_levy_fits(models: Mapping[str, nn.Module], x_train: Tensor, y_train: Tensor,
                   x_test: Tensor, y_test: Tensor, path: str | Path) -> str:
    """Each method's fitted function against the Levy function and the training points."""
    fig, axes = _figure(len(models))
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        with torch.no_grad():
            pred = model.eval()(x_test)
        ax.plot(x_test[:, 0].cpu().numpy(), y_test[:, 0].cpu().numpy(), color="0.5", lw=1,
                label="Levy")
        ax.plot(x_test[:, 0].cpu().numpy(), pred[:, 0].cpu().numpy(), color=COLORS.get(name, "k"),
                lw=1.2, label=name)
        ax.plot(x_train[:, 0].cpu().numpy(), y_train[:, 0].cpu().numpy(), "k.", ms=3)
        ax.set_title(name)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_banana_boundaries(models: Mapping[str, nn.Module], x: Tensor, y: Tensor, path: str | Path,
                           lim: float = 3.0) -> str:
    """Each method's decision boundary (logit 0) and CABs over the given points."""
    fig, axes = _figure(len(models), width=3.6, height=3.6)
    grid = torch.linspace(-lim, lim, 200, dtype=x.dtype, device=x.device)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        with torch.no_grad():
            logit = model.eval()(pts).reshape(gx.shape)
        ax.contourf(gx.cpu().numpy(), gy.cpu().numpy(), (logit > 0).cpu().numpy().astype(float),
                    levels=[-0.5, 0.5, 1.5], colors=["#d6e4f5", "#f5d6d6"])
        ax.scatter(x[:, 0].cpu().numpy(), x[:, 1].cpu().numpy(), c=y.reshape(-1).cpu().numpy(),
                   cmap="coolwarm", s=5)
        ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
        ax.set_title(f"{name}: decision boundary")
    return _save(fig, path)


def study_figures(study: str, runs: Sequence, models: Mapping[str, nn.Module], data: Any,
                  out: str | Path) -> list[str]:
    """All figures of one study (``"levy"`` or ``"banana"``) into directory ``out``.

    ``runs`` are :class:`~relu_regions.gmp.studies.RunResult` s (the first seed's carry a
    history), ``models`` the first seed's trained nets, ``data`` its
    :class:`~relu_regions.gmp.studies.StudyData`.
    """
    out = Path(out)
    histories = {r.method: r.history for r in runs if r.history is not None}
    files = []
    if study == "levy":
        series = {}
        for r in runs:
            series.setdefault(r.method, []).append(r.location_change)
        files.append(plot_location_spectrum(histories, out / "gmp_levy_locations.png"))
        files.append(plot_stability(series, out / "gmp_levy_stability.png",
                                    r"max$_i\,|\Delta\phi_i|$ per epoch",
                                    "Levy: CAB location change"))
        files.append(plot_levy_fits(models, data.x_train, data.y_train, data.x_test, data.y_test,
                                    out / "gmp_levy_fits.png"))
    else:
        series = {}
        for r in runs:
            series.setdefault(r.method, []).append(r.angle_change)
        files.append(plot_location_trajectories(histories, out / "gmp_banana_trajectories.png",
                                                data.x_train, data.y_train))
        files.append(plot_stability(series, out / "gmp_banana_stability.png",
                                    "max$_i$ CAB normal turn per epoch [rad]",
                                    "Banana: CAB angle change"))
        files.append(plot_banana_boundaries(models, data.x_test, data.y_test,
                                            out / "gmp_banana_boundaries.png"))
    return files
