"""relu-regions: deep, narrow ReLU networks that really use their depth.

The main entry points are importable from the package (``relu_regions.fit(...)``), loaded on
first use so that ``import relu_regions`` (and the CLI's ``--help``) stays fast.
"""

import importlib as _importlib

from .errors import InputError

__version__ = "0.2.0"

# name -> module that defines it (PEP 562 lazy attributes)
_EXPORTS = {
    "fit": "training.fitting", "Phase": "training.config", "FitConfig": "training.config",
    "FitResult": "training.result", "load_run": "training.result",
    "load_train_state": "training.stages",
    "ConstructionNet": "nets.parametrize",
    "count_regions": "analysis.regions", "count_regions_segment": "analysis.regions",
    "sample_regions": "analysis.sampling", "sample_regions_segment": "analysis.sampling",
    "pieces_table": "analysis.pieces", "lower": "nets.reader",
    "count_regions_2d": "analysis.plane", "count_regions_plane": "analysis.plane",
    "local_complexity": "analysis.local", "sampled_local_complexity": "analysis.local",
    "optimal_pwl": "analysis.limits", "efficiency": "analysis.limits",
    "GmPLinear": "gmp.layers", "to_gmp": "gmp.layers", "from_gmp": "gmp.layers",
    "characteristic_activation": "gmp.cab",
    "RegionTracker": "analysis.tracking", "log_steps": "analysis.tracking",
}

__all__ = ["InputError", *_EXPORTS]
# submodules, imported on first attribute access (relu_regions.targets.from_csv(...))
_SUBMODULES = {"analysis", "atomic", "checkpoint", "cli", "demo", "errors", "gmp", "nets",
               "plots", "sweep", "targets", "training", "validation"}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    # the public names and the module's dunders: not the helpers or submodules imported here
    dunders = {n for n in globals() if n.startswith("__") and n.endswith("__")}
    return sorted(dunders | set(__all__) | _SUBMODULES)
