"""What a net computes: exact linear-region counting along a line (``regions``) and on a plane
(``plane``), and the optimal free-knot piecewise-linear limits to compare against (``limits``)."""
