"""Probe growth variants at depth 10 against the default growth, from the *same* depth-6 nets
(results in docs/research-log.md, "The warp layer and its hinges").

    python experiments/depth_probe.py [--seeds 0 1 2 3 4] [--depth 10]
                                      [--variants folds warp-first warp-last ...]

One ``fit(target, depth=D)`` with the library's defaults runs up to the growth (phase 1, 16 starts,
the depth-6 share of phase 2, the pick); at the growth every variant runs from the same picked
depth-6 nets (and, for the variants that use several starts, the same depth-6 starts), one after
the other, and each is timed on its own. The error is the exact (1/L) integral (f - net)^2 on the
net's pieces (``analysis.limits.net_l2_mse``). s/seed = (time before the growth + the variant's
growth time) / seeds, so the column compares variants within one run.

Variants:
- ``default``: ``growth.grow`` as ``fit`` calls it (18 paths, best path per seed at the end;
  without the polish of the best paths that ``fit`` runs after it;
  from 3 added layers on (``auto.WARP_MIN_ADDED``), the first is the warp layer: the same as ``warp-first`` then).
- ``folds``: ``growth.grow`` with folds only (the default before the warp layer).
- ``warp-first`` / ``warp-last``: the 18 paths, but one of the added layers is a warp layer
  (``growth.insert_warp``: a new first hidden layer u = relu(x - lo) + sum_j c_j relu(x - k_j),
  c_j = 0 at insertion, function-preserving), at the first / last insertion; depth stays D.
- ``warp-opt-first``: the same with the warp's hinges at the target's |f''|^(2/5) equidistribution (quartiles of its integral, from a 20,001-point grid).
- ``prune<K>-<D>`` (e.g. ``prune6-8``): ``warp-first``, but after training at depth D only each
  seed's K best paths (training MSE) go on: less work on the deepest, dearest layers.
- ``sched-<letters>`` (e.g. ``sched-wffw``): the 18 paths with one letter per added layer, ``w`` a
  warp layer, ``f`` a fold.
- ``cross<W>`` (e.g. ``cross10``): the default (warp first, curvature hinges), but each fold's
  level, a_new, moves within +-W/100 of the path's own to where the last layer's readout g
  crosses it most often (each crossing is a new kink); ``cross0`` is the default exactly.
- ``diverse3`` / ``diverse2``: grow the 3 / 2 best depth-6 starts per seed, 6 / 9 paths each
  (18 rows per seed in all, as the default).
"""

import argparse
import json
import time

import numpy as np
import torch

from relu_regions.analysis.limits import net_l2_mse
from relu_regions.targets import parse_target
from relu_regions.training import fitting, growth
from relu_regions.training.functional import raw_shapes, to_module
from relu_regions.training.optim import per_seed_mse
from relu_regions.training.trainer import fit

SIX = ((0.7, 0.25), (0.8, 0.125), (0.6, 0.5), (0.5, 0.25), (0.7, 1.0), (0.4, 0.125))
NINE_A = tuple((a, S) for a in (0.3, 0.5, 0.7) for S in (0.25, 1.0, 4.0))
NINE_B = tuple((a, S) for a in (0.4, 0.6, 0.8) for S in (0.125, 0.5, 2.0))


def snap_levels(theta, d, a_last, x, a_path, window):
    """Per row, the fold level (a fraction of g's range, as a_new) within +-window of the path's
    a_new at which g = t1/a - t2/(a(1-a)) crosses most often: each crossing is a new kink."""
    from relu_regions.training.functional import unflatten_layers
    n = theta.shape[0]
    h = growth.last_hidden(unflatten_layers(theta, raw_shapes(d)), x)
    g = h[..., 1] / a_last[:, None] - h[..., 2] / (a_last * (1 - a_last))[:, None]
    g_min = g.amin(dim=1)
    amp = (g.amax(dim=1) - g_min).clamp_min(1e-300)
    offs = torch.linspace(-window, window, 21, dtype=g.dtype)
    offs = offs[torch.argsort(offs.abs(), stable=True)]  # ties go to the path's own level
    cand = (a_path[:, None] + offs[None]).clamp(0.05, 0.95)
    levels = g_min[:, None] + cand * amp[:, None]
    above = g[:, :, None] > levels[:, None, :]
    crossings = (above[:, 1:] != above[:, :-1]).sum(dim=1)  # (n, 21)
    return cand[torch.arange(n), crossings.argmax(dim=1)]


def grow_rows(theta, a_last, paths, d0, depth, x, y, train, predict, n, schedule, knots=None,
              prune=None, snap=None):
    """Rows j*n + s (try j of seed s) grown from d0 to depth; ``paths``: one (a_new, S) per row;
    ``schedule``: "fold" or "warp" per added layer. Best row per seed at the end. ``prune``
    (depth, keep): after training at that depth keep each seed's ``keep`` best rows."""
    a_new = torch.tensor([p[0] for p in paths], dtype=theta.dtype)
    scale = torch.tensor([p[1] for p in paths], dtype=theta.dtype)
    hist: list = []
    for d, kind in zip(range(d0, depth), schedule):
        if kind == "fold":
            level = a_new if snap is None else snap_levels(theta, d, a_last, x, a_new, snap)
            theta = growth.insert_layer(theta, d, a_last, x, y, a_new=level, S=scale, by_range=True)
            a_last = level
        else:
            theta = growth.insert_warp(theta, d, x, knots=knots)
        theta = train(theta, hist, d + 1)
        if prune and d + 1 == prune[0]:
            k = theta.shape[0] // n
            mse = torch.nan_to_num(per_seed_mse(lambda th: predict(th, d + 1), theta, y),
                                   nan=np.inf).reshape(k, n)
            keep = torch.argsort(mse, dim=0)[:prune[1]]  # (keep, n): row j of seed s
            rows = (keep * n + torch.arange(n)).reshape(-1)
            theta, a_last, a_new, scale = (t[rows] for t in (theta, a_last, a_new, scale))
    k = theta.shape[0] // n
    return growth.best_rows(per_seed_mse(lambda th: predict(th, depth), theta, y), k, n)(theta)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="x**3")
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", default=["folds", "warp-first", "warp-last"])
    ap.add_argument("--points", type=int, default=None,
                    help="training points (default max(4096, 4 * 2^depth), as experiments/depth.py)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    f = parse_target(args.target)
    n = len(args.seeds)
    rec: dict = {}
    orig_best_rows, orig_grow = growth.best_rows, growth.grow

    def spy_best_rows(mse, k, nn):
        pick = orig_best_rows(mse, k, nn)
        rec["start_mse"], rec["k"] = mse.clone(), k

        def spy(t):
            rec.setdefault("picked_inputs", []).append(t)
            return pick(t)
        return spy

    results = {}

    def multi(theta, d0, depth, a_last, x, y, train, predict, history, warp=False, keep=1):
        assert keep == 1  # fitting.POLISH_SHARE is 0 here: one row per seed
        growth.best_rows = orig_best_rows
        t_pre = time.perf_counter() - t_fit
        inputs = rec["picked_inputs"]
        all_theta = [t for t in inputs if t.dim() == 2 and t.shape[1] == theta.shape[1]][-1]
        all_a = [t for t in inputs if t.dim() == 1][-1]  # the starts' last peaks
        ks = rec["k"]
        order = torch.argsort(torch.nan_to_num(rec["start_mse"], nan=np.inf).reshape(ks, n), dim=0)
        lo = float(x.min())
        hi = float(x.max())
        # x^3's |f''|^(2/5) equidistribution on [lo, hi]: the quantiles (j/m)^(5/7)
        def qk(m):  # the target's |f''|^(2/5) equidistribution on [lo, hi]: quantiles j / m
            g = np.linspace(lo, hi, 20001)
            fg = np.asarray(f(g), dtype=float)
            dens = np.abs(np.gradient(np.gradient(fg, g), g)) ** 0.4
            cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(g))])
            return [float(np.interp(j / m * cdf[-1], cdf, g)) for j in (1, 2, 3)]
        paths18 = growth.INSERT_PATHS
        out = None
        for v in args.variants:
            st = train.__self__.stages  # each variant runs the same stage names again
            for name in [k for k in st.outputs if k.startswith("grow:")]:
                st.outputs.pop(name), st.finals.pop(name, None), st.seen.discard(name)
            t0 = time.perf_counter()
            steps = depth - d0
            if v in ("default", "folds"):  # the library's default / folds only
                th = orig_grow(theta, d0, depth, a_last, x, y, train, predict, [],
                               warp=warp and v == "default")
            elif v.startswith("prune"):  # prune<keep>-<depth>: warp first, then prune
                keep, at = (int(t) for t in v[5:].split("-"))
                sched = ["warp"] + ["fold"] * (steps - 1)
                rows = [p for p in paths18 for _ in range(n)]
                th = grow_rows(theta.repeat(len(paths18), 1), a_last.repeat(len(paths18)), rows,
                               d0, depth, x, y, train, predict, n, sched, prune=(at, keep))
            elif v.startswith("sched-"):  # e.g. sched-wffw: w = warp, f = fold, per added layer
                sched = [{"w": "warp", "f": "fold"}[c] for c in v[6:]]
                if len(sched) != steps:
                    raise SystemExit(f"{v}: give {steps} letters, one per added layer")
                rows = [p for p in paths18 for _ in range(n)]
                th = grow_rows(theta.repeat(len(paths18), 1), a_last.repeat(len(paths18)), rows,
                               d0, depth, x, y, train, predict, n, sched)
            elif v.startswith("cross"):  # cross<window%>: warp first, folds at the level of most crossings
                sched = ["warp"] + ["fold"] * (steps - 1)
                rows = [p for p in paths18 for _ in range(n)]
                th = grow_rows(theta.repeat(len(paths18), 1), a_last.repeat(len(paths18)), rows,
                               d0, depth, x, y, train, predict, n, sched,
                               knots=growth.curvature_hinges(x, y), snap=int(v[5:]) / 100)
            elif v.startswith("warp"):
                sched = ["fold"] * steps
                sched[0 if "first" in v else -1] = "warp"
                knots = qk(4) if "opt" in v else None
                rows = [p for p in paths18 for _ in range(n)]
                th = grow_rows(theta.repeat(len(paths18), 1), a_last.repeat(len(paths18)), rows,
                               d0, depth, x, y, train, predict, n, sched, knots)
            elif v.startswith("diverse"):
                m = int(v[-1])
                groups = {3: [SIX] * 3, 2: [NINE_A, NINE_B]}[m]
                th_rows, a_rows, paths = [], [], []
                for r, group in enumerate(groups):
                    sel = order[r] * n + torch.arange(n)  # r-th best start of each seed
                    for p in group:
                        th_rows.append(all_theta[sel])
                        a_rows.append(all_a[sel])
                        paths += [p] * n
                th = grow_rows(torch.cat(th_rows), torch.cat(a_rows), paths, d0, depth, x, y,
                               train, predict, n, ["fold"] * steps)
            else:
                raise SystemExit(f"unknown variant {v}")
            dt = time.perf_counter() - t0
            shapes = raw_shapes(depth)
            widths = [1] + [4] * depth + [1]
            errs, pieces = zip(*(net_l2_mse(to_module(t, shapes, widths).double(), f, (0.0, 1.0))
                                 for t in th.detach().cpu()))
            errs = np.array(errs)
            results[v] = {"errors": errs.tolist(), "pieces": list(pieces),
                          "mean": float(errs.mean()), "median": float(np.median(errs)),
                          "min": float(errs.min()), "s_per_seed": (t_pre + dt) / n,
                          "grow_s_per_seed": dt / n}
            print(f"{v:16s} mean {errs.mean():9.3e} median {np.median(errs):9.3e} "
                  f"min {errs.min():9.3e} max {errs.max():9.3e} pieces {np.mean(pieces):6.1f} "
                  f"s/seed {(t_pre + dt) / n:6.1f} (growth {dt / n:6.1f})  "
                  + " ".join(f"{e:.2e}" for e in errs), flush=True)
            if out is None:
                out = th
        return out

    growth.best_rows = spy_best_rows
    growth.grow = multi
    fitting.POLISH_SHARE = 0.0  # the variants' growth alone, without fit's polish
    t_fit = time.perf_counter()
    fit(args.target, depth=args.depth, seeds=args.seeds, count=False, optimum=False,
        points=args.points or max(4096, 4 * 2**args.depth))
    print(f"total {time.perf_counter() - t_fit:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
