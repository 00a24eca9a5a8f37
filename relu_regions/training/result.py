"""What :func:`~relu_regions.fit` returns: per-seed errors, models, history and the config used,
with the best model, predictions, and the run folder (``save`` / :func:`load_run`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from ..errors import InputError
from ..validation import json_safe, plural
from .auto import TWO_PHASE
from .config import FitConfig
from .run_folder import read_run, save_run

if TYPE_CHECKING:
    from ..targets import Dataset

# predict: a point this far outside the fitted interval, relative to the interval's scale
# (max |end|, length), still counts as inside (a float32 input rounds the ends by ~6e-8).
EDGE_TOLERANCE = 1e-6
# summary: a held-out MSE more than this many times the training MSE (means over seeds) gets a
# note that the nets overfit (x^3, depth 3, a 20% held-out share of 500 points: 1.4x; noisy
# or sparse data fitted with more pieces than the points support: 17x - 57x).
OVERFIT_RATIO = 10.0


@dataclass
class FitResult:
    """Per-seed results of :func:`fit`. ``mse`` is the test MSE (= training MSE on dense data
    without a held-out share); ``errors`` holds the test R^2, relative RMSE and max |error|."""

    method: str
    target: str
    depth: int
    width: int
    seeds: list
    interval: tuple
    mse: np.ndarray
    train_mse: np.ndarray
    pieces: np.ndarray
    optimal_mse: float | None
    efficiency: np.ndarray | None
    history: dict
    models: list = field(repr=False)
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    diverged: list = field(default_factory=list)
    shape: str = "convex"
    widths: list = field(default_factory=list)
    optimal_pieces: int | None = None
    max_pieces: int | None = None  # of the construction along the 1D input (None in nD)
    config: object = None  # the FitConfig used
    data: object = field(default=None, repr=False)  # the Dataset trained and tested on
    errors: dict = field(default_factory=dict, repr=False)
    provenance: dict = field(default_factory=dict, repr=False)  # command, versions (load_run)
    # 2D fits: per seed, the exact activation regions and linear pieces on the data's box
    # (analysis.plane.count_regions_2d; -1 for a diverged or uncounted seed). None in 1D, where
    # ``pieces`` is already the exact count; in 2D ``pieces`` is along the box's diagonal.
    regions: np.ndarray | None = None
    plane_pieces: np.ndarray | None = None

    @property
    def best_index(self) -> int:
        """Position of the seed with the lowest (test) MSE."""
        mse = np.where(np.isfinite(self.mse), self.mse, np.inf)
        return int(np.argmin(mse))

    @property
    def best(self) -> nn.Sequential:
        """The lowest-MSE seed's net: a plain ``nn.Sequential`` of Linear/ReLU, float64."""
        return self.models[self.best_index]

    @property
    def inputs(self) -> int:
        """Inputs of the nets: 1, or 2 for a target in x and y / a 3-column CSV."""
        return self.widths[0] if self.widths else 1

    def predict(self, x: ArrayLike | torch.Tensor, seed: int | None = None) -> np.ndarray:
        """The best net's (or ``seed``'s) output at points ``x``, as float64 numpy (n,).

        ``x``: a list, numpy array or tensor of any float dtype, shape (n,) or (n, inputs).
        Points outside the fitted interval (box) get the net's values all the same, a linear
        continuation of its outer pieces that no data constrained, with a ``UserWarning`` naming
        the interval and the points' span (``warnings.filterwarnings`` silences it).

        >>> from relu_regions import fit
        >>> r = fit("x**2", depth=3, seeds=1, phase1="lm:5", phase2="lm:10", starts=1)
        >>> r.predict([0.0, 0.5, 1.0]).shape
        (3,)
        >>> import torch; r.predict(torch.tensor([[0.5]], dtype=torch.float32)).dtype
        dtype('float64')
        """
        if seed is not None and seed not in self.seeds:
            raise InputError(f"seed {seed!r} is not in this run (seeds {self.seeds})")
        model = self.best if seed is None else self.models[self.seeds.index(seed)]
        try:
            pts = torch.as_tensor(np.asarray(
                x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64))
        except (TypeError, ValueError):
            raise InputError(f"points must be numbers, got {x!r:.60}") from None
        if pts.dim() == 0 and self.inputs == 1:  # one point
            pts = pts.reshape(1)
        if pts.dim() == 1 and self.inputs == 1:
            pts = pts.unsqueeze(1)
        if pts.dim() != 2 or pts.shape[1] != self.inputs:
            raise InputError(f"points must have shape (n,) or (n, {self.inputs}) for this "
                             f"{self.inputs}-input net, got {tuple(pts.shape)}")
        if not bool(torch.isfinite(pts).all()):
            bad = int((~torch.isfinite(pts)).any(dim=1).nonzero()[0])
            raise InputError(f"points must be finite numbers: point {bad} is "
                             f"{pts[bad].tolist()}; drop or fill the missing values first")
        _warn_outside(pts.numpy(), [self.interval] if self.inputs == 1 else self.interval)
        with torch.no_grad():
            return model(pts).reshape(-1).numpy().astype(np.float64)

    def summary(self) -> dict:
        finite = self.mse[np.isfinite(self.mse)]
        train = self.train_mse[np.isfinite(self.train_mse)]
        return {
            "method": self.method, "target": self.target, "depth": self.depth,
            "shape": self.shape, "widths": self.widths, "inputs": self.inputs,
            "seeds": len(self.seeds),
            "mse_min": float(finite.min()) if finite.size else None,
            "mse_mean": float(finite.mean()) if finite.size else None,
            "mse_median": float(np.median(finite)) if finite.size else None,
            "train_mse_mean": float(train.mean()) if train.size else None,
            "held_out": self.held_out,
            **_generalization(self.held_out, train, finite,
                              0 if self.data is None else len(self.data.test_x)),
            "r2_mean": _finite_mean(self.errors.get("r2")),
            "rel_rmse_mean": _finite_mean(self.errors.get("rel_rmse")),
            "max_abs_error_mean": _finite_mean(self.errors.get("max_abs_error")),
            "pieces_mean": float(self.pieces.mean()),
            "max_pieces": self.max_pieces,
            "regions": _ints(self.regions), "plane_pieces": _ints(self.plane_pieces),
            "regions_mean": _counted_mean(self.regions),
            "plane_pieces_mean": _counted_mean(self.plane_pieces),
            "optimal_mse": self.optimal_mse, "optimal_pieces": self.optimal_pieces,
            "optimum_note": (self.phases or {}).get("optimum_note"),
            "efficiency_mean": _finite_mean(self.efficiency),
            "diverged": self.diverged, "seconds": round(self.seconds, 3),
            "training": self.training,
        }

    @property
    def training(self) -> dict:
        """What ``fit`` chose where the settings were left unset: training points and, for the
        two-phase methods, starts per seed, the depth grown from, whether a warp layer was
        added and the steps each seed's best paths trained after the growth, the "polish"
        (docs/training.md, "Defaults")."""
        out = {"points": None if self.data is None else int(len(self.data.x))}
        if self.method in TWO_PHASE:
            p = self.phases or {}
            out.update(starts=p.get("starts"), grow_from=p.get("grow_from"), warp=p.get("warp"),
                       polish=p.get("polish"))
        return out

    @property
    def held_out(self) -> bool:
        """True when the test points are not the training points (sparse, a held-out share)."""
        return self.data is not None and self.data.held_out

    def to_dict(self) -> dict:
        out = {**self.summary(), "interval": list(self.interval), "phases": self.phases,
               "mse": self.mse, "train_mse": self.train_mse,
               "pieces": self.pieces.tolist(), "seed_list": list(self.seeds),
               "efficiency": self.efficiency,
               "phase_boundary": self.history["phase_boundary"],
               **{k: v for k, v in self.errors.items()}}
        if self.config is not None:
            out["config"] = self.config.to_dict()
        return json_safe(out)

    def save(self, folder: Path | str, *, force: bool = False,
             command: Sequence[str] | None = None) -> Path:
        """Write the run folder (checkpoints/, train.csv, test.csv, history.npz, metrics.json,
        pieces.csv, fit.png, history.png) atomically; ``force`` replaces an existing run.
        ``command``: the argv to record (the CLI's). Read it back with ``load_run``."""
        return save_run(self, folder, force=force, command=command)

    @classmethod
    def from_dict(cls, d: dict, *, models: list, history: dict,
                  data: Dataset | None = None) -> FitResult:
        """The result whose :meth:`to_dict` is ``d`` (as ``metrics.json`` stores it), with the
        parts ``to_dict`` leaves out: the ``models``, the loss ``history`` and the ``data``.
        Provenance keys in ``d`` (command, versions, data hash) go to ``.provenance``."""
        def floats(key):
            values = d.get(key)
            return None if values is None else np.array(
                [np.nan if v is None else v for v in values], float)

        def ints(key):
            return None if d.get(key) is None else np.array(d[key])

        interval = d["interval"]
        interval = (tuple(interval) if not isinstance(interval[0], list)
                    else tuple(map(tuple, interval)))
        return cls(
            method=d["method"], target=d["target"], depth=d["depth"],
            width=(d.get("config") or {}).get("width", 4), seeds=[int(s) for s in d["seed_list"]],
            interval=interval, mse=floats("mse"), train_mse=floats("train_mse"),
            pieces=np.array(d["pieces"]), optimal_mse=d.get("optimal_mse"),
            efficiency=floats("efficiency"), history=history, models=list(models),
            seconds=d.get("seconds", 0.0), phases=d.get("phases", {}),
            diverged=d.get("diverged", []), shape=d.get("shape", "convex"),
            widths=d.get("widths", []), optimal_pieces=d.get("optimal_pieces"),
            max_pieces=d.get("max_pieces"), regions=ints("regions"),
            plane_pieces=ints("plane_pieces"),
            config=FitConfig.from_dict(d["config"]) if d.get("config") else None, data=data,
            errors={k: floats(k) for k in ("r2", "rel_rmse", "max_abs_error") if k in d},
            provenance={k: d.get(k) for k in ("command", "versions", "data_sha256")})


def load_run(folder: Path | str) -> FitResult:
    """The FitResult of a run folder written by ``FitResult.save`` / ``train --out``: models,
    per-seed figures, history, data and (when recorded) the config; ``.provenance`` holds the
    stored command, versions and data hash."""
    return FitResult.from_dict(**read_run(folder))


def _warn_outside(pts: np.ndarray, box) -> None:
    """A UserWarning if a point lies outside ``box`` ((lo, hi) per input) by more than
    EDGE_TOLERANCE of its scale."""
    lo, hi = np.array(box, dtype=np.float64).T
    slack = EDGE_TOLERANCE * np.maximum(np.maximum(np.abs(lo), np.abs(hi)), hi - lo)
    outside = ((pts < lo - slack) | (pts > hi + slack)).any(axis=1)
    if not outside.any():
        return

    def span(a, b):
        return f"[{a:g}, {b:g}]"

    given = [span(np.nanmin(c), np.nanmax(c)) for c in pts.T]
    if len(box) == 1:
        fitted, given = f"interval {span(*box[0])}", given[0]
    else:  # inputs x and y (not strict: of more inputs, only the first two are named)
        fitted = "box " + ", ".join(f"{n} in {span(*b)}"
                                    for n, b in zip("xy", box, strict=False))
        given = ", ".join(f"{n} in {g}" for n, g in zip("xy", given, strict=False))
    warnings.warn(f"predict: {outside.sum()} of {len(pts)} points lie outside the fitted "
                  f"{fitted} (the points span {given}); the net's values there extrapolate its "
                  f"outer pieces, which no training point constrained", UserWarning, stacklevel=3)


def _generalization(held_out: bool, train: np.ndarray, test: np.ndarray, n_test: int) -> dict:
    """``test_over_train``: held-out / training MSE (means over the finite seeds; None without a
    held-out share or with a zero training MSE); ``overfit_note``: one line when the held-out
    MSE exceeds OVERFIT_RATIO times the training MSE, else None."""
    if not (held_out and train.size and test.size):
        return {"test_over_train": None, "overfit_note": None}
    train_mean, test_mean = float(train.mean()), float(test.mean())
    ratio = test_mean / train_mean if train_mean > 0 else None
    note = None
    if test_mean > OVERFIT_RATIO * train_mean:
        times = f"{ratio:.3g}x" if ratio is not None else "far above"
        note = (f"overfitting? the held-out MSE ({plural(n_test, 'point')}) is {times} the "
                f"training MSE, more than {OVERFIT_RATIO:g}x: noise, or too few points for "
                f"this many pieces; a smaller depth or more points would generalize better")
    return {"test_over_train": ratio, "overfit_note": note}


def _ints(values):
    return None if values is None else [int(v) for v in values]


def _counted_mean(counts):
    """Mean over the counted seeds (-1 marks a diverged or uncounted one); None if none."""
    if counts is None:
        return None
    counted = np.asarray(counts)[np.asarray(counts) >= 0]
    return float(counted.mean()) if counted.size else None


def _finite_mean(values):
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
