"""What a net computes: exact linear-region counting (``regions``) and the optimal free-knot
piecewise-linear limits to compare against (``limits``)."""
