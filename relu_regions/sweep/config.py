"""Sweep files: a TOML grid over FitConfig fields x seeds, validated into a :class:`SweepConfig`
(docs/sweeps.md). Every FitConfig field is a key under its own name; a list makes it an axis."""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from .. import targets
from ..errors import InputError, read_user_file
from ..training import config as fit_config
from ..training.data import make_dataset
from ..validation import is_int

MAX_SEEDS = 1000
MAX_SEED = 2**32 - 1
MAX_CELLS = 100_000
MAX_CONFIG_BYTES = 1 << 20


# The old plural keys, still read: a list under one of them is that field's axis.
PLURALS = {"targets": "target", "depths": "depth", "methods": "method"}
FIRST_AXES = ("target", "depth", "method")  # grid order: these first, then the file's order
LIST_VALUED = ("interval",)  # a field whose single value is a list; a list of lists is an axis


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep grid: ``grid`` maps FitConfig fields to their values (one value: fixed;
    several: an axis), ``seeds`` the seeds of every point. Build it with :func:`load_config` or
    :func:`parse_config`."""

    grid: dict
    seeds: tuple

    def values(self, name: str) -> tuple:
        """The values of field ``name`` in this grid (its FitConfig default if not given)."""
        if name in self.grid:
            return self.grid[name]
        default = getattr(fit_config.FitConfig(), name)
        return (_plain(default),)

    @property
    def targets(self) -> tuple:
        return self.values("target")

    @property
    def depths(self) -> tuple:
        return self.values("depth")

    @property
    def methods(self) -> tuple:
        return self.values("method")

    @property
    def varied(self) -> list:
        """The axes beyond target, depth and method (fields with more than one value)."""
        return [k for k, v in self.grid.items() if len(v) > 1 and k not in FIRST_AXES]

    def __getattr__(self, name):  # interval, points, phase1, ...: the single value of a field
        if name.startswith("_") or name in ("grid", "seeds"):
            raise AttributeError(name)

        if name not in {f.name for f in fit_config.fields()}:
            raise AttributeError(name)
        values = self.values(name)
        return values[0] if len(values) == 1 else values

    def points_of_grid(self) -> list:
        """Every grid point (a dict of the given fields) in grid order, without the seed."""
        names = [*FIRST_AXES, *[k for k in self.grid if k not in FIRST_AXES]]
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(self.values(k) for k in names))]

    def cells(self) -> list[dict]:
        """Every cell's fit settings plus its seed, in grid order (targets, depths, methods,
        the other axes, seeds as given)."""
        varied = tuple(self.varied)
        return [{**point, "seed": s, "varied": varied}
                for point in self.points_of_grid() for s in self.seeds]

    def with_values(self, name: str, values: Iterable) -> SweepConfig:
        """A copy with field ``name`` set to ``values`` (unchecked: for tests and tools)."""
        return SweepConfig(grid={**self.grid, name: tuple(values)}, seeds=self.seeds)

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    def to_dict(self) -> dict:
        out = {k: list(v) if len(v) > 1 else v[0] for k, v in self.grid.items()}
        out.update(targets=list(self.targets), depths=list(self.depths),
                   methods=list(self.methods), seeds=list(self.seeds))
        return out


def _plain(value):
    """A FitConfig value as plain data (a Phase as a table)."""
    if hasattr(value, "optimizer"):
        return {"optimizer": value.optimizer, "steps": value.steps, "lr": value.lr}
    return tuple(value) if isinstance(value, list) else value


def load_config(path: Path | str) -> SweepConfig:
    """Read and validate a sweep TOML file; every problem is an InputError naming the value."""
    p, text = read_user_file(path, "sweep config", MAX_CONFIG_BYTES)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"sweep config {str(p)!r} is not valid TOML: {err}") from None
    return parse_config(raw, source=str(p))


def parse_config(raw: dict, source: str = "sweep config") -> SweepConfig:
    """Validate a mapping (the parsed TOML) into a :class:`SweepConfig`.

    Every FitConfig field may be given under its own name; a list makes it an axis of the grid
    (``shape = ["convex", "dc"]``). ``targets``, ``depths`` and ``methods`` are the old spellings
    of the target, depth and method axes. ``seeds``: a count (0..N-1) or a list.
    """
    def bad(msg):
        return InputError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise bad("must be a table of keys")
    names = [f.name for f in fit_config.fields() if f.metadata.get("sweep", True)]
    allowed = [*PLURALS, *[n for n in names if n != "seeds"], "seeds"]
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            raise bad(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                      + f"; allowed: {', '.join(allowed)}")
    for plural, name in PLURALS.items():
        if plural in raw and name in raw:
            raise bad(f"give {plural} or {name}, not both")
    if "targets" not in raw and "target" not in raw:
        raise bad("missing key 'targets'")
    if "seeds" not in raw:
        raise bad("missing key 'seeds'")
    grid = {}
    for key, value in raw.items():
        if key == "seeds":
            continue
        name = PLURALS.get(key, key)
        try:
            grid[name] = _axis(name, value, plural=key in PLURALS)
        except InputError as err:
            raise bad(str(err)) from None
    cfg = SweepConfig(grid=grid, seeds=_seeds(raw["seeds"], bad))
    if len(cfg) > MAX_CELLS:
        raise bad(f"the grid has {len(cfg)} cells; at most {MAX_CELLS} allowed")
    _check_points(cfg, bad)
    return cfg


def _axis(name, value, plural) -> tuple:
    """The values of one key: a list is an axis (for interval: a list of [lo, hi] pairs)."""
    is_axis = isinstance(value, list) and (
        plural or name not in LIST_VALUED or (value and isinstance(value[0], list)))
    if plural and not isinstance(value, list):
        raise InputError(f"{name}s must be a list, got {show(value)}")
    values = value if is_axis else [value]
    if not values:
        raise InputError(f"{name}s is empty; give at least one" if plural
                         else f"{name} is an empty list; give at least one value")
    out = []
    for v in values:
        if name in ("phase1", "phase2"):
            ph = fit_config.parse_phase(v, name)
            v = {"optimizer": ph.optimizer, "steps": ph.steps, "lr": ph.lr}
        elif name == "target":
            v = _target_text(v)
        elif name in LIST_VALUED and isinstance(v, list):
            v = tuple(float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
                      for x in v)
        # width != 4 is for the baselines; every other field is checked on the default method
        base = fit_config.FitConfig(depth=fit_config.MAX_DEPTH)
        _check_value(base.replace(method="kaiming") if name == "width" else base, name, v)
        out.append(v)
    for v in out:
        if out.count(v) > 1:
            raise InputError(f"{name}s lists {show(v)} twice")
    return tuple(out)


def _target_text(v):
    if not isinstance(v, str):
        raise InputError(f"target entry {show(v)} is not target expressions (strings)")
    f = targets.parse_target(v)
    return f.text


def _check_value(base, name, value) -> None:
    """One value through FitConfig's own checks (only the field's own rule can fail here)."""
    if name in ("target", "phase1", "phase2"):
        return
    if name in ("points", "sparse") and value is not None:
        base = base.replace(points=None, sparse=None)
    base.replace(**{name: value}).validate()


def _seeds(seeds, bad) -> tuple:
    if is_int(seeds):
        if not 1 <= seeds <= MAX_SEEDS:
            raise bad(f"seeds count {seeds} is not allowed; need 1 <= seeds <= {MAX_SEEDS} "
                      "(or a list of seeds)")
        return tuple(range(seeds))
    if not isinstance(seeds, list):
        raise bad(f"seeds must be a count or a list of whole numbers, got {show(seeds)}")
    if not seeds:
        raise bad("seeds is empty; give at least one")
    for s in seeds:
        if not is_int(s):
            raise bad(f"seeds entry {show(s)} is not whole numbers")
        if not 0 <= s <= MAX_SEED:
            raise bad(f"seed {s} is not allowed; need 0 <= seed <= {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise bad(f"seeds lists {next(x for x in seeds if seeds.count(x) > 1)} twice")
    return tuple(seeds)


def _check_points(cfg, bad) -> None:
    """Every grid point's settings together (e.g. points and sparse, not both) and its data (a
    target not finite on the interval is refused now, not in every cell)."""
    seen = set()
    for point in cfg.points_of_grid():
        try:
            config = fit_config.FitConfig.from_dict(point).validate()
            if config.target is not None and dims_of(config.target) != 1:
                raise InputError(f"target {config.target!r} is 2D; sweeps take 1D targets (train "
                                 "one 2D target with `relu-regions train`)")
            key = (config.target, config.interval, config.points, config.sparse)
            if key not in seen:
                seen.add(key)
                make_dataset(config)
        except InputError as err:
            raise bad(str(err)) from None


def dims_of(target: str) -> int:
    return targets.parse_target(target).dims


def show(value: object) -> str:
    """A value for a message, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
