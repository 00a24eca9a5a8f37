"""Depth benchmark that can see depth: the error of trained nets, measured exactly, against depth,
beside the 2^d-piece optimum and the parameter-matched optimum (docs/training.md, "Depth that
pays"), over lists of targets, point counts and the two ways of giving data.

    python experiments/depth.py [--targets 'x**3' ...] [--depths 4 5 ... 12] [--seeds 10]
                                [--first-seed 0] [--points N|default ...] [--forms expr data]
                                [--width 4] [--methods default direct grow5 grow6 kaiming]
                                [--out docs/figures/depth.png] [--json FILE]

Rows: every target x form x point count x depth x method, all seeds of a row trained as one
batch. ``--points`` takes counts of evenly spaced points on [0, 1] and the word ``default``
(fit's own count, the points left unset: max(500, 4 * 2^d)); without it each depth gets the
benchmark's max(4096, 4 * 2^d). A continuous PL function with n pieces can interpolate at most
about 2n samples of a convex function (2n numbers), so with at least 4 samples per *possible*
piece even a net that used all 2^d pieces could pass through at most half of them: the training
set cannot be interpolated, and the training MSE stays a fair proxy of the integral. ``--forms``:
``expr`` is ``fit(target, points=N)``, ``data`` is ``fit(data=(x, f(x)))`` on the same N points
(``targets.dense``, the grid fit makes for the expression).

Error: (1/L) integral over [0, 1] of (target - net)^2, computed exactly on the net's own linear
pieces (the exact counter's knots; Gauss-Legendre with 16 points per piece: exact to rounding
for polynomial targets of degree <= 15, ``analysis.limits.net_l2_mse``). Limits, in the same
integral sense (``limits.continuous_optimal_pwl``, free knots): the best fit with 2^d pieces
(what the net could reach if it placed its 2^d pieces freely), and the best fit with as many
numbers as the net has parameters P, i.e. floor(P / 2) pieces (``limits.matched_pieces``): below
that line depth buys something a shallow free-knot fit of the same size cannot. **Effective
pieces**: the N at which that free-knot optimum equals the row's mean error (the optimum inverted
by bisection on integer N, log-log interpolation between neighbours), i.e. how many free pieces
the trained net is worth.

Methods: ``default`` is ``fit(target, depth=d)`` with the library's defaults
(``training/auto.py``); ``direct`` forces training at depth d from the start (``grow_from=d``);
``grow5`` / ``grow6`` grow from depth 5 / 6 (``grow_from=5`` / ``6``; direct when shallower);
``kaiming`` is the random-init baseline, the one method that trains other widths (``--width``).
s/seed = the fit's wall time / seeds. The script ends with one line per goal of the depth
acceptance that the run's rows can judge (MET, NOT MET, or NOT JUDGED with what is missing),
and the time of depth 10 against depth 5 per seed where both are in the run.
"""

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from relu_regions.analysis.limits import continuous_optimal_pwl, matched_pieces, net_l2_mse
from relu_regions.atomic import atomic_write, atomic_write_text
from relu_regions.errors import InputError
from relu_regions.targets import dense, parse_target
from relu_regions.training.auto import auto_points
from relu_regions.training.fitting import fit

METHODS = {"default": lambda d: {}, "direct": lambda d: {"grow_from": d},
           "grow5": lambda d: {"grow_from": min(5, d)}, "grow6": lambda d: {"grow_from": min(6, d)},
           "kaiming": lambda d: {"method": "kaiming"}}
FORMS = ("expr", "data")
DEFAULT, BENCHMARK = "default", "benchmark"  # fit's own point count; max(4096, 4 * 2^d)

# The depth acceptance (width 4, library defaults, exact error; 10 seeds, and again on 10-19).
# 1. x^3 at depth 10 at each of these counts, as expression and as data: every mean at most
#    GOAL1_MEAN, the median of the means at most GOAL1_MEDIAN.
GOAL1_COUNTS = (2048, 3000, 4000, 4096, 4200, 6000, 8192)
GOAL1_MEAN, GOAL1_MEDIAN = 2.5e-10, 1.5e-10
# 2. Deeper is never worse: at depths 11 and 12, at these counts, the mean at most depth 10's at
#    the same count; depth 12 at most GOAL2_D12 (its parameter-matched optimum, 116 pieces).
GOAL2_DEPTHS = (11, 12)
GOAL2_COUNTS = (4096, 8192, DEFAULT)
GOAL2_D12 = 5.15e-11
# 4. Other shapes at depth 10: mean at most this factor times the parameter-matched optimum.
GOAL4_FACTORS = {"sqrt(x)": 3.0, "1/(1+x)": 3.0, "exp(2*x)/8": 3.0, "x**11": 10.0}
GOAL_TARGET = "x**3"
# Effective pieces above this are reported as inf (the optimum costs ~1 s there per N).
MAX_EFFECTIVE = 2**14


def training_points(depth: int) -> int:
    """max(4096, 4 * 2^depth): see the module docstring."""
    return max(4096, 4 * 2**depth)


def params(depth: int, width: int) -> int:
    """Weights and biases of a 1 -> width^depth -> 1 net."""
    return 2 * width + (depth - 1) * width * (width + 1) + width + 1


def points_token(text: str) -> int | str:
    """One ``--points`` entry: a count >= 2, or ``default`` (fit's own count)."""
    if text == DEFAULT:
        return DEFAULT
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 2:
        raise argparse.ArgumentTypeError(f"points must be a whole number >= 2 or 'default', "
                                         f"got {text!r}")
    return n


def resolve_points(asked: int | str, depth: int) -> int:
    """The training points a row uses: a count as given; ``default``: fit's own count at this
    depth (``auto.auto_points``); ``benchmark``: :func:`training_points`."""
    if asked == DEFAULT:
        return auto_points(depth)
    if asked == BENCHMARK:
        return training_points(depth)
    return int(asked)


def data_of(target: str, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, f(x)) on the ``points`` evenly spaced points of [0, 1] that ``fit(target,
    points=points)`` trains on (``targets.dense``, which fit's ``make_dataset`` calls)."""
    d = dense(target, (0.0, 1.0), points)
    return d.x, d.y


def fit_kwargs(target: str, form: str, asked: int | str, depth: int) -> dict:
    """The data part of a row's fit call: the expression with ``points`` (left unset for
    ``default``), or the data (x, f(x)) on the same points."""
    if form == "data":
        return {"data": data_of(target, resolve_points(asked, depth))}
    return {"target": target} if asked == DEFAULT else {
        "target": target, "points": resolve_points(asked, depth)}


@functools.cache
def optimum_mse(target: str, pieces: int) -> float:
    """``continuous_optimal_pwl(f, pieces).mse`` on [0, 1], cached per (target, pieces).

    Its start (the |f''|^(2/5) knots) smooths f'' over grid / (4 pieces) grid points at a cost
    of grid^2 / pieces, so few pieces get a coarser start grid (the same optimum; 2 pieces took
    9 s on the default grid). A LinAlgError (a singular mass matrix; continuous_optimal_pwl now
    steps back from the collapsed knots that gave it on sqrt(x)) is retried from a coarser
    grid; NaN if every try fails."""
    f = parse_target(target)
    grid = min(200_001, 4_000 * pieces + 1)
    for g in (grid, grid // 2 + 1, grid // 4 + 1):
        try:
            return float(continuous_optimal_pwl(f, pieces, grid=g).mse)
        except np.linalg.LinAlgError:
            continue
    return math.nan


def effective_pieces(error: float, optimum, most: int = MAX_EFFECTIVE) -> float:
    """The N at which ``optimum(N)`` (the free-knot optimum's error with N pieces, decreasing in
    N) equals ``error``: bisection on integer N for optimum(n) > error >= optimum(n + 1), then
    log N interpolated linearly in log error between n and n + 1. 1.0 when even one piece is
    as good; inf when ``most`` pieces are still worse; NaN for an error that is not positive."""
    if not (math.isfinite(error) and error > 0):
        return math.nan
    if optimum(1) <= error:
        return 1.0
    hi = 2
    while not optimum(hi) <= error:  # NaN counts as worse
        if hi >= most:
            return math.inf
        hi = min(2 * hi, most)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if optimum(mid) <= error:
            hi = mid
        else:
            lo = mid
    a, b = math.log(optimum(lo)), math.log(optimum(hi))
    t = (a - math.log(error)) / (a - b) if a > b else 1.0
    return math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))


@functools.cache
def _probe_values(target: str) -> np.ndarray:
    return np.asarray(parse_target(target)(np.linspace(0.0, 1.0, 257)), dtype=np.float64)


def same_target(a: str, b: str) -> bool:
    """Whether two expressions are the same function on [0, 1] (257 points, to rounding):
    'x**3' and 'x*x*x', 'exp(2*x)/8' and 'exp(2*x) / 8' all match."""
    return a == b or bool(np.allclose(_probe_values(a), _probe_values(b), rtol=1e-12,
                                      atol=1e-300))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", default=None, metavar="EXPR",
                    help="target expressions in x on [0, 1] (default: x**3)")
    ap.add_argument("--target", default=None, help="one target (the same as --targets EXPR)")
    ap.add_argument("--depths", type=int, nargs="+", default=list(range(4, 13)))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST + SEEDS - 1")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--methods", nargs="+", default=["default"], choices=sorted(METHODS))
    ap.add_argument("--points", type=points_token, nargs="+", default=[BENCHMARK],
                    metavar="N|default",
                    help="evenly spaced training points on [0, 1]; 'default' = fit's own count "
                         "(points left unset); default: max(4096, 4 * 2^depth) at each depth")
    ap.add_argument("--forms", nargs="+", default=["expr"], choices=FORMS,
                    help="expr: fit(target, points=N); data: fit(data=(x, f(x))) on the same "
                         "N points")
    ap.add_argument("--out", default="docs/figures/depth.png")
    ap.add_argument("--json", default=None, help="also write every row and the goals as JSON")
    args = ap.parse_args(argv)
    if args.target is not None and args.targets is not None:
        ap.error("give --targets or --target, not both")
    args.targets = args.targets or [args.target or GOAL_TARGET]
    try:
        for t in args.targets:
            if parse_target(t).dims != 1:
                raise InputError(f"target {t!r} is not a function of x alone; the depth "
                                 "benchmark fits 1D targets")
    except InputError as e:
        ap.error(str(e))
    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(f"width {args.width}, seeds {seeds[0]}-{seeds[-1]}; error = (1/L) integral (f - net)^2 "
          "on the net's exact pieces; eff N = free pieces with the same optimum error")
    print(f"{'target':>12s} {'form':>4s} {'points':>13s} {'depth':>5s} {'opt 2^d':>9s} {'P':>4s} "
          f"{'opt P/2':>9s} | {'method':14s} {'mean':>9s} {'median':>9s} {'min':>9s} "
          f"{'pieces':>7s} {'eff N':>7s} {'s/seed':>7s}")
    rows, done = [], {}
    for target in args.targets:
        f = parse_target(target)
        for form in args.forms:
            for asked in args.points:
                for d in args.depths:
                    n_points = resolve_points(asked, d)
                    p = params(d, args.width)
                    for m in args.methods:
                        # "default" at a depth whose own count is also asked: the same fit
                        key = (target, form, n_points, d, m)
                        if key not in done:
                            done[key] = _train(target, f, form, asked, d, m, seeds, args.width)
                        row = {"target": target, "form": form, "points_asked": asked,
                               "points": n_points, "depth": d, "method": m,
                               "width": args.width, "params": p, "seeds": seeds,
                               "opt_2d": optimum_mse(target, 2**d),
                               "opt_matched": optimum_mse(target, matched_pieces(p)),
                               "matched_pieces": matched_pieces(p), **done[key]}
                        row["effective_pieces"] = effective_pieces(
                            row["mean"], functools.partial(optimum_mse, target))
                        rows.append(row)
                        print(_line(row), flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    figure(rows, args)
    lines = goals(rows) + [f"figure: {args.out}"]
    if args.json:
        atomic_write_text(args.json, json.dumps({"args": vars(args), "rows": rows,
                                                 "goals": lines}, indent=1))
    for line in lines:
        print(line)
    return 0


def _train(target, f, form, asked, depth, method, seeds, width) -> dict:
    """One row's fit (all seeds in one batch) and its exact errors."""
    t0 = time.perf_counter()
    r = fit(**fit_kwargs(target, form, asked, depth), depth=depth, seeds=seeds, width=width,
            count=False, optimum=False, **METHODS[method](depth))
    wall = time.perf_counter() - t0
    errs, pieces = zip(*(net_l2_mse(net.double(), f, (0.0, 1.0)) for net in r.models),
                       strict=True)
    errs = np.array(errs)
    return {"mean": float(errs.mean()), "median": float(np.median(errs)),
            "min": float(errs.min()), "pieces": float(np.mean(pieces)),
            "s_per_seed": wall / len(seeds), "train_s_per_seed": r.seconds / len(seeds),
            "errors": errs.tolist(), "train_mse": r.train_mse.tolist()}


def _line(row) -> str:
    asked = row["points_asked"]
    pts = (f"{row['points']}" if asked in (row["points"], BENCHMARK)
           else f"{asked} ({row['points']})")
    return (f"{row['target']:>12s} {row['form']:>4s} {pts:>13s} {row['depth']:5d} "
            f"{row['opt_2d']:9.2e} {row['params']:4d} {row['opt_matched']:9.2e} | "
            f"{row['method']:14s} {row['mean']:9.2e} {row['median']:9.2e} {row['min']:9.2e} "
            f"{row['pieces']:7.1f} {row['effective_pieces']:7.1f} {row['s_per_seed']:7.1f}")


# -- goals -------------------------------------------------------------------------------------

def _verdict(failed: bool, missing: list) -> str:
    """NOT MET as soon as one setting fails; MET only when every setting is in the run."""
    if failed:
        return "NOT MET"
    if missing:
        shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6
                                          else "")
        return f"NOT JUDGED (missing: {shown})"
    return "MET"


def _default_rows(rows, target):
    """The rows the acceptance speaks of: fit's defaults (method default, width 4) on target."""
    return [r for r in rows if r["method"] == "default" and r["width"] == 4
            and same_target(r["target"], target)]


def _seeds_text(rows) -> str:
    seeds = rows[0]["seeds"]
    return f"seeds {seeds[0]}-{seeds[-1]}"


def goals(rows) -> list[str]:
    """One line per acceptance item that the rows can judge (items 1, 2, 4; none when the run
    has no row for it), then depth 10 against depth 5 in time per seed (item 5, no bound)."""
    out = []
    cube = _default_rows(rows, GOAL_TARGET)
    at10 = [r for r in cube if r["depth"] == 10]
    if at10:
        out.append(_goal_counts(at10))
    if any(r["depth"] in GOAL2_DEPTHS for r in cube):
        out.append(_goal_deeper(cube))
    shapes = {t: [r for r in _default_rows(rows, t) if r["depth"] == 10] for t in GOAL4_FACTORS}
    if any(shapes.values()):
        out.extend(_goal_shapes(shapes))
    out.extend(_cost_lines(rows))
    return out


def _goal_counts(at10) -> str:
    """Item 1: x^3 at depth 10 on every count of GOAL1_COUNTS, both forms."""
    means, missing = {}, []
    for form in FORMS:
        for n in GOAL1_COUNTS:
            hit = [r["mean"] for r in at10 if r["form"] == form and r["points"] == n]
            if hit:
                means[(form, n)] = hit[0]
            else:
                missing.append(f"{form} {n}")
    if not means:  # depth-10 rows only at counts outside the goal's list
        return (f"goal 1, x^3 depth 10 at {len(GOAL1_COUNTS)} point counts x {len(FORMS)} "
                f"forms -> {_verdict(False, missing)}")
    worst = max(means, key=means.get)
    median = float(np.median(list(means.values())))
    failed = means[worst] > GOAL1_MEAN or (not missing and median > GOAL1_MEDIAN)
    return (f"goal 1, x^3 depth 10 at {len(GOAL1_COUNTS)} point counts x {len(FORMS)} forms "
            f"({_seeds_text(at10)}): every mean <= {GOAL1_MEAN:g} (worst {means[worst]:.3g}, "
            f"{worst[0]} {worst[1]}), median of the {len(means)} means <= {GOAL1_MEDIAN:g} "
            f"({median:.3g}) -> {_verdict(failed, missing)}")


def _goal_deeper(cube) -> str:
    """Item 2: depths 11 and 12 at most depth 10 at each count; depth 12 at most GOAL2_D12."""
    forms = sorted({r["form"] for r in cube}, key=FORMS.index)
    worse, missing, d12 = [], [], []
    for form in forms:
        for n in GOAL2_COUNTS:
            def mean_at(d, form=form, n=n):
                hit = [r["mean"] for r in cube if r["form"] == form and r["depth"] == d
                       and (r["points_asked"] == DEFAULT if n == DEFAULT else r["points"] == n)]
                if not hit:
                    missing.append(f"{form} {n} depth {d}")
                return hit[0] if hit else None
            base = mean_at(10)
            for d in GOAL2_DEPTHS:
                m = mean_at(d)
                if m is not None and base is not None and m > base:
                    worse.append(f"depth {d} {form} {n}: {m:.3g} > {base:.3g}")
                if d == 12 and m is not None:
                    d12.append(m)
    over = [m for m in d12 if m > GOAL2_D12]
    failed = bool(worse or over)
    detail = "; ".join(worse) if worse else "none worse"
    top = f"{max(d12):.3g}" if d12 else "-"
    return (f"goal 2, deeper never worse (x^3, depths {GOAL2_DEPTHS} vs 10 at "
            f"{', '.join(map(str, GOAL2_COUNTS))} points, forms {', '.join(forms)}, "
            f"{_seeds_text(cube)}): {detail}; depth 12 <= {GOAL2_D12:g} (worst {top}) -> "
            f"{_verdict(failed, missing)}")


def _goal_shapes(shapes) -> list[str]:
    """Item 4: each other shape at depth 10 within its factor of its parameter-matched
    optimum, on every row of it in the run."""
    lines, failed, missing = [], False, []
    for target, factor in GOAL4_FACTORS.items():
        mine = shapes[target]
        if not mine:
            missing.append(target)
            continue
        ratios = [r["mean"] / r["opt_matched"] for r in mine]
        bad = max(ratios) > factor
        failed |= bad
        lines.append(f"  {target}: mean / parameter-matched optimum {max(ratios):.3g} at worst "
                     f"over {len(mine)} row(s) (<= {factor:g}) -> {'NOT MET' if bad else 'MET'}")
    seeds = _seeds_text(next(m for m in shapes.values() if m))
    head = (f"goal 4, other shapes at depth 10 within a factor of their parameter-matched "
            f"optimum ({seeds}) -> {_verdict(failed, missing)}")
    return [head, *lines]


def _cost_lines(rows) -> list[str]:
    """Item 5: s/seed of depth 10 against depth 5 in the same run, per row setting."""
    out = []
    by = {(r["target"], r["form"], str(r["points_asked"]), r["method"], r["depth"]): r
          for r in rows}
    for (t, form, asked, m, d), r10 in by.items():
        r5 = by.get((t, form, asked, m, 5))
        if d == 10 and r5:
            out.append(f"time, depth 10 / depth 5 per seed ({t}, {form}, points {asked}, {m}): "
                       f"{r10['s_per_seed'] / r5['s_per_seed']:.3g}x "
                       f"({r10['s_per_seed']:.1f} vs {r5['s_per_seed']:.1f} s/seed)")
    return out


# -- figure ------------------------------------------------------------------------------------

def figure(rows, args):
    """Mean error against depth, one line per target / form / points / method (with the
    minimum dotted when there is one line), and each target's two optima."""
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    combos = list(dict.fromkeys((r["target"], r["form"], r["points_asked"], r["method"])
                                for r in rows))
    several = len(args.targets) > 1
    for i, combo in enumerate(combos):
        mine = sorted((r for r in rows
                       if (r["target"], r["form"], r["points_asked"], r["method"]) == combo),
                      key=lambda r: r["depth"])
        t, form, asked, m = combo
        pts = "max(4096, 4 * 2^d) points" if asked == BENCHMARK else f"points {asked}"
        label = ", ".join(([t] if several else []) + [form, pts, m])
        depths = [r["depth"] for r in mine]
        ax.plot(depths, [r["mean"] for r in mine], "o-", color=f"C{i % 10}", label=label,
                markersize=4)
        if len(combos) == 1:
            ax.plot(depths, [r["min"] for r in mine], ".:", color=f"C{i % 10}", alpha=0.6,
                    label=f"{label} (min)")
    for j, t in enumerate(args.targets):  # each target's optima in its own grey
        grey = str(round(0.6 * j / len(args.targets), 2))
        mine = {r["depth"]: r for r in rows if r["target"] == t}
        depths = sorted(mine)
        tail = f" ({t})" if several else ""
        ax.plot(depths, [mine[d]["opt_2d"] for d in depths], "--x", color=grey, linewidth=0.8,
                label=f"optimum, 2^d free pieces{tail}")
        ax.plot(depths, [mine[d]["opt_matched"] for d in depths], "-.+", color=grey, linewidth=0.8,
                label=f"optimum, as many numbers as parameters{tail}")
    ax.set_yscale("log")
    ax.set_xlabel(f"depth (hidden layers of width {args.width})")
    ax.set_ylabel("(1/L) integral (f - net)^2")
    ax.set_title(f"{', '.join(args.targets)}: {args.seeds} seeds, error on the exact pieces")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    atomic_write(Path(args.out),
                 lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))


if __name__ == "__main__":
    sys.exit(main())
