"""relu-regions: deep, narrow ReLU networks that really use their depth.

The main entry points are importable from the package (``relu_regions.fit(...)``), loaded on
first use so that ``import relu_regions`` (and the CLI's ``--help``) stays fast.
"""

import importlib

from .errors import InputError

__version__ = "0.1.0"

# name -> module that defines it (PEP 562 lazy attributes)
_EXPORTS = {
    "fit": "train", "Phase": "train", "FitResult": "train", "load_train_state": "train",
    "ConstructionNet": "parametrize",
    "count_regions": "regions", "count_regions_segment": "regions", "sample_regions": "regions",
    "optimal_pwl": "limits", "efficiency": "limits",
    "GmPLinear": "gmp", "to_gmp": "gmp", "from_gmp": "gmp",
    "characteristic_activation": "cab",
}

__all__ = ["InputError", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
