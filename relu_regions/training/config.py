"""Every setting of a fit, with its default, in one torch-free dataclass (:class:`FitConfig`).

This is the single source of the defaults: ``relu_regions.fit``, the ``train`` command's options
and the sweep file's keys are all derived from the fields here (each field's ``metadata`` carries
its help text), so a new field reaches the CLI and the sweeps without editing either.

>>> FitConfig(depth=3).replace(phase1="adam:10").phase1
Phase(optimizer='adam', steps=10, lr=0.001)
>>> FitConfig().replace(dpeth=3)
Traceback (most recent call last):
...
relu_regions.errors.InputError: fit has no setting 'dpeth' (did you mean 'depth'?); settings: ...
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..nets.shapes import SHAPES
from ..validation import check_choice, check_device, check_float, check_int, check_interval, is_int
from .auto import CONSTRUCTION_METHODS, TWO_PHASE, WARP_MIN_ADDED

METHODS = ("kaiming", "raai", "skip", *TWO_PHASE)
PARAMETERIZATIONS = ("sp", "gmp")
OPTIMIZERS = ("lm", "adam")
# One depth limit for count, train and sweep: 2^26 pieces is ~6 GB of the exact counter's
# working arrays, the most this machine class holds (and every trained net is counted).
MAX_DEPTH = 26
MAX_STEPS = 10**7
STARTS, GROW_STARTS = 8, 16  # phase-1 starts per seed: default, and when growing
PICK_SHARE = 0.25  # of phase 2's steps, run on every start before each seed keeps its best
# After a growth, each seed's POLISH_PATHS best paths train this share of phase 2's steps more
# (the "polish"), and the best of them is kept: the paths' stages are short (66 steps each at
# depth 10) and the nets have not converged, and the best path before the polish is not always
# the best after it. Measurements: docs/training.md, "The polish" and "How far the depth-10
# figure carries".
POLISH_SHARE = 1.0
POLISH_PATHS = 3


@dataclass(frozen=True)
class Phase:
    """One training phase: optimizer ("lm" = Levenberg-Marquardt, "adam"), steps, learning rate.

    A step is one full-batch update (an "epoch" in the paper). ``lr`` is Adam's step size, or
    LM's initial damping.
    """

    optimizer: str = "lm"
    steps: int = 300
    lr: float = 1e-3

    def validate(self, name: str = "phase") -> Phase:
        check_choice(self.optimizer, f"{name} optimizer", OPTIMIZERS)
        check_int(self.steps, f"{name} steps", low=0, high=MAX_STEPS)
        check_float(self.lr, f"{name} learning rate", low=0, low_open=True)
        return self

    def spec(self) -> str:
        """``"lm:400:0.001"``: the form :func:`parse_phase` reads back."""
        return f"{self.optimizer}:{self.steps}:{self.lr!r}"


# The defaults are the best measured (docs/training.md, "The two phases and the pick"): LM in
# both phases.
DEFAULT_PHASE1 = Phase("lm", 100, 1e-3)
DEFAULT_PHASE2 = Phase("lm", 400, 1e-3)
# The paper's protocol, for reproduction: Adam lr 1e-3, 1000 steps of phase 1.
PAPER_PHASE1 = Phase("adam", 1000, 1e-3)
PAPER_PHASE2 = Phase("adam", 1000, 1e-3)
PHASE_FORM = ("'OPTIMIZER:STEPS[:LR]' (e.g. 'lm:100', 'adam:1000:1e-3'), a (optimizer, steps[, "
              "lr]) pair or triple, a table {optimizer, steps, lr} or a Phase")


def parse_phase(value: Phase | str | Sequence | Mapping, name: str = "phase") -> Phase:
    """A Phase from ``Phase(...)``, ``"lm:100"``, ``("adam", 1000, 1e-3)`` or ``{"optimizer":
    ..., "steps": ..., "lr": ...}``; the one parser of phase specs (CLI, sweeps, fit)."""
    if isinstance(value, Phase):
        return value.validate(name)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(":")]
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            parts[1] = int(parts[1])
            if len(parts) == 3:
                parts[2] = float(parts[2])
        except ValueError:
            raise InputError(f"{name} must be {PHASE_FORM}; got {value!r}") from None
        value = tuple(parts)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"optimizer", "steps", "lr"})
        if unknown:
            raise InputError(f"{name} has unknown key {unknown[0]!r}; allowed: optimizer, "
                             "steps, lr")
        if "optimizer" not in value or "steps" not in value:
            raise InputError(f"{name} table needs optimizer and steps (lr is optional)")
        value = (value["optimizer"], value["steps"], value.get("lr", 1e-3))
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise InputError(f"{name} must be {PHASE_FORM}; got {value!r}")
    opt, steps, lr = (*value, 1e-3) if len(value) == 2 else value
    if not isinstance(opt, str) or not is_int(steps):
        raise InputError(f"{name} must be {PHASE_FORM}; got {value!r}")
    return Phase(opt, int(steps), lr).validate(name)


def _setting(default, help: str, **cli):
    """A FitConfig field: its default, its help text, and how the CLI spells it.

    ``cli`` keys: ``flag`` (default ``--name-with-dashes``), ``metavar``, ``choices``, ``parse``
    (str -> value; default from the default's type), ``cli=False`` (the command line spells it
    by hand: ``--target``), ``sweep=False`` (not a sweep key)."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"help": help, **cli})


@dataclass(frozen=True)
class FitConfig:
    """Every setting of :func:`relu_regions.fit` and its default (docs/training.md explains them).

    ``None`` means "chosen from the rest": the interval from the data, the points from the
    target's dimension, the starts from whether the fit grows.
    """

    target: object = _setting(None, "target in x (or x and y), e.g. 'x**3', or a callable on "
                              "numpy arrays", cli=False)
    depth: int = _setting(5, f"hidden layers (1 to {MAX_DEPTH}, the limit of the exact counter); "
                          "per construction for the radial shape, which stacks two "
                          "(2 x depth hidden layers)")
    seeds: object = _setting(30, "runs, trained together: seeds SEED..SEED+N-1 (from Python or "
                             "a sweep also a list)", parse=int)
    seed: int = _setting(0, "first seed (also seeds the sparse points and the held-out share)",
                         sweep=False)  # a sweep's seed axis is its `seeds` key
    method: str = _setting("pretrain-thm31", "two-phase (pretrain, pretrain-thm31) or a baseline",
                           choices=METHODS)
    interval: object = _setting(None, "input interval LO,HI (default 0,1; with data, the data's "
                                "range)", metavar="LO,HI", parse="interval")
    points: object = _setting(None, "evenly spaced points (default max(500, 4 * 2^depth), so "
                              "that 2^depth pieces cannot interpolate them; a 2D target: points "
                              "per axis of a grid, default 41)", parse=int)
    sparse: object = _setting(None, "N random training and N test points", metavar="N",
                              parse=int)
    test_fraction: float = _setting(0.0, "hold out this share of the points (seeded by SEED) as "
                                    "the test set; train and test are reported separately",
                                    metavar="F")
    phase1: Phase = _setting(DEFAULT_PHASE1, "phase 1, OPT:STEPS[:LR]; e.g. adam:1000:1e-3 for "
                             "the paper's protocol", metavar="OPT:STEPS[:LR]", parse="phase")
    phase2: Phase = _setting(DEFAULT_PHASE2, "phase 2, OPT:STEPS[:LR]; one-phase methods get both "
                             "budgets with this optimizer", metavar="OPT:STEPS[:LR]",
                             parse="phase")
    width: int = _setting(4, "hidden width of kaiming/raai nets (the construction is width 4)")
    shape: str = _setting("auto", "construction layout: 1D convex, concave or dc (convex minus "
                          "convex); 2D ridge or radial; auto picks from the data",
                          choices=SHAPES)
    starts: object = _setting(None, "starts per seed (random peaks), each through phase 1 and a "
                              f"share of phase 2; the best continues (default {STARTS}; "
                              f"{GROW_STARTS} when the fit grows; two-phase methods only)",
                              parse=int)
    grow_from: object = _setting(None, "train at depth D0 first, then add one layer at a time "
                                 "up to --depth (every start through the warp layer, when there "
                                 "is one, then each seed's best along 18 insertion paths; the "
                                 f"{POLISH_PATHS} best train phase 2's steps once more, the "
                                 "best is kept); "
                                 "default: two-phase 1D fits on one construction deeper than 6 "
                                 "grow from 6, others train directly (D0 = depth: directly; "
                                 "two-phase methods only)",
                                 metavar="D0", parse=int)
    warp: bool = _setting(True, f"when a fit grows by {WARP_MIN_ADDED} layers or more (1D), make "
                          "the first added layer a warp of the input (a PL map of x that moves "
                          "every knot) instead of a fold")
    parameterization: str = _setting("sp", "raw-weight training on standard weights (sp) or on "
                                     "GmP coordinates (gmp; Chen & Ge)", flag="--param",
                                     choices=PARAMETERIZATIONS)
    count: bool = _setting(True, "count each net's linear pieces exactly")
    optimum: bool = _setting(True, "compute the best piecewise-linear fit with the construction's "
                             "piece count (1D dense data)")
    device: str = _setting("cpu", "torch device")
    threads: object = _setting(1, "torch threads while fitting (the batched ops are small: "
                               "more threads mostly add synchronization)", parse=int)

    def __post_init__(self):
        # Phases may be spelled Phase(...), "lm:100" or ("adam", 1000, 1e-3): read them once,
        # here, so FitConfig(phase1="lm:20") and config.replace(phase1=...) hold a Phase alike.
        for name in ("phase1", "phase2"):
            object.__setattr__(self, name, parse_phase(getattr(self, name), name))

    def replace(self, **overrides: Any) -> FitConfig:
        """A copy with ``overrides``; an unknown name is an InputError naming the closest."""
        check_names(overrides)
        return dataclasses.replace(self, **overrides)

    def validate(self) -> FitConfig:
        """Check every setting (value ranges and combinations); returns self."""
        check_int(self.depth, "depth", low=1, high=MAX_DEPTH,
                  hint="the exact counter holds up to 2^26 pieces")
        check_int(self.seed, "seed", low=0)
        if isinstance(self.seeds, (list, tuple)):
            if not self.seeds or not all(is_int(s) and s >= 0 for s in self.seeds):
                raise InputError(f"seeds must be a count or a non-empty list of integers >= 0, "
                                 f"got {self.seeds!r}")
        else:
            check_int(self.seeds, "seeds", low=1)
        check_choice(self.method, "method", METHODS)
        check_choice(self.shape, "shape", SHAPES)
        check_choice(self.parameterization, "parameterization", PARAMETERIZATIONS)
        if self.interval is not None:
            check_interval(self.interval)
        if self.points is not None and self.sparse is not None:
            raise InputError("give points (dense data) or sparse (random points), not both")
        for name in ("points", "sparse"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, low=2)
        check_float(self.test_fraction, "test_fraction", low=0, high=0.9)
        if self.sparse is not None and self.test_fraction:
            raise InputError("sparse data has its own test points; drop test_fraction")
        parse_phase(self.phase1, "phase1")
        parse_phase(self.phase2, "phase2")
        check_int(self.width, "width", low=1)
        if self.method in CONSTRUCTION_METHODS and self.width != 4:
            raise InputError(f"the construction is width 4; width={self.width} only for "
                             "kaiming/raai")
        if self.starts is not None:
            check_int(self.starts, "starts", low=1)
        if self.grow_from is not None:
            check_int(self.grow_from, "grow_from", low=1, high=self.depth,
                      hint="it is the depth trained before growing, at most the fit's depth "
                           "(equal to it: no growth)")
        # Several starts and growth act through phase 1: asked of a baseline, they are refused,
        # not ignored (starts=1 and grow_from=depth are what a baseline does anyway).
        if self.method not in TWO_PHASE:
            for name, inert in (("starts", 1), ("grow_from", self.depth)):
                if getattr(self, name) not in (None, inert):
                    raise InputError(
                        f"{name}={getattr(self, name)} applies to the two-phase methods "
                        f"({', '.join(TWO_PHASE)}); {self.method} trains one net per seed from "
                        f"its own initialization: leave {name} out (in a sweep, give the "
                        "baselines a file of their own)")
        for name in ("count", "optimum", "warp"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.device, str) or not self.device:
            raise InputError(f"device must be a torch device name such as 'cpu', "
                             f"got {self.device!r}")
        check_device(self.device, "device")  # a CUDA/MPS name on a build without it: one line
        if self.threads is not None:
            check_int(self.threads, "threads", low=1)
        return self

    @property
    def seed_list(self) -> list:
        """The seeds this config trains: the list given, or seed .. seed + seeds - 1."""
        if isinstance(self.seeds, (list, tuple)):
            return [int(s) for s in self.seeds]
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def n_starts(self) -> int:
        """``starts``, or the default: 8, 16 when growing (growth magnifies the start's basin)."""
        if self.starts is not None:
            return self.starts
        return GROW_STARTS if self.grows else STARTS

    @property
    def grows(self) -> bool:
        """Whether the fit trains at ``grow_from`` first and then adds layers (only two-phase
        methods can: ``validate`` refuses ``grow_from < depth`` for a baseline)."""
        return self.grow_from is not None and self.grow_from != self.depth

    def to_dict(self) -> dict:
        """Plain data (JSON): phases as tables, a callable target by its name."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Phase):
                v = dataclasses.asdict(v)
            elif f.name == "target" and v is not None and not isinstance(v, str):
                v = getattr(v, "text", None) or getattr(v, "__name__", repr(v))
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, values: dict) -> FitConfig:
        """The inverse of :meth:`to_dict` (unknown keys refused; phases parsed)."""
        values = dict(values)
        if isinstance(values.get("interval"), list):
            values["interval"] = tuple(values["interval"])
        return cls().replace(**values)


def fields() -> list:
    """FitConfig's fields (looked up at call time, so a test may extend the class)."""
    return dataclasses.fields(FitConfig)


def check_names(values: dict, where: str = "fit") -> None:
    """InputError for the first key that is not a FitConfig field, with the closest name."""
    names = [f.name for f in fields()]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{where} has no setting {key!r}{hint}; settings: {', '.join(names)}")

