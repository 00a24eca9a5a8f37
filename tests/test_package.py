"""The package's top-level API: the issue's ``relu_regions.fit(...)`` and friends, loaded lazily."""

import subprocess
import sys

import numpy as np
import pytest

import relu_regions


@pytest.mark.parametrize("name", relu_regions._EXPORTS)
def test_every_export_is_the_module_attribute(name):
    import importlib

    module = importlib.import_module(f"relu_regions.{relu_regions._EXPORTS[name]}")
    assert getattr(relu_regions, name) is getattr(module, name)
    assert name in relu_regions.__all__ and name in dir(relu_regions)


def test_fit_from_the_package_trains():
    r = relu_regions.fit("x**2", depth=2, seeds=2, phase1=relu_regions.Phase("lm", 5, 1.0),
                         phase2=relu_regions.Phase("lm", 5, 1.0), starts=1, optimum=False)
    # the best line has MSE 1/180 ~ 5.6e-3 on x^2; four pieces or more do far better
    assert r.mse.shape == (2,) and np.all(r.mse < 1e-4) and np.all(r.pieces >= 4)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = relu_regions.nope


def test_importing_the_package_does_not_load_torch():
    code = "import sys, relu_regions; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_importing_the_package_installs_no_import_hook():
    """No finder or loader of ours on sys.meta_path / sys.path_hooks: importing has no side
    effects on the import system."""
    code = ("import sys; before = list(sys.meta_path) + list(sys.path_hooks); import relu_regions; "
            "after = list(sys.meta_path) + list(sys.path_hooks); "
            "print([repr(f) for f in after if f not in before])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("old", ["train", "regions", "limits", "construction", "cab"])
def test_the_old_flat_module_paths_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        __import__(f"relu_regions.{old}")


def test_gmp_package_keeps_the_layer_api():
    import relu_regions.gmp as gmp
    from relu_regions.gmp import layers

    for name in ("GmPLinear", "GmPConv2d", "to_gmp", "from_gmp"):
        assert getattr(gmp, name) is getattr(layers, name)


def test_importing_plots_leaves_the_matplotlib_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import relu_regions.plots, "
            "relu_regions.gmp.plots; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_the_architecture_map_names_every_module():
    """docs/architecture.md is the map: a module missing from it (or a stale row) fails here."""
    from pathlib import Path

    root = Path(relu_regions.__file__).parent
    text = (root.parent / "docs" / "architecture.md").read_text()
    modules = {str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "__init__.py"}
    rows = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}
    assert modules <= rows, f"not in docs/architecture.md: {sorted(modules - rows)}"
    assert {r for r in rows if r.endswith(".py")} <= modules, "rows for modules that do not exist"


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "relu_regions", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"relu-regions {relu_regions.__version__}"
