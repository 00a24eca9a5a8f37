"""``fit``: the two-phase trainer and its baselines, many seeds at once (Milkert, Hyde & Laine,
arXiv:2311.18022, Section 4: the training protocol).

Phase 1 (derived parameters): Theta = [peak logits, log scales, c0, c1] -> derived-form F.
Release: derived -> raw width-4 weights (``construction.raw_weights``), the same function.
Phase 2 (raw weights): Theta = all weights and biases of the Linear/ReLU stack, flattened.
Starts: every seed runs several starts (random peaks) through phase 1 and a share of phase 2 as
extra rows of the batch, and keeps the one with the lowest raw training MSE.

Methods (same total step budget): ``kaiming``, ``raai`` (random init, raw training only),
``skip`` (construction init with random peaks, raw training only), ``pretrain`` (two phases, free
scales), ``pretrain-thm31`` (two phases, Theorem 3.1 scales). docs/architecture.md shows the flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from ..analysis import limits
from ..analysis.plane import count_regions_2d
from ..analysis.regions import count_regions, count_regions_segment
from ..errors import InputError
from ..nets import composite
from ..targets import Dataset, Target
from ..validation import check_int, torch_threads
from . import growth
from .auto import (
    CONSTRUCTION_METHODS,
    MAX_OPTIMUM_PIECES,
    QUICK_OPTIMUM_PIECES,
    TWO_PHASE,
    auto_settings,
    use_warp,
)
from .config import PICK_SHARE, POLISH_PATHS, POLISH_SHARE, FitConfig, Phase
from .coordinates import GmPLayout
from .data import make_dataset
from .functional import (
    flatten_layers,
    mlp_forward,
    random_theta,
    raw_shapes,
    shapes_of,
    to_module,
    unflatten_layers,
)
from .jacobians import (
    RunProjection,
    chain_jacobian,
    derived_jacobian_runs,
    jvp_jacobian,
    lm_jacobian,
)
from .optim import per_seed_mse, row_wise
from .progress import Progress
from .result import FitResult
from .stages import StageEvent, Stages, load_train_state, optimize, pick_rows


def fit(target: str | Target | Callable[[np.ndarray], ArrayLike] | None = None, *,
        config: FitConfig | None = None,
        data: Dataset | tuple[ArrayLike, ArrayLike] | None = None, progress: bool = False,
        checkpoint: Path | str | None = None, checkpoint_every: int | None = None,
        resume: Path | str | dict | None = None, checkpoint_meta: str = "",
        on_stage: Callable[[StageEvent], object] | Sequence[Callable] | None = None,
        tracker: Any = None, **overrides: Any) -> FitResult:
    """Train ``seeds`` nets of width-4 constructions, ``depth`` hidden layers each, in one batch.

    ``target``: an expression in x (``"x**3"``; in x and y for a 2D fit) or a callable on numpy
    arrays; or give ``data``: a :class:`~relu_regions.targets.Dataset` (``targets.from_csv``) or
    arrays ``(x, y)``. Every setting is a :class:`FitConfig` field: pass ``config=`` and/or the
    fields as keywords (``depth=3, phase1="lm:100"``); an unknown name is an InputError naming
    the closest. docs/training.md explains each setting and the measurements behind the defaults.

    Run controls, not settings: ``progress`` (a bar on a terminal, else a line to stderr every
    ~10 s); ``checkpoint`` (a file) and ``checkpoint_every`` (steps): keep the training state
    there; ``resume``: a folder or state file written so (or its :func:`load_train_state`
    dict) to continue; with nothing else given, its stored config and data are used, so a Python
    caller resumes with ``fit(resume=DIR)``; ``checkpoint_meta``: text stored in the state;
    ``on_stage``: a hook, or a list of them, called with a
    :class:`~relu_regions.training.stages.StageEvent` at every stage's start and end (this fit
    only; :func:`~relu_regions.training.stages.register_stage_hook` for every fit);
    ``tracker``: a :class:`~relu_regions.analysis.tracking.RegionTracker` (or any object with
    ``record(model, step, **tags)``) that records every row's net at every stage end (phase 1,
    the pick, phase 2, each growth stage, the polish) with ``stage``, ``seed`` and ``row`` tags,
    ``step`` being the optimizer steps taken so far; a resumed fit records the finished stages
    again, so a fresh tracker ends with the rows of an uninterrupted fit.

    A 1D fit keeps the same record of its own: ``result.history["pieces"]``, every row's linear
    pieces on the interval at every stage end (arrays ``step``, ``stage``, ``seed``, ``row``,
    ``pieces``), which the run folder stores and its history plot draws.

    >>> r = fit("x**2", depth=3, seeds=2, phase1="lm:5", phase2="lm:10", starts=1, optimum=False)
    >>> r.best
    Sequential(
      (0): Linear(in_features=1, out_features=4, bias=True)
    ...
    >>> bool(r.mse.max() < 1e-2)
    True
    """
    state = None
    if resume is not None:
        state = resume if isinstance(resume, dict) else load_train_state(resume)
        config, data = _resumed(state, target, config, data, overrides)
    config = _config(target, config, overrides)
    if checkpoint_every is not None:
        check_int(checkpoint_every, "checkpoint_every", low=1)
    data = make_dataset(config, data)
    extra = {"config": config.to_dict(), "data": _data_state(data)}
    hooks = list(on_stage) if isinstance(on_stage, (list, tuple)) else [on_stage]
    hooks = [h for h in hooks if h is not None]
    if not all(callable(h) for h in hooks):
        raise InputError("on_stage must be a callable or a list of callables (each gets a "
                         "StageEvent)")
    if tracker is not None and not callable(getattr(tracker, "record", None)):
        raise InputError(f"tracker must have a record(model, step, **tags) method, like "
                         f"relu_regions.RegionTracker; got {type(tracker).__name__}")
    recorder = StageRecorder(data.box, config.count and data.dims == 1, tracker)
    stages = Stages(checkpoint, checkpoint_every, state, checkpoint_meta, extra,
                    [recorder, *hooks], config.seed_list)
    with torch_threads(config.threads):
        return _Fit(config, data, stages, progress, recorder).run()


class StageRecorder:
    """A stage hook: at every stage end, each row's linear pieces on the interval (when
    ``count``) and each row's net handed to ``tracker.record(model, step, stage=, seed=, row=)``.
    """

    COLUMNS = ("step", "stage", "seed", "row", "pieces")

    def __init__(self, box, count: bool, tracker=None):
        self.box, self.count, self.tracker = box, count, tracker
        self.rows: list[tuple] = []

    def __call__(self, event: StageEvent) -> None:
        if event.when != "end" or not (self.count or self.tracker is not None):
            return
        raw = event.raw().cpu()
        shapes = shapes_of(list(event.widths))
        for r in range(raw.shape[0]):
            seed = event.seed_of(r)
            if self.count:  # from the weights: building a module costs more than the count
                layers = [(w.numpy(), b.numpy()) for w, b in unflatten_layers(raw[r], shapes)]
                self.rows.append((event.step, event.stage, seed, r,
                                  count_pieces(layers, self.box)))
            if self.tracker is not None:
                model = to_module(raw[r], shapes, list(event.widths))
                self.tracker.record(model, event.step, stage=event.stage, seed=seed, row=r)

    def history(self) -> dict:
        """The pieces record as arrays, one per column (empty when nothing was counted)."""
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * 5
        dtypes = (np.int64, np.str_, np.int64, np.int64, np.int64)
        return {name: np.array(col, dtype=dtype)
                for name, col, dtype in zip(self.COLUMNS, columns, dtypes, strict=True)}


def _config(target, config, overrides) -> FitConfig:
    config = config if config is not None else FitConfig()
    if not isinstance(config, FitConfig):
        raise InputError(f"config must be a FitConfig, got {type(config).__name__}")
    if target is not None:
        overrides = {**overrides, "target": target}
    return config.replace(**overrides).validate()


def _resumed(state, target, config, data, overrides):
    """The stored config and data of a training state, unless the caller gives them again."""
    stored = state.get("config")
    if target is None and config is None and data is None and not overrides:
        if stored is None:
            raise InputError("this training state does not record its settings; call fit with "
                             "the same settings and resume=")
        config = FitConfig.from_dict(stored)
        if state.get("data") is not None:
            data = _data_from_state(state["data"])
            config = config.replace(target=None, interval=None, points=None, sparse=None,
                                    test_fraction=0.0)
        return config, data
    given = _config(target, config, overrides).to_dict()
    if stored is not None:
        differ = [k for k in given if k in stored and given[k] != stored[k]
                  and k not in ("device", "threads")]
        if differ:
            raise InputError(f"resume with the settings of the interrupted run: {differ[0]} is "
                             f"{given[differ[0]]!r} now and was {stored[differ[0]]!r}")
    return config, data


def _data_state(data) -> dict:
    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))

    return {"x": t(data.x), "y": t(data.y), "test_x": t(data.test_x), "test_y": t(data.test_y),
            "interval": [list(map(float, b)) for b in data.box], "name": str(data.name)}


def _data_from_state(d):
    box = tuple(tuple(b) for b in d["interval"])
    x = d["x"].numpy()
    return Dataset(x, d["y"].numpy(), d["test_x"].numpy(), d["test_y"].numpy(),
                   box[0] if x.ndim == 1 else box, d["name"])


class RawNet:
    """Phase 2's model: raw weights of the Linear/ReLU stack with ``shapes`` on points x.

    A prediction without gradients (LM's) keeps its activation masks, and the Jacobian of rows
    it saw reuses them (LM asks for J right after predicting the step it keeps): one forward
    pass per LM step instead of two."""

    def __init__(self, shapes, x):
        self.shapes, self.x = shapes, x
        self._seen = None  # (Theta, masks) of the last prediction without gradients

    @row_wise
    def predict(self, theta: torch.Tensor) -> torch.Tensor:
        if theta.requires_grad or self.x.dim() != 1:
            return mlp_forward(unflatten_layers(theta, self.shapes), self.x)
        masks: list = []
        out = mlp_forward(unflatten_layers(theta, self.shapes), self.x, masks)
        self._seen = (theta, masks)
        return out

    @row_wise
    def jacobian(self, theta: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, RunProjection]:
        return lm_jacobian(unflatten_layers(theta, self.shapes), self.x, self._masks_of(theta))

    def _masks_of(self, theta):
        """The last prediction's masks of these rows (matched by value), or None."""
        if self._seen is None or self._seen[0].shape[1] != theta.shape[1]:
            return None
        seen, masks = self._seen
        same = (theta.unsqueeze(1) == seen.unsqueeze(0)).all(dim=2)  # (rows, seen rows)
        if not bool(same.any(dim=1).all()):
            return None
        at = same.to(torch.uint8).argmax(dim=1)
        return [m[at] for m in masks]


class GmPNet:
    """Raw training on GmP coordinates: the raw net through ``GmPLayout.to_raw``."""

    def __init__(self, raw: RawNet, offsets):
        self.raw, self.gmp, self.offsets = raw, GmPLayout(raw.shapes), offsets
        # jvp_jacobian runs seed s with each of the P tangents in rows s*P .. s*P + P - 1.
        n_coords = sum(o * (i + 1) for (o, i), _ in raw.shapes)
        self.expanded = offsets.repeat_interleave(n_coords, dim=0)

    def to_raw(self, coords: torch.Tensor) -> torch.Tensor:
        return self.gmp.to_raw(coords, self.offsets)

    def predict(self, coords: torch.Tensor) -> torch.Tensor:
        return self.raw.predict(self.to_raw(coords))

    def jacobian(self, coords: torch.Tensor
                 ) -> torch.Tensor | tuple[torch.Tensor, RunProjection]:
        d_raw = jvp_jacobian(lambda e: self.gmp.to_raw(e, self.expanded), coords)
        return chain_jacobian(self.raw.jacobian(self.to_raw(coords)), d_raw)


class DerivedNet:
    """Phase 1's model: the layout's derived parameters on points x."""

    def __init__(self, layout, x):
        self.layout, self.x, self.points = layout, x, x.reshape(x.shape[0], -1)
        # 1D: forward mode at two points per activation run, when the runs (about one per
        # linear piece) are at most half the points; else at every point.
        self.by_runs = (isinstance(layout, composite.SumLayout) and x.dim() == 1
                        and 2 * layout.max_pieces <= len(x))

    def predict(self, theta: torch.Tensor) -> torch.Tensor:
        return self.layout.predict(theta, self.points)

    def jacobian(self, theta: torch.Tensor
                 ) -> torch.Tensor | tuple[torch.Tensor, RunProjection]:
        if self.by_runs:
            return derived_jacobian_runs(self.layout, theta, self.x)
        return jvp_jacobian(self.predict, theta)


def _auto_growth(config: FitConfig, data: Dataset) -> FitConfig:
    """``config`` with ``grow_from`` from :func:`~relu_regions.training.auto.auto_settings` when
    it was left unset (growth needs a single construction); ``grow_from=depth`` trains directly."""
    if config.grow_from is not None:
        return config
    layout = composite.build_layout(config.shape, data.x, data.y, data.box, config.depth,
                                    thm31=config.method != "pretrain")[0]
    single = isinstance(layout, composite.SumLayout) and len(layout.terms) == 1
    grow_from = auto_settings(config.depth, config.method, single, data.dims).get("grow_from")
    return config if grow_from is None else config.replace(grow_from=grow_from)


class _Fit:
    """One fit's state: its config, data on the device, layouts, journal and loss history."""

    def __init__(self, config: FitConfig, data, stages: Stages, progress,
                 recorder: StageRecorder | None = None):
        config = _auto_growth(config, data)  # depth-dependent default (training/auto.py)
        self.config, self.data, self.stages = config, data, stages
        self.seeds = config.seed_list
        self.d0 = config.grow_from or config.depth
        thm31 = config.method != "pretrain"
        self.layout, self.shape, self.q_target = composite.build_layout(
            config.shape, data.x, data.y, data.box, self.d0, thm31=thm31)
        self.single = isinstance(self.layout, composite.SumLayout) and len(self.layout.terms) == 1
        if config.grow_from is not None and not self.single:
            chosen = " (chosen by shape='auto' for this target)" if config.shape == "auto" else ""
            raise InputError(f"grow_from needs one construction on a 1D target (shape convex or "
                             f"concave); this fit's shape is {self.shape!r}{chosen}")
        # the growth starts with the warp layer (training/auto.py); False when nothing grows
        self.warp = use_warp(config.depth, self.d0, config.warp, data.dims)
        self.full = (self.layout if self.d0 == config.depth else
                     composite.build_layout(config.shape, data.x, data.y, data.box, config.depth,
                                    thm31=thm31)[0])
        self.widths = self._widths()
        self.shapes = shapes_of(self.widths)
        self.dev = torch.device(config.device)
        self.x = torch.tensor(data.x, dtype=torch.float64, device=self.dev)
        self.y = torch.tensor(data.y, dtype=torch.float64, device=self.dev)
        self.history: list = []
        self.recorder = recorder
        # steps on each seed's best paths after a growth
        self.polish = round(POLISH_SHARE * config.phase2.steps) if config.grows else 0
        self.optimum_note = None  # why the optimum column is empty, when fit skipped it
        total = config.phase1.steps + config.phase2.steps + self.polish
        self.progress = Progress(total, len(self.seeds), progress)

    def _widths(self):
        c = self.config
        if c.method in CONSTRUCTION_METHODS:
            return self.full.widths
        # the same net as the construction's, or the plain width-`width` net for one term
        if self.single:
            return [len(self.data.box)] + [c.width] * c.depth + [1]
        return self.layout.widths

    def run(self) -> FitResult:
        start = time.perf_counter()
        boundary = 0
        with self.progress:
            if self.config.method in TWO_PHASE:
                theta, boundary = self._two_phase(), self.config.phase1.steps
            else:
                theta = self._one_phase()
        return self._result(theta, boundary, time.perf_counter() - start)

    # -- stages ----------------------------------------------------------------------------

    def train_raw(self, theta, phase, name, shapes=None, history=None, final=None, then=None):
        """Phase 2 (or the only phase) on standard or GmP coordinates; returns raw Theta.

        ``final`` (a dict) receives what a continuation needs: the optimizer's coordinates and
        state, and (GmP) the offsets; ``then`` = (step, such a dict with rows picked) continues
        that run from ``step`` instead of starting from ``theta``.
        """
        raw = RawNet(shapes or self.shapes, self.x)
        history = self.history if history is None else history
        start = None if then is None else (then[0], then[1]["theta"], then[1]["state"])
        widths = _widths_of(raw.shapes)
        if self.config.parameterization == "sp":
            return optimize(raw.predict, raw.jacobian, theta, self.y, phase, history,
                            self.progress.tick, self.stages, start, final, name, widths)
        if then is None:
            coords, offsets = GmPLayout(raw.shapes).from_raw(theta)
        else:
            coords, offsets = then[1]["theta"], then[1]["offsets"]
        net = GmPNet(raw, offsets)
        coords = optimize(net.predict, net.jacobian, coords, self.y, phase, history,
                          self.progress.tick, self.stages, start, final, name, widths,
                          net.to_raw)
        if final is not None:
            final["offsets"] = offsets
        return net.to_raw(coords)

    def release(self, theta1):
        """Derived parameters -> the raw weights of the same function."""
        return flatten_layers(self.layout.raw(theta1))

    def _one_phase(self):
        c = self.config
        raw_phase = Phase(c.phase2.optimizer, c.phase1.steps + c.phase2.steps, c.phase2.lr)
        if c.method == "skip":
            theta = self.release(composite.initial_theta(self.layout, self.seeds, self.data.x,
                                                 self.data.y, self.q_target).to(self.dev))
        else:
            theta = random_theta(c.method, self.seeds, self.widths, self.data.box).to(self.dev)
        return self.train_raw(theta, raw_phase, "raw")

    def _two_phase(self):
        c, n = self.config, len(self.seeds)
        # Start k of seed s draws its peaks from stream s + 100000 k (k = 0 is the seed itself).
        start_seeds = [s + 100_000 * k for k in range(c.n_starts) for s in self.seeds]
        theta1 = composite.initial_theta(self.layout, start_seeds, self.data.x, self.data.y,
                                 self.q_target).to(self.dev)
        derived = DerivedNet(self.layout, self.x)
        per_start: list = []
        theta1 = optimize(derived.predict, derived.jacobian, theta1, self.y, c.phase1,
                          per_start, self.progress.tick, self.stages, name="phase1",
                          widths=self.layout.widths, to_raw=self.release)
        if self.d0 == c.depth and c.n_starts == 1:
            self.history += per_start
            return self.train_raw(self.release(theta1), c.phase2, "phase2")
        return self._pick_and_continue(theta1, per_start, n)

    def _pick_and_continue(self, theta1, per_start, n):
        """Every start also runs a share of phase 2 (at depth d0), and each seed keeps the start
        with the lowest raw training MSE there: phase 1's loss is a poor guide to where phase 2
        ends (docs/training.md). At a fixed depth the kept start continues its run (optimizer
        state and all) to the end of phase 2; growing gives each added layer an equal share of
        phase 2 and the rest to depth d0, then polishes (:meth:`_grow_and_polish`); a growth
        that starts with a warp layer picks the start after the warp stage instead."""
        c, d0, depth, p2 = self.config, self.d0, self.config.depth, self.config.phase2
        each = p2.steps // (depth - d0 + 2)
        share = (p2.steps - each * (depth - d0) if d0 < depth
                 else min(p2.steps, max(1, round(PICK_SHARE * p2.steps))))
        d0_shapes = self.shapes if d0 == depth else raw_shapes(d0, c.width)
        last: dict = {}
        theta = self.train_raw(self.release(theta1), Phase(p2.optimizer, share, p2.lr),
                               "phase2:share", shapes=d0_shapes, history=per_start, final=last)
        if d0 < depth:  # every start grows; growth.grow keeps each seed's best before a fold
            a_last = self.layout.split(theta1)[0][0][0][:, d0 - 1]
            return self._grow_and_polish(theta, a_last, n, per_start)
        pick = growth.best_rows(per_seed_mse(RawNet(d0_shapes, self.x).predict, theta, self.y),
                                c.n_starts, n)
        self.history += [pick(h) for h in per_start]
        picked = pick(theta)
        self.stages.emit("pick", "end", picked, _widths_of(d0_shapes))
        if share < p2.steps:
            return self.train_raw(picked, p2, "phase2:rest",
                                  then=(share, pick_rows(last, pick, theta.shape[0])))
        return picked

    def _grow_and_polish(self, theta, a_last, n, history):
        """:func:`growth.grow` from d0 (Theta: every start of every seed, ``history`` their
        losses so far), then the polish: each seed's POLISH_PATHS best paths train
        POLISH_SHARE of phase 2's steps more, and each seed keeps the best of them by training
        MSE (the paths' stages are too short for their nets to converge, and the best path
        before the polish is not always the best after it; docs/training.md)."""
        p2 = self.config.phase2
        grown = list(history)  # the kept paths' loss history, picked once the polish has run
        theta = growth.grow(theta, self.d0, self.config.depth, a_last, self.x, self.y,
                            self._grow_stage, self._predict_at, grown, warp=self.warp,
                            keep=POLISH_PATHS if self.polish else 1,
                            starts=theta.shape[0] // n, on_pick=self._emit_pick)
        theta = self.train_raw(theta, Phase(p2.optimizer, self.polish, p2.lr), "polish",
                               history=grown)
        best = growth.best_rows(per_seed_mse(RawNet(self.shapes, self.x).predict, theta, self.y),
                                theta.shape[0] // n, n)  # fewer rows when there were fewer paths
        self.history += [best(h) for h in grown]
        theta = best(theta)
        self.stages.emit("pick:polish", "end", theta, self.widths)
        return theta

    def _emit_pick(self, theta, depth):
        self.stages.emit("pick", "end", theta, _widths_of(raw_shapes(depth, self.config.width)))

    def _grow_stage(self, theta, history, depth):
        p2 = self.config.phase2
        each = p2.steps // (self.config.depth - self.d0 + 2)
        return self.train_raw(theta, Phase(p2.optimizer, each, p2.lr), f"grow:{depth}",
                              shapes=raw_shapes(depth, self.config.width), history=history)

    def _predict_at(self, theta, depth):
        return RawNet(raw_shapes(depth, self.config.width), self.x).predict(theta)

    # -- result ----------------------------------------------------------------------------

    def _result(self, theta, boundary, seconds) -> FitResult:
        c, data = self.config, self.data
        models = [to_module(t, self.shapes, self.widths) for t in theta.cpu()]
        r_train = RawNet(self.shapes, self.x).predict(theta).detach() - self.y
        train_mse = (r_train * r_train).mean(dim=1).cpu().numpy()
        if not data.held_out:
            r_test, mse = r_train, train_mse.copy()
        else:
            tx = torch.tensor(data.test_x, dtype=torch.float64, device=self.dev)
            ty = torch.tensor(data.test_y, dtype=torch.float64, device=self.dev)
            r_test = RawNet(self.shapes, tx).predict(theta).detach() - ty
            mse = (r_test * r_test).mean(dim=1).cpu().numpy()
        n_pieces = None if data.dims > 1 else 2**c.depth if self.single else self.full.max_pieces
        optimal, eff = self._optimum(n_pieces, train_mse)
        hist = (torch.stack(self.history, dim=1).cpu().numpy() if self.history
                else np.zeros((len(self.seeds), 0)))
        target = c.target
        return FitResult(
            method=c.method,
            target=getattr(target, "text", target if isinstance(target, str) else data.name),
            depth=c.depth, width=c.width, seeds=self.seeds, interval=data.interval, mse=mse,
            train_mse=train_mse, pieces=self._pieces(models), optimal_mse=optimal,
            **self._plane_counts(models),
            efficiency=eff, history={"loss": hist, "phase_boundary": boundary,
                                     "pieces": self._piece_history()}, models=models,
            seconds=seconds, phases=self._phases(),
            diverged=[int(s) for s, m in zip(self.seeds, mse, strict=True) if not np.isfinite(m)],
            shape=self.shape, widths=list(self.widths),
            optimal_pieces=n_pieces if optimal else None, max_pieces=n_pieces,
            config=c, data=data, errors=_test_errors(r_test.cpu().numpy(), data.test_y),
        )

    def _piece_history(self) -> dict:
        recorder = self.recorder or StageRecorder(self.data.box, False)
        return recorder.history()

    def _optimum(self, n_pieces, train_mse):
        """The best n_pieces-piece fit of the training data, and optimum / achieved per seed;
        only where that optimum means something: fewer pieces than half the points."""
        if not (self.config.optimum and n_pieces and 2 * n_pieces < len(self.data.x)):
            return None, None
        if n_pieces > MAX_OPTIMUM_PIECES:
            self.optimum_note = (f"optimum not computed: {n_pieces} pieces is more than "
                                 f"{MAX_OPTIMUM_PIECES} (analysis.limits.optimal_pwl computes "
                                 "it for the data, continuous_optimal_pwl gives the limit)")
            return None, None

        quick = n_pieces >= QUICK_OPTIMUM_PIECES
        optimal = float(limits.optimal_pwl(self.data.x, self.data.y, n_pieces, dp=not quick,
                                    restarts=0 if quick else 3).mse)
        eff = np.full(train_mse.shape, np.nan)  # NaN for a diverged seed
        finite = np.isfinite(train_mse)
        if finite.any():
            eff[finite] = limits.efficiency(optimal, train_mse[finite])
        return optimal, eff

    def _pieces(self, models):
        if not self.config.count:
            return np.full(len(models), -1)
        return np.array([count_pieces(m, self.data.box) for m in models])

    def _plane_counts(self, models) -> dict:
        """2D fits: each seed's activation regions and linear pieces on the data's box."""
        if self.data.dims != 2:
            return {}
        counts = (np.array([count_plane(m, self.data.box) for m in models]) if self.config.count
                  else np.full((len(models), 2), -1))
        return {"regions": counts[:, 0], "plane_pieces": counts[:, 1]}

    def _phases(self):
        c = self.config
        return {"phase1": vars(c.phase1), "phase2": vars(c.phase2), "shape": self.shape,
                "parameterization": c.parameterization, "starts": c.n_starts,
                "grow_from": c.grow_from, "warp": self.warp, "polish": self.polish,
                "optimum_note": self.optimum_note}


def _widths_of(shapes) -> list:
    """The layer widths of an MLP with these [(W shape, b shape)] (inverse of ``shapes_of``)."""
    return [shapes[0][0][1]] + [w[0] for w, _ in shapes]


def _test_errors(residual, test_y) -> dict:
    """Per seed on the test points: R^2, RMSE relative to the target's std, max |error|."""
    with np.errstate(all="ignore"):
        mse = (residual * residual).mean(axis=1)
        var = float(np.var(test_y))
        return {"r2": 1 - mse / var if var > 0 else np.full(mse.shape, np.nan),
                "rel_rmse": np.sqrt(mse) / np.sqrt(var) if var > 0 else np.full(mse.shape, np.nan),
                "max_abs_error": np.abs(residual).max(axis=1)}


def count_pieces(model: nn.Module | Sequence, box: Sequence[Sequence[float]]) -> int:
    """Linear pieces of a model (or its (W, b) pairs) on the interval (1D), or along the box's
    diagonal (nD); -1 if the weights are not finite (a diverged seed)."""
    try:
        if len(box) == 1:
            return count_regions(model, *box[0]).linear_pieces
        return count_regions_segment(model, [b[0] for b in box], [b[1] for b in box]).linear_pieces
    except InputError:  # non-finite weights after divergence
        return -1


def count_plane(model: nn.Module, box: Sequence[Sequence[float]]) -> tuple[int, int]:
    """(activation regions, linear pieces) of a 2-input net on the box ((x0, x1), (y0, y1)),
    exact (docs/regions2d.md); (-1, -1) if the weights are not finite (a diverged seed)."""
    try:
        c = count_regions_2d(model, (*box[0], *box[1]))
    except InputError:
        return -1, -1
    return c.activation_regions, c.linear_pieces
