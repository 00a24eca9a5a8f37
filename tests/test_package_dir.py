"""dir(relu_regions) is the public API: the exported names and the module's dunders."""

import importlib

import relu_regions


def test_dir_lists_the_public_names_and_dunders_only():
    # a loaded submodule is an attribute of the package, and stays unlisted
    importlib.import_module("relu_regions.nets.parametrize")
    assert "nets" in vars(relu_regions)
    names = dir(relu_regions)
    assert names == sorted(names) and set(relu_regions.__all__) <= set(names)
    extra = [n for n in names if n not in relu_regions.__all__]
    assert extra and all(n.startswith("__") and n.endswith("__") for n in extra), extra
    assert {"__version__", "__doc__"} <= set(extra)


def test_the_package_does_not_expose_importlib():
    assert not hasattr(relu_regions, "importlib")
