"""Old flat module paths (``relu_regions.train``, ``relu_regions.regions``, ...) as aliases.

The package was split into folders (see docs/architecture.md). For one release the old paths
import the very module object of the new home, so attribute access and monkeypatching behave
exactly as before; nothing is copied.
"""

import importlib
import importlib.abc
import importlib.util
import sys

OLD_PATHS = {
    "construction": "nets.construction", "parametrize": "nets.parametrize", "mlp": "nets.mlp",
    "composite": "nets.composite", "blockdiag": "nets.blockdiag",
    "regions": "analysis.regions", "limits": "analysis.limits",
    "train": "training.trainer",
    "cab": "gmp.cab", "gmp_studies": "gmp.studies", "gmp_plots": "gmp.plots",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, leaf = fullname.rpartition(".")
        if package == __package__ and leaf in OLD_PATHS:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        # The import system returns whatever sys.modules holds after exec_module.
        leaf = module.__name__.rpartition(".")[2]
        sys.modules[module.__name__] = importlib.import_module(f"{__package__}.{OLD_PATHS[leaf]}")


def install():
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
