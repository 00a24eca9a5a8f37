"""Speed: 30 seeds trained as one batch vs the same seeds one at a time, side by side.

    python benchmarks/bench_batch.py [--seeds 30] [--solo 5] [--repeats 3] [--stages]

Times the two-phase method on x^3 (depth 5, 500 points) for both optimizers: the default
protocol (LM 100 + 400 steps, 8 phase-1 starts per seed), Adam 1000 + 1000 with 8 starts, and
the paper's protocol exactly (Adam 1000 + 1000, one phase-1 start per seed). The
one-at-a-time time per seed is measured on --solo seeds (each trained alone) right after the
batched run, and compared per seed; each repeat does both again, so load changes hit both. Also
printed: the same ratio in process CPU time (less sensitive to other jobs on the machine), and
the largest difference between a seed trained alone and in the batch. --stages splits the times
by named training stage (``training/stages.py``: "phase1" of every start, "phase2:share" that
every start runs, "phase2:rest" on each seed's best start; with one start, "phase2").
"""

import argparse
import time
from collections import defaultdict

import numpy as np

from relu_regions.training.config import DEFAULT_PHASE1, DEFAULT_PHASE2, Phase
from relu_regions.training.fitting import fit


def _stage_timer(times):
    """A stage hook adding each stage's wall time to ``times[stage]`` (None: no hook)."""
    if times is None:
        return None
    began = {}

    def timer(event):  # the picks between stages only end, and are not stages
        if event.when == "start":
            began[event.stage] = event.seconds
        elif event.stage in began:
            times[event.stage] += event.seconds - began.pop(event.stage)
    return timer


def measure(run, seeds, solo, stages):
    batch_stages = defaultdict(float) if stages else None
    solo_stages = defaultdict(float) if stages else None
    t, c = time.perf_counter(), time.process_time()
    batched = fit("x**3", seeds=seeds, on_stage=_stage_timer(batch_stages), **run)
    wall_b, cpu_b = (time.perf_counter() - t) / seeds, (time.process_time() - c) / seeds
    t, c = time.perf_counter(), time.process_time()
    alone = [fit("x**3", seeds=[s], on_stage=_stage_timer(solo_stages), **run)
             for s in range(solo)]
    wall_s, cpu_s = (time.perf_counter() - t) / solo, (time.process_time() - c) / solo
    diff = max(max(abs(r.mse[0] - batched.mse[i]) / r.mse[0],
                   float(np.max(np.abs(r.history["loss"][0] - batched.history["loss"][i])
                                / r.history["loss"][0])))
               for i, r in enumerate(alone))
    split = ""
    if stages:
        split = "; stages s/seed batched / alone: " + ", ".join(
            f"{k} {batch_stages[k] / seeds:.3f} / {solo_stages[k] / solo:.3f}"
            for k in batch_stages)
    print(f"  batched {wall_b * seeds:.2f} s ({wall_b:.3f} s/seed), alone {wall_s:.3f} s/seed: "
          f"speed-up per seed {wall_s / wall_b:.1f}x (CPU time {cpu_s / cpu_b:.1f}x); largest "
          f"relative difference alone vs batched (MSE, loss history) {diff:.1e}{split}",
          flush=True)
    return wall_s / wall_b, cpu_s / cpu_b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--solo", type=int, default=5)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", action="store_true", help="split the times by training stage")
    args = ap.parse_args()
    adam = (Phase("adam", 1000, 1e-3), Phase("adam", 1000, 1e-3))
    protocols = {
        "lm (default, 8 starts)": (DEFAULT_PHASE1, DEFAULT_PHASE2, 8),
        "adam 1000+1000, 8 starts": (*adam, 8),
        "adam 1000+1000, 1 start (the paper's protocol)": (*adam, 1),
    }
    for name, (p1, p2, starts) in protocols.items():
        run = dict(depth=args.depth, count=False, optimum=False, phase1=p1, phase2=p2,
                   starts=starts)
        fit("x**3", seeds=2, **run)  # warm-up
        print(f"{name}:", flush=True)
        ratios = [measure(run, args.seeds, args.solo, args.stages) for _ in range(args.repeats)]
        wall, cpu = zip(*ratios, strict=True)
        print(f"  {name}: speed-up per seed over {args.repeats} repeats {min(wall):.1f}x - "
              f"{max(wall):.1f}x (CPU time {min(cpu):.1f}x - {max(cpu):.1f}x)", flush=True)


if __name__ == "__main__":
    main()
