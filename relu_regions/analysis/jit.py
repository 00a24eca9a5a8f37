"""numba's ``njit`` for the counters, with their compiled kernels cached in the user's cache
directory rather than inside the installed package.

The first count in a fresh environment compiles the kernels (seconds, once); later processes
load them from ``$XDG_CACHE_HOME/relu-regions/numba`` (default ``~/.cache/relu-regions/numba``),
one folder per installed copy of the package.
``NUMBA_CACHE_DIR``, when set, is numba's own choice and is left alone. Only this package's
kernels are redirected: a user's own ``@njit(cache=True)`` functions keep numba's defaults.
The redirection is installed when this module is first imported, i.e. when a counter is first
loaded, not at ``import relu_regions``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

from numba import njit
from numba.core import caching, config

PACKAGE = Path(__file__).resolve().parents[1]
# One folder per installed copy: two checkouts' kernels share names and line numbers, and would
# otherwise overwrite each other's cache on every switch.
COPY = hashlib.sha256(str(PACKAGE).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where this package's compiled kernels are cached."""
    if config.CACHE_DIR:
        return Path(config.CACHE_DIR)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "relu-regions" / "numba"


def is_cached(module: ModuleType) -> bool:
    """Whether ``module``'s kernels were compiled before (so its first call loads, not
    compiles)."""
    source = Path(module.__file__).resolve()
    folder = (Path(config.CACHE_DIR) / caching._CacheLocator.get_suitable_cache_subpath(
        str(source)) if config.CACHE_DIR else _Locator.folder(source))
    return any(folder.glob(f"{source.stem}.*.nbi"))


class _Locator(caching.UserProvidedCacheLocator):
    """numba's locator for a user-given folder, for this package's files only."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = str(self.folder(Path(py_file)))

    @staticmethod
    def folder(source: Path) -> Path:
        return cache_dir() / COPY / source.resolve().relative_to(PACKAGE).parent

    @classmethod
    def from_function(cls, py_func, py_file):
        if config.CACHE_DIR or not Path(py_file).resolve().is_relative_to(PACKAGE):
            return None  # the user chose a folder for everything, or not our kernel
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:  # not writable: numba's next locator (beside the source) is tried
            return None
        return self


if _Locator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _Locator)

__all__ = ["njit", "cache_dir", "is_cached"]
