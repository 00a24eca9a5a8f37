"""Optimal free-knot PL fits of x^3 and x^11 with 2^d pieces, next to the asymptotic formula.

    python experiments/limits_table.py [--points 500]

docs/limits.md. Columns: the fitted optimum (mse), whether it equals the exact
discontinuous lower bound (certified), the large-n formula, and the wall time of optimal_pwl.
"""

import argparse
import time

import numpy as np

from relu_regions.analysis.limits import asymptotic_mse, optimal_pwl

TARGETS = {  # name: (f, f'')
    "x^3": (lambda x: x**3, lambda x: 6 * x),
    "x^11": (lambda x: x**11, lambda x: 110 * x**9),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--dmax", type=int, default=10)
    args = parser.parse_args()
    x = np.linspace(0.0, 1.0, args.points)
    print(f"{args.points} evenly spaced points on [0, 1]; mse = mean squared residual")
    header = f"{'d':>2} {'pieces':>6} {'used':>4}"
    for name in TARGETS:
        header += f" | {name + ' optimum':>13} {'cert':>4} {'asymptotic':>10} {'time s':>6}"
    print(header)
    print("-" * len(header))
    for d in range(2, args.dmax + 1):
        n = 2**d
        row = ""
        for f, f2 in TARGETS.values():
            start = time.perf_counter()
            fit = optimal_pwl(x, f(x), n)
            seconds = time.perf_counter() - start
            cert = "yes" if fit.note.startswith(("certified", "pieces >=")) else "no"
            row += (f" | {fit.mse:13.4e} {cert:>4} {asymptotic_mse(f2, (0.0, 1.0), n):10.3e}"
                    f" {seconds:6.2f}")
        print(f"{d:>2} {n:>6} {fit.pieces_used:>4}" + row)


if __name__ == "__main__":
    main()
