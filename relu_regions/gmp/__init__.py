"""The second paper's world: geometric parameterization (GmP) layers and IMN (``layers``),
characteristic activation boundaries and stability (``cab``), the Levy and Banana studies
(``studies``) and their figures (``plots``). Nothing here depends on the construction.

``relu_regions.gmp.X`` keeps giving the layer API (``GmPLinear``, ``to_gmp``, ...).
"""

from .layers import (
    GmPConv2d,
    GmPLinear,
    GmPLinearReLU,
    InputMeanNorm,
    angles_from_direction,
    direction_from_angles,
    from_gmp,
    from_hyperspherical,
    to_gmp,
    to_hyperspherical,
)

__all__ = [
    "angles_from_direction",
    "direction_from_angles",
    "to_hyperspherical",
    "from_hyperspherical",
    "GmPLinear",
    "GmPLinearReLU",
    "GmPConv2d",
    "InputMeanNorm",
    "to_gmp",
    "from_gmp",
]
