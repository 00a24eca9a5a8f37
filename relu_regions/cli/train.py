"""``relu-regions train``: fit nets to a target or CSV data (or resume an interrupted run),
write the run folder, print the summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import targets
from ..errors import InputError
from ..training import fitting  # the module, not its fit: tests replace fitting.fit
from ..training.auto import describe_training
from ..training.run_folder import check_out_dir
from ..training.stages import load_train_state
from ..validation import check_device, plural
from .common import fit_overrides, option_names, progress_mode


def run(args: argparse.Namespace) -> dict:
    progress = progress_mode(args)
    if args.resume is not None:
        return _resume_train(args, progress)
    if args.checkpoint_every is not None and not args.out:
        raise InputError("--checkpoint-every needs --out DIR (the state is kept there)")
    if (args.target is None) == (args.data is None):
        raise InputError("give exactly one of --target EXPR or --data CSV")
    check_device(getattr(args, "device", "cpu"))  # FitConfig checks it too; this names --device
    out_dir = check_out_dir(Path(args.out), args.force) if args.out else None
    data = targets.from_csv(args.data) if args.data is not None else None
    target = targets.parse_target(args.target) if args.target is not None else None
    # The state file also keeps the command; it is first written after N steps, when every
    # argument has been checked.
    state_path = out_dir / "state.pt" if args.checkpoint_every else None
    try:
        result = fitting.fit(target, data=data, progress=progress, checkpoint=state_path,
                             checkpoint_every=args.checkpoint_every,
                             checkpoint_meta=json.dumps({"argv": args.argv}),
                             **fit_overrides(args))
    except InputError as e:  # the API names its settings; here they are options
        raise InputError(option_names(str(e))) from None
    # --out was checked before training; since then it may hold this run's own state.pt
    return _train_output(result, out_dir, True, ["relu-regions", *args.argv])



def _resume_train(args, progress) -> dict:
    """Continue the interrupted run in ``args.resume`` (its settings and data are in state.pt)
    and write its run folder there."""
    folder = Path(args.resume)
    given = [k for k in fit_overrides(args)] + [k for k in ("target", "data", "out")
                                                if getattr(args, k) is not None]
    if given:
        raise InputError(f"--resume reuses the interrupted run's settings; drop --{given[0]}")
    state = load_train_state(folder)
    try:
        command = json.loads(state.get("meta") or "")["argv"]
    except (ValueError, KeyError, TypeError):
        command = None
    result = fitting.fit(resume=state, progress=progress, checkpoint=folder / "state.pt",
                         checkpoint_every=args.checkpoint_every or _stored_every(command),
                         checkpoint_meta=state.get("meta", ""))
    return _train_output(result, folder, True, ["relu-regions", *command] if command else None)


def _stored_every(argv):
    """--checkpoint-every N of the interrupted command (so a resumed run keeps saving)."""
    argv = argv or []
    for i, a in enumerate(argv):
        if a.startswith("--checkpoint-every="):
            return int(a.split("=", 1)[1])
        if a == "--checkpoint-every" and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


def _train_output(result, out_dir, force, command) -> dict:
    out = result.summary()
    if out_dir is not None:
        folder = result.save(out_dir, force=force, command=command)
        out["out"] = str(out_dir)
        out["files"] = sorted(p.name + "/" * p.is_dir() for p in Path(folder).iterdir())
    return out


def show(out: dict) -> str:
    seeds = plural(out['seeds'], 'seed')
    depth = f"depth {out['depth']}"
    if out.get("shape") == "radial":  # F_out(F_in(x, y)): two constructions stacked
        depth += f" per construction ({2 * out['depth']} hidden layers, radial)"
    lines = [f"{out['method']} on {out['target']}, {depth}, {seeds} ({out['seconds']:.1f} s)"]
    how = describe_training(out.get("training") or {}, out["depth"])
    if how:
        lines.append(how)
    if out.get("inputs") == 2:
        lines.append("2D fit: the target uses y or r (or the CSV has 3 columns), so the nets take "
                     "two inputs (x, y)")
    which = "test MSE (held-out points)" if out.get("held_out") else "MSE"
    lines.append(f"{which}  min {_num(out['mse_min'])}   mean {_num(out['mse_mean'])}   "
                 f"median {_num(out['mse_median'])}")
    if out.get("held_out"):
        lines.append(f"train MSE (fitted points)  mean {_num(out.get('train_mse_mean'))}")
        if out.get("overfit_note"):
            lines.append(out["overfit_note"])
    if out.get("r2_mean") is not None:
        lines.append(f"{'test ' if out.get('held_out') else ''}R^2 {out['r2_mean']:.6f}, RMSE / "
                     f"std of the target {out['rel_rmse_mean']:.3e}, max |error| "
                     f"{out['max_abs_error_mean']:.3e} (means over seeds)")
    if out.get("regions") is not None:
        lines.append("regions on the input box, per seed (exact): "
                     + _per_seed(out["regions"], out["plane_pieces"]))
    lines.append(f"linear pieces (mean over seeds) {out['pieces_mean']:.1f} " + _pieces_note(out))
    if out.get("optimal_mse") is not None:
        eff = out["efficiency_mean"]
        lines.append(f"optimum with {out['optimal_pieces']} pieces {out['optimal_mse']:.3e}; "
                     f"efficiency (optimum / achieved training MSE, mean) "
                     f"{_num(eff, '.3g')}" + _efficiency_note(out))  # 1e-05, not 0.000
    elif out.get("optimum_note"):
        lines.append(out["optimum_note"])
    if out.get("diverged"):
        lines.append(f"diverged seeds: {out['diverged']}")
    if out.get("out"):  # what the folder holds, listed from the folder itself
        lines.append(f"wrote {out['out']}/: " + ", ".join(out.get("files", [])))
    return "\n".join(lines)


def _per_seed(regions, pieces, shown: int = 8) -> str:
    """'r regions / p pieces' per seed, the first ``shown`` of them, then the means."""

    def cell(r, p):
        return "-" if r < 0 else f"{r}/{p}"  # -1: diverged or not counted

    text = ", ".join(cell(r, p) for r, p in zip(regions[:shown], pieces[:shown], strict=True))
    if len(regions) > shown:
        text += f", ... ({len(regions) - shown} more)"
    counted = [(r, p) for r, p in zip(regions, pieces, strict=True) if r >= 0]
    if counted:
        n = len(counted)
        text += (f" activation regions/linear pieces; mean {sum(r for r, _ in counted) / n:.1f}"
                 f"/{sum(p for _, p in counted) / n:.1f}")
    return text


def _num(v, fmt=".3e") -> str:
    return "-" if v is None else format(v, fmt)


def _efficiency_note(out: dict) -> str:
    if (out.get("efficiency_mean") or 0) <= 1:
        return ""
    return (f" (above 1: phase 2 can add pieces beyond the construction's, so the "
            f"{out['optimal_pieces']}-piece optimum is not a bound)")


def _pieces_note(out: dict) -> str:
    if "max_pieces" not in out:  # metrics written before the field existed
        return ""
    if out["max_pieces"] is None:
        return "(along the diagonal of the input box)"
    if out.get("shape") == "dc":
        return f"(two constructions: up to {out['max_pieces']})"
    if out.get("method") in ("kaiming", "raai"):  # random init: no construction in the net
        return f"(a depth-{out['depth']} construction has {out['max_pieces']})"
    return f"(the construction has {out['max_pieces']}; raw training may add or lose some)"

