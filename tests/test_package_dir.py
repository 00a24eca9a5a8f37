"""dir(relu_regions) is the public API: the exported names, the subpackages and modules a user
reaches as attributes (imported on first access), and the module's dunders."""

import subprocess
import sys

import relu_regions


def test_dir_lists_the_public_names_submodules_and_dunders_only():
    names = dir(relu_regions)
    assert names == sorted(names) and set(relu_regions.__all__) <= set(names)
    extra = [n for n in names if n not in relu_regions.__all__]
    dunders = [n for n in extra if n.startswith("__") and n.endswith("__")]
    assert {"__version__", "__doc__"} <= set(dunders)
    assert set(extra) - set(dunders) == {"analysis", "atomic", "checkpoint", "cli", "demo",
                                         "errors", "gmp", "nets", "plots", "sweep", "targets",
                                         "training", "validation"}


def test_submodules_load_on_first_attribute_access():
    """`relu_regions.targets.from_csv` works in a fresh interpreter (the README's spelling)."""
    code = ("import sys, relu_regions; print('relu_regions.targets' in sys.modules); "
            "f = relu_regions.targets.from_csv; print('relu_regions.targets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_the_package_does_not_expose_importlib():
    assert not hasattr(relu_regions, "importlib")
