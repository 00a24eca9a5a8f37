"""Beyond convex 1D: difference-of-constructions targets and 2D surfaces, against Kaiming nets.

    python experiments/beyond_convex.py [--seeds 10] [--depth 5] [--depth2d 4] [--grid 31]
                                        [--figures docs/figures] [--json]

1D (dense, 500 points): x^3 - x on [-1, 1], sin(x) on [0, 2 pi], sin(3x) on [0, 2 pi] (five
inflection points), each as a "dc" layout (convex minus convex construction, width 4 each, so a
width-8 net of --depth hidden layers), trained by the two-phase methods, by "skip", and by
Kaiming on the same width-8 net. The limit column is the optimal continuous piecewise-linear fit
with as many pieces as the two constructions can have together (2 (2^d - 1) + 1).

2D (a --grid x --grid grid on [-1, 1]^2): z = r^3 as a "radial" composition (constructions along
the quadratic's axes, summed, then one more construction; --depth2d layers each), and
x^2 + y^2 + xy as a "ridge" sum; Kaiming trains the same net (equal parameter count). Linear
pieces are counted exactly along four lines through the square (the two axes' midlines and the
two diagonals) with the segment counter.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from relu_regions import targets
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.plots import evaluate, plot_fit, plot_surface
from relu_regions.training.fitting import fit

TARGETS_1D = [("x**3 - x", (-1.0, 1.0)), ("sin(x)", (0.0, 2 * np.pi)),
              ("sin(3*x)", (0.0, 2 * np.pi))]
METHODS_1D = ("pretrain-thm31", "pretrain", "skip", "kaiming")
TARGETS_2D = [("r**3", "radial"), ("x**2 + y**2 + x*y", "ridge")]
METHODS_2D = ("pretrain-thm31", "kaiming")
LINES = {"y = 0": ([-1, 0], [1, 0]), "x = 0": ([0, -1], [0, 1]),
         "diagonal": ([-1, -1], [1, 1]), "anti-diagonal": ([-1, 1], [1, -1])}


def lines_pieces(model) -> dict:
    return {name: count_regions_segment(model, a, b).linear_pieces
            for name, (a, b) in LINES.items()}


def row(result, data, extra=None) -> dict:
    max_err = np.array([np.abs(evaluate(m, data.x) - data.y).max() for m in result.models])
    out = {"target": result.target, "method": result.method, "shape": result.shape,
           "widths": result.widths, "params": sum(p.numel() for p in result.models[0].parameters()),
           "mse": result.mse.tolist(), "mse_mean": float(result.mse.mean()),
           "mse_min": float(result.mse.min()), "mse_median": float(np.median(result.mse)),
           "max_error_mean": float(max_err.mean()), "pieces_mean": float(result.pieces.mean()),
           "optimal_mse": result.optimal_mse, "optimal_pieces": result.optimal_pieces,
           "seconds": round(result.seconds, 1)}
    return {**out, **(extra or {})}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--depth", type=int, default=5, help="1D: hidden layers per construction")
    ap.add_argument("--depth2d", type=int, default=4, help="2D: hidden layers per construction")
    ap.add_argument("--grid", type=int, default=31, help="2D: points per axis")
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.figures.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    say = (lambda *a, **k: None) if args.json else print
    say("| target | method | shape | params | mean MSE | min MSE | median MSE | mean max error "
        "| pieces | limit (pieces) | s |")
    say("|---|---|---|---|---|---|---|---|---|---|---|")

    def show(r):
        limit = (f"{r['optimal_mse']:.2e} ({r['optimal_pieces']})" if r["optimal_mse"] else "-")
        say(f"| {r['target']} | {r['method']} | {r['shape']} | {r['params']} | {r['mse_mean']:.2e} "
            f"| {r['mse_min']:.2e} | {r['mse_median']:.2e} | {r['max_error_mean']:.2e} "
            f"| {r['pieces_mean']:.1f} | {limit} | {r['seconds']} |", flush=True)

    for target, interval in TARGETS_1D:
        data = targets.dense(target, interval, 500)
        for method in METHODS_1D:
            res = fit(data=data, target=target, depth=args.depth, seeds=args.seeds,
                      method=method, shape="dc")
            rows.append(row(res, data))
            show(rows[-1])
            if method == "pretrain-thm31":
                best = int(np.argmin(res.mse))
                name = target.replace("*", "").replace(" ", "").replace("(", "_").replace(")", "")
                plot_fit(res.models[best], data, args.figures / f"dc_{name}.png",
                         title=f"{target}: dc, depth {args.depth}, MSE {res.mse[best]:.2e}")
    for target, shape in TARGETS_2D:
        data = targets.dense(target, (-1, 1), args.grid)
        for method in METHODS_2D:
            # count=False: pieces are counted here along four lines (the diagonal among them)
            res = fit(data=data, target=target, depth=args.depth2d, seeds=args.seeds,
                      method=method, shape=shape, count=False)
            pieces = [lines_pieces(m) for m in res.models]
            mean_lines = {k: float(np.mean([p[k] for p in pieces])) for k in LINES}
            rows.append(row(res, data, {"pieces_along_lines": mean_lines}))
            rows[-1]["pieces_mean"] = float(np.mean(list(mean_lines.values())))
            show(rows[-1])
            if method == "pretrain-thm31":
                best = int(np.argmin(res.mse))
                name = "r3" if target == "r**3" else "bowl"
                plot_surface(res.models[best], data, args.figures / f"surface_{name}.png",
                             title=f"{target}: {shape}, depth {args.depth2d} per construction, "
                                   f"MSE {res.mse[best]:.2e}")
    say("")
    for target in [t for t, _ in TARGETS_1D] + [t for t, _ in TARGETS_2D]:
        ours = next(r for r in rows if r["target"] == target and r["method"] == "pretrain-thm31")
        base = next(r for r in rows if r["target"] == target and r["method"] == "kaiming")
        say(f"{target}: Kaiming mean MSE / pretrain-thm31 mean MSE = "
            f"{base['mse_mean'] / ours['mse_mean']:.0f}x")
    total = time.perf_counter() - start
    say(f"total {total:.0f} s")
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(total, 1)}, indent=2))


if __name__ == "__main__":
    main()
