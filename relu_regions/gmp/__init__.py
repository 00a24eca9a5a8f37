"""The second paper's world: geometric parameterization (GmP) layers and IMN (``layers``),
characteristic activation boundaries and stability (``cab``), the Levy and Banana studies
(``studies``) and their figures (``plots``). Nothing here depends on the construction.

``relu_regions.gmp.X`` keeps giving the layer API (``GmPLinear``, ``to_gmp``, ...).
"""

from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers_all

__all__ = list(_layers_all)
