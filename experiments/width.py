"""Which width makes the error of x^3 fall by a constant factor per layer, and from which depth
does it beat a shallow fit of the same size (docs/training.md, "The width question")?

    python experiments/width.py [--depths 6 ... 24] [--families w5 w5diff w4] [--refit-top 3]
                                [--max-level 16] [--polish 13 14 15] [--polish-steps 400]
                                [--polish-points N] [--polish-families w5 w4]
                                [--json out.json] [--out docs/figures/width.png]

Three fixed-weight nets of ``relu_regions.nets.yarotsky`` (Yarotsky 2017, arXiv:1610.01145,
Propositions 2-3: squares by sawtooth layers, products through squares), at every depth d with
every split of d into their stages (``--max-level`` caps the levels of one stage: a stage of m
levels has ~2^m pieces):

* ``w5``     ``cube_net(m1, m2)``: width 5, x^3 ~ 2 f(A) - S/2 - f(S)/2, S = f_m1(x) ~ x^2.
* ``w5diff`` ``cube_net_diff(m1, m2)``: width 5, x^3 ~ x S = f(A) - f(E)/64 (difference of squares).
* ``w4``     ``cube_net4(m1, m2, m3)``: width 4, the same two squares one after the other.

Each is also shown after ``refit_accumulator`` (every weight into the accumulator unit and the
output row refit by least squares in L2, exact on the net's pieces), for the ``--refit-top``
splits with the lowest fixed-weight error. Errors are (1/L) integral (x^3 - net)^2 over [0, 1]
on the net's own pieces (``analysis.limits.net_l2_mse``). P = w + w + (d - 1)(w^2 + w) + w + 1
parameters; the parameter-matched optimum is the best continuous PL fit with floor(P / 2) free
pieces, in the same integral sense (``limits.continuous_optimal_pwl``, ``limits.matched_pieces``).
"Per layer" is the geometric mean of the error's fall per added layer over the depths run.

``--polish D ...`` runs LM on all raw weights from the best refit net of each
``--polish-families`` family (default w5) at depth D (``--polish-points`` evenly spaced
points, default max(4096, 4 * 2^D); ``--polish-steps`` steps) and reports the exact error
before and after. The script ends with one line per question.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from relu_regions.analysis.limits import continuous_optimal_pwl, matched_pieces, net_l2_mse
from relu_regions.analysis.refit import refit_accumulator
from relu_regions.atomic import atomic_write, atomic_write_text
from relu_regions.nets.yarotsky import cube_net, cube_net4, cube_net_diff


def f(x):
    return x**3


def params(depth: int, width: int) -> int:
    """Weights and biases of a 1 -> width^depth -> 1 net."""
    return 2 * width + (depth - 1) * width * (width + 1) + width + 1


def splits(depth: int, parts: int, max_level: int):
    """All (m1, ..., m_parts) >= 1 summing to depth, each at most max_level."""
    if parts == 1:
        return [(depth,)] if 1 <= depth <= max_level else []
    return [(m,) + rest for m in range(1, min(depth - parts + 1, max_level) + 1)
            for rest in splits(depth - m, parts - 1, max_level)]


# name: (width, builder, stages, accumulator unit)
FAMILIES = {"w5": (5, cube_net, 2, 4), "w5diff": (5, cube_net_diff, 2, 4),
            "w4": (4, cube_net4, 3, 2)}


def family_row(name, depth, max_level, refit_top):
    width, build, parts, unit = FAMILIES[name]
    scored = []
    for split in splits(depth, parts, max_level):
        mse, pieces = net_l2_mse(build(*split), f)
        scored.append((mse, split, pieces))
    scored.sort()
    best = scored[0]
    refits = []
    for _mse, split, _ in scored[:refit_top]:
        # order 4: (x^3 - net)^2 has degree 6 on every piece, so 4 Gauss points are exact
        r = refit_accumulator(build(*split), f, unit=unit, first=split[0], order=4)
        refits.append((r.mse_after, split, r))
    refits.sort(key=lambda t: t[0])
    return {"family": name, "width": width, "depth": depth, "P": params(depth, width),
            "split": list(best[1]), "mse": best[0], "pieces": best[2],
            "refit_split": list(refits[0][1]), "refit_mse": refits[0][0],
            "splits_tried": len(scored)}, refits[0][2].net


def per_layer(rows, key):
    """Geometric mean of the error's fall per added layer from the first to the last row."""
    a, b = rows[0], rows[-1]
    return (a[key] / b[key]) ** (1.0 / (b["depth"] - a["depth"]))


def first_below(rows, key):
    for r in rows:
        if r[key] < r["matched"]:
            return r
    return None


def polish(net, depth, steps, points=None):
    """LM on all raw weights of ``net`` (one row) on ``points`` (default max(4096, 4 * 2^depth))
    evenly spaced points."""
    from relu_regions.training.config import Phase
    from relu_regions.training.fitting import RawNet
    from relu_regions.training.functional import flatten_layers, shapes_of, to_module
    from relu_regions.training.stages import optimize

    widths = [1] + [lin.out_features for lin in net[::2]]
    shapes = shapes_of(widths)
    theta = flatten_layers([(lin.weight.detach()[None], lin.bias.detach()[None])
                            for lin in net[::2]])
    n = points or max(4096, 4 * 2**depth)
    x = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    raw = RawNet(shapes, x)
    start = time.perf_counter()
    theta = optimize(raw.predict, raw.jacobian, theta, f(x)[None], Phase("lm", steps, 1e-3), [])
    seconds = time.perf_counter() - start
    return to_module(theta[0], shapes, widths), n, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=list(range(6, 25)))
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--refit-top", type=int, default=3)
    ap.add_argument("--max-level", type=int, default=16)
    ap.add_argument("--polish", type=int, nargs="*", default=[])
    ap.add_argument("--polish-steps", type=int, default=400)
    ap.add_argument("--polish-points", type=int, default=None,
                    help="LM points (default max(4096, 4 * 2^depth))")
    ap.add_argument("--polish-families", nargs="+", default=["w5"], choices=list(FAMILIES))
    ap.add_argument("--out", default="docs/figures/width.png")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    matched = {}
    rows, best_nets = [], {}
    print("| family | width | depth | P | optimum P/2 pieces | split | exact MSE | pieces | "
          "/ optimum | refit split | refit MSE | / optimum |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.families:
        for d in sorted(args.depths):
            row, net = family_row(name, d, args.max_level, args.refit_top)
            P = row["P"]
            if P not in matched:
                matched[P] = continuous_optimal_pwl(f, matched_pieces(P)).mse
            row["matched"] = matched[P]
            rows.append(row)
            best_nets[(name, d)] = net
            print(f"| {name} | {row['width']} | {d} | {P} | {row['matched']:.2e} | "
                  f"{'+'.join(map(str, row['split']))} | {row['mse']:.2e} | {row['pieces']} | "
                  f"{row['mse'] / row['matched']:.3g} | {'+'.join(map(str, row['refit_split']))} | "
                  f"{row['refit_mse']:.2e} | {row['refit_mse'] / row['matched']:.3g} |", flush=True)
    polished = []
    for name, d in ((name, d) for name in args.polish_families for d in args.polish):
        if (name, d) not in best_nets:
            continue
        net = best_nets[(name, d)]
        before = net_l2_mse(net, f)[0]
        out, n, seconds = polish(net, d, args.polish_steps, args.polish_points)
        after, pieces = net_l2_mse(out, f)
        P = params(d, FAMILIES[name][0])
        polished.append({"family": name, "depth": d, "points": n, "steps": args.polish_steps,
                         "before": before, "after": after, "pieces": pieces,
                         "matched": matched[P], "seconds": seconds})
        print(f"polish {name} depth {d}: refit {before:.3e} -> LM {args.polish_steps} steps on {n} "
              f"points {after:.3e} ({pieces} pieces, {seconds:.0f} s); optimum P/2 "
              f"{matched[P]:.3e}, ratio {after / matched[P]:.3g}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")

    goals = []
    for name in args.families:
        fam = [r for r in rows if r["family"] == name]
        if len(fam) < 2:
            continue
        width = fam[0]["width"]
        for key, label in (("mse", "fixed weights"), ("refit_mse", "refit")):
            factor = per_layer(fam, key)
            hit = first_below(fam, key)
            where = (f"first below the parameter-matched optimum at depth {hit['depth']} "
                     f"({hit[key]:.2e} vs {hit['matched']:.2e}, {hit['matched'] / hit[key]:.2f}x "
                     f"below)" if hit else "never below the parameter-matched optimum in "
                     f"depths {fam[0]['depth']}-{fam[-1]['depth']}")
            goals.append(f"{name} (width {width}, {label}): error falls {factor:.2f}x per added "
                         f"layer (depths {fam[0]['depth']}-{fam[-1]['depth']}); {where}")
    for p in polished:
        below = p["after"] < p["matched"]
        goals.append(f"{p['family']} refit + LM at depth {p['depth']}: {p['after']:.2e}, "
                     f"{'below' if below else 'above'} the parameter-matched optimum "
                     f"{p['matched']:.2e} (net / optimum {p['after'] / p['matched']:.3g})")
    print()
    for line in goals:
        print("goal:", line)

    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"rows": rows, "polish": polished,
                                                       "goals": goals}, indent=1))
    if args.out:
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        colors = {"w5": "C0", "w5diff": "C1", "w4": "C2"}
        for name in args.families:
            fam = [r for r in rows if r["family"] == name]
            ds = [r["depth"] for r in fam]
            ax.semilogy(ds, [r["mse"] for r in fam], ":", color=colors[name], marker=".",
                        label=f"{name} fixed")
            ax.semilogy(ds, [r["refit_mse"] for r in fam], "-", color=colors[name], marker="o",
                        ms=3, label=f"{name} refit")
        drawn = set()
        for name in args.families:  # one optimum line per width
            fam = [r for r in rows if r["family"] == name]
            width = fam[0]["width"]
            if width not in drawn:
                drawn.add(width)
                ax.semilogy([r["depth"] for r in fam], [r["matched"] for r in fam], "--",
                            color="k" if width == 5 else "C2", alpha=0.5,
                            label=f"optimum P/2 pieces (width {width})")
        ax.set_xlabel("depth")
        ax.set_ylabel("(1/L) integral (x^3 - net)^2")
        ax.set_title("x^3: fixed-weight constructions against the parameter-matched optimum")
        ax.legend(fontsize=7)
        fig.tight_layout()
        atomic_write(Path(args.out), lambda fh: fig.savefig(fh, format="png", dpi=110))


if __name__ == "__main__":
    main()
