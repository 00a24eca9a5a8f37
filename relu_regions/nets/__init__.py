"""The networks: the width-4 construction and its derived parameters (``construction``), the
parametrized net and ``release()`` (``parametrize``), plain MLPs and their inits (``mlp``),
composite layouts for non-convex and 2D targets (``composite``), block-diagonal layers
(``blockdiag``), fixed-weight x^3 nets through squares (``yarotsky``)."""
