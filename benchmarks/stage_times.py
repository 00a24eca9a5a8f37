"""Where a fit's time goes: seconds per named training stage, for each depth in one run (the
goal: depth 10 at most 4x the time of depth 5; docs/training.md, "Cost").

    python benchmarks/stage_times.py [--depths 5 10] [--seeds 10] [--points 4096]
                                      [--target 'x**3'] [--starts N] [--json FILE]

Each depth is one ``fit(target, depth=D, seeds=N, points=P)`` with the library's defaults
(``count=False, optimum=False``: training only), after a small warm-up fit so that first-call
imports are not charged to the first depth. A stage is one optimizer run ("phase1",
"phase2:share", "grow:7", ...; ``training/stages.py``); rows = seeds x starts or x insertion paths
trained together. The last line is each depth's total against the first depth's. Times are
only comparable within one run (other jobs share the machine).
"""

import argparse
import json
import time

from relu_regions.training.fitting import fit


def timed_stages(target, depth, seeds, points, starts=None):
    """[(stage, rows, seconds)] and the total seconds of one fit."""
    stages, began = [], {}

    def timer(event):  # a stage hook: the picks between stages only end, and are not stages
        if event.when == "start":
            began[event.stage] = event.seconds
        elif event.stage in began:
            seconds = event.seconds - began.pop(event.stage)
            stages.append((event.stage, int(event.theta.shape[0]), seconds))

    extra = {} if starts is None else {"starts": starts}
    t = time.perf_counter()
    fit(target, depth=depth, seeds=seeds, points=points, count=False, optimum=False,
        on_stage=timer, **extra)
    return stages, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="x**3")
    ap.add_argument("--depths", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--points", type=int, default=4096)
    ap.add_argument("--starts", type=int, default=None, help="starts per seed (default: fit's)")
    ap.add_argument("--json", default=None, help="also write the table to this file")
    a = ap.parse_args()

    fit(a.target, depth=3, seeds=1, points=200, count=False, optimum=False)  # warm-up
    rows, totals = [], {}
    for depth in a.depths:
        stages, total = timed_stages(a.target, depth, a.seeds, a.points, a.starts)
        totals[depth] = total
        print(f"depth {depth}: {total:.1f} s in all ({total / a.seeds:.2f} s/seed)", flush=True)
        for name, n_rows, sec in stages:
            print(f"  {name:<14} {n_rows:5d} rows {sec:8.1f} s", flush=True)
            rows.append({"depth": depth, "stage": name, "rows": n_rows, "seconds": sec})
    first = a.depths[0]
    print(f"total against depth {first}: "
          + ", ".join(f"depth {d} {totals[d] / totals[first]:.2f}x" for d in a.depths))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"target": a.target, "seeds": a.seeds, "points": a.points,
                       "stages": rows, "totals": totals}, f, indent=1)


if __name__ == "__main__":
    main()
