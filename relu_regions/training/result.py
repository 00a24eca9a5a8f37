"""What :func:`~relu_regions.fit` returns: per-seed errors, models, history and the config used,
with the best model, predictions, and the run folder (``save`` / :func:`load_run`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..validation import json_safe
from .auto import TWO_PHASE
from .config import FitConfig
from .run_folder import read_run, save_run


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
    def best(self):
        """The lowest-MSE seed's net: a plain ``nn.Sequential`` of Linear/ReLU, float64."""
        return self.models[self.best_index]

    @property
    def inputs(self) -> int:
        """Inputs of the nets: 1, or 2 for a target in x and y / a 3-column CSV."""
        return self.widths[0] if self.widths else 1

    def predict(self, x, seed: int | None = None) -> np.ndarray:
        """The best net's (or ``seed``'s) output at points ``x``, as float64 numpy (n,).

        ``x``: a list, numpy array or tensor of any float dtype, shape (n,) or (n, inputs).

        >>> from relu_regions import fit
        >>> r = fit("x**2", depth=3, seeds=1, phase1="lm:5", phase2="lm:10", starts=1)
        >>> r.predict([0.0, 0.5, 1.0]).shape
        (3,)
        >>> import torch; r.predict(torch.tensor([[0.5]], dtype=torch.float32)).dtype
        dtype('float64')
        """
        model = self.best if seed is None else self.models[self.seeds.index(seed)]
        pts = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                                         dtype=np.float64))
        if pts.dim() == 1 and self.inputs == 1:
            pts = pts.unsqueeze(1)
        if pts.dim() != 2 or pts.shape[1] != self.inputs:
            raise InputError(f"points must have shape (n,) or (n, {self.inputs}) for this "
                             f"{self.inputs}-input net, got {tuple(pts.shape)}")
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
            "test_mse_mean": float(finite.mean()) if finite.size else None,
            "held_out": self.held_out,
            "r2_mean": _finite_mean(self.errors.get("r2")),
            "rel_rmse_mean": _finite_mean(self.errors.get("rel_rmse")),
            "max_abs_error_mean": _finite_mean(self.errors.get("max_abs_error")),
            "pieces_mean": float(self.pieces.mean()),
            "max_pieces": self.max_pieces,
            "regions": _ints(self.regions), "plane_pieces": _ints(self.plane_pieces),
            "regions_mean": _counted_mean(self.regions),
            "plane_pieces_mean": _counted_mean(self.plane_pieces),
            "optimal_mse": self.optimal_mse, "optimal_pieces": self.optimal_pieces,
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
        d = self.data
        return d is not None and not (d.test_x is d.x or np.array_equal(d.test_x, d.x))

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

    def save(self, folder, *, force: bool = False, command=None):
        """Write the run folder (checkpoints/, train.csv, test.csv, history.npz, metrics.json,
        pieces.csv, fit.png, history.png) atomically; ``force`` replaces an existing run.
        ``command``: the argv to record (the CLI's). Read it back with ``load_run``."""
        return save_run(self, folder, force=force, command=command)

    @classmethod
    def from_dict(cls, d: dict, *, models: list, history: dict, data=None) -> FitResult:
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


def load_run(folder) -> FitResult:
    """The FitResult of a run folder written by ``FitResult.save`` / ``train --out``: models,
    per-seed figures, history, data and (when recorded) the config; ``.provenance`` holds the
    stored command, versions and data hash."""
    return FitResult.from_dict(**read_run(folder))


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
