"""Names the nets share with the torch-free config and CLI: the composite layouts' shapes and
the range random peaks are drawn from. Imports nothing, so ``--help`` loads no torch."""

SHAPES_1D = ("convex", "concave", "dc")  # layouts of one input
SHAPES_ND = ("ridge", "radial")  # layouts of two inputs
SHAPES = ("auto", *SHAPES_1D, *SHAPES_ND)  # "auto": chosen from the data
PEAK_RANGE = (0.25, 0.75)  # random peaks are uniform on this interval
