"""Training stages by name, the resume journal, and reading a stored training state.

A fit is a few named stages ("phase1", "phase2", "grow:4", ...), each one optimizer run. With a
journal (:class:`Stages`) every stage is checkpointed and a killed fit resumes bit-identically:
finished stages return their stored outputs, the code between stages (pick the best start,
release, insert a layer) is deterministic and runs again, and the stage under way continues from
its step. Stages are keyed by name, so adding a stage does not shift the stored ones.

Stage hooks (:func:`register_stage_hook`, or ``fit(..., on_stage=)``) see every stage start and
end, with the rows' Theta, the fit's optimizer steps so far and its elapsed seconds
(:class:`StageEvent`); a resumed fit calls them again for the finished stages, with the same
Theta and steps.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.hooks import RemovableHandle

from ..atomic import atomic_write
from ..checkpoint import read_tensors
from ..errors import InputError
from . import optim
from .functional import shapes_of, to_module

if TYPE_CHECKING:
    from .config import Phase

# /3: stages keyed by name; the state also holds the fit's config and data (resume needs no argv).
# /4: a growth's warp stage trains one row per seed instead of one per insertion path, and the
# finished stages' loss histories are kept (a resume inside a growth lost phase 1's).
TRAIN_STATE_FORMAT = "relu-regions-train-state/4"

# the hooks of every fit by their handle's id (an OrderedDict: RemovableHandle keeps a weakref)
_STAGE_HOOKS: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class StageEvent:
    """What a stage hook receives when a named stage of a fit starts or ends.

    ``stage``: "phase1", "phase2:share", "phase2:rest", "phase2" (one start), "raw" (baselines),
    "grow:D", "polish"; or an instant between stages, which only ends: "pick" (each seed's best
    start, after "phase2:share", or after the warp stage when a growth starts with one) and
    "pick:polish" (each seed's best path after the polish).
    ``when``: "start" or "end". ``step``: optimizer steps of the whole fit so far (a step trains
    every row). ``seconds``: wall time since the fit began (a resumed fit: since the resume).
    ``theta``: the rows (N, P) in the stage's own coordinates (phase 1: the derived parameters;
    ``parameterization="gmp"``: GmP coordinates), the input at "start", the output at "end", a
    copy the hook may keep. Row r is seed ``seeds[r % len(seeds)]`` (start, path or rank r // n
    of the n seeds). :meth:`raw` gives them as the raw weights of the Linear/ReLU stack of
    ``widths``, :meth:`models` as nets.
    """

    stage: str
    when: str
    step: int
    seconds: float
    theta: torch.Tensor
    seeds: tuple
    widths: tuple
    to_raw: Callable | None = field(default=None, repr=False)

    def raw(self) -> torch.Tensor:
        """Theta as raw weights (N, P_raw), the layout of ``functional.flatten_layers``."""
        if self.to_raw is None:
            return self.theta
        with torch.no_grad():
            return self.to_raw(self.theta).detach()

    def models(self) -> list:
        """One float64 ``nn.Sequential`` per row."""
        widths = list(self.widths)
        return [to_module(t, shapes_of(widths), widths) for t in self.raw().cpu()]

    def seed_of(self, row: int) -> int:
        return self.seeds[row % len(self.seeds)]


def register_stage_hook(hook: Callable[[StageEvent], object]) -> RemovableHandle:
    """Call ``hook(event)`` (a :class:`StageEvent`) at every stage start and end of every fit
    from now on, after the fit's own ``on_stage`` hooks; ``handle.remove()`` stops it.

    A hook must not change ``event.theta`` in place; whatever else it does (record, time, log),
    the fit's result stays the same bit for bit.
    """
    handle = RemovableHandle(_STAGE_HOOKS)
    _STAGE_HOOKS[handle.id] = hook
    return handle


def optimize(predict: Callable[[torch.Tensor], torch.Tensor],
             jacobian: Callable[[torch.Tensor], Any],
             theta: torch.Tensor, y: torch.Tensor, phase: Phase, history: list,
             progress: Callable[[torch.Tensor], object] | None = None,
             stages: Stages | None = None, start: tuple[int, torch.Tensor, dict] | None = None,
             final: dict | None = None, name: str = "stage", widths: Sequence[int] | None = None,
             to_raw: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run one training stage ``name``; with ``stages``, checkpointed, resumable and seen by the
    stage hooks.

    ``start`` = (step, theta, optimizer state) continues a run at that step; ``final`` (a dict)
    receives the optimizer's last "theta" and "state", which is what a continuation needs (after
    picking rows with :func:`pick_rows`). ``widths`` and ``to_raw`` (Theta -> raw weights; None:
    Theta is raw) tell the hooks what net a row is (:class:`StageEvent`).
    """
    if stages is not None:
        return stages.run(name, predict, jacobian, theta, y, phase, history, progress, start,
                          final, widths=widths, to_raw=to_raw)
    return run_stage(predict, jacobian, theta, y, phase, history, progress, start,
                     keep_last(final))


def run_stage(predict: Callable[[torch.Tensor], torch.Tensor],
              jacobian: Callable[[torch.Tensor], Any],
              theta: torch.Tensor, y: torch.Tensor, phase: Phase, history: list,
              progress: Callable[[torch.Tensor], object] | None,
              start: tuple[int, torch.Tensor, dict] | None,
              on_step: Callable[[int, torch.Tensor, dict], object] | None) -> torch.Tensor:
    """``phase``'s optimizer on Theta (nothing for 0 steps)."""
    if phase.steps == 0:
        return theta
    run = optim.run_lm if phase.optimizer == "lm" else optim.run_adam
    return run(predict, jacobian, theta, y, phase, history, progress, start=start, on_step=on_step)


def keep_last(final: dict | None, then: Callable[[int, torch.Tensor, dict], object] | None = None
              ) -> Callable[[int, torch.Tensor, dict], None]:
    """on_step callback that stores the last (theta, state) in ``final``, then calls ``then``."""
    def on_step(step, theta, state):
        if final is not None:
            final.update(theta=theta, state=state)
        if then is not None:
            then(step, theta, state)
    return on_step


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` (nested dicts, lists, tuples) with ``fn`` applied to every tensor in it."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def pick_rows(obj: Any, pick: Callable[[torch.Tensor], torch.Tensor], rows: int) -> Any:
    """Apply ``pick`` (rows of a batch -> one per seed) to every tensor in ``obj`` (nested dicts,
    lists) whose first dimension is the batch's ``rows``; other values are kept."""
    return map_tensors(obj, lambda t: pick(t) if t.dim() >= 1 and t.shape[0] == rows else t)


def to_device(obj: Any, device: str | torch.device) -> Any:
    """A copy of ``obj`` (nested dicts, lists) with every tensor on ``device``, detached."""
    return map_tensors(obj, lambda t: t.detach().to(device, copy=True))


class Stages:
    """The journal of one fit's named stages: checkpoints them and resumes them.

    A checkpoint (``torch.save``, read back with ``weights_only=True``) holds the outputs (and the
    optimizer's final state) of the stages already finished and, for the stage under way, its
    name, step, Theta, optimizer state and loss history, plus ``extra`` (the fit's config and
    data). Resuming gives a result bit-identical to a run that was never interrupted (same seeds,
    float64, CPU).

    ``hooks`` (callables, with those of :func:`register_stage_hook`) receive a
    :class:`StageEvent` at every stage's start and end; ``seeds`` are the fit's, for the events.
    """

    def __init__(self, path=None, every: int | None = None, state: dict | None = None,
                 meta: str = "", extra: dict | None = None, hooks=(), seeds=()):
        self.path, self.every, self.meta, self.extra = path, every, meta, extra or {}
        self.hooks, self.seeds = list(hooks), tuple(int(s) for s in seeds)
        self.began = time.perf_counter()
        self.steps = 0  # optimizer steps of the fit so far, finished stages replayed included
        self.state = state
        self.outputs = dict(state["outputs"]) if state else {}
        self.finals = dict(state["finals"]) if state else {}
        # Each finished stage's loss history as it stood at its end (the list a stage appends to
        # may hold earlier stages' entries too), so replaying it restores the list.
        self.histories = dict(state["histories"]) if state else {}
        self.total_steps = 0
        self.seen: set = set()

    def run(self, name: str, predict: Callable[[torch.Tensor], torch.Tensor],
            jacobian: Callable[[torch.Tensor], Any], theta: torch.Tensor, y: torch.Tensor,
            phase: Phase, history: list, progress: Callable[[torch.Tensor], object] | None,
            start: tuple[int, torch.Tensor, dict] | None = None, final: dict | None = None,
            widths: Sequence[int] | None = None,
            to_raw: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        if name in self.seen:
            raise AssertionError(f"stage {name!r} ran twice in one fit")
        self.seen.add(name)
        self.emit(name, "start", theta, widths, to_raw)
        out = self._run(name, predict, jacobian, theta, y, phase, history, progress, start,
                        final)
        # the caller's start, not a resume's: the same count in an interrupted fit
        self.steps += max(phase.steps - (start[0] if start is not None else 0), 0)
        self.emit(name, "end", out, widths, to_raw)
        return out

    def emit(self, name: str, when: str, theta: torch.Tensor, widths: Sequence[int] | None,
             to_raw: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Call the hooks with a :class:`StageEvent` (nothing to build when there are none)."""
        hooks = [*self.hooks, *_STAGE_HOOKS.values()]
        if not hooks:
            return
        event = StageEvent(name, when, self.steps, time.perf_counter() - self.began,
                           theta.detach().clone(), self.seeds, tuple(widths or ()), to_raw)
        for hook in hooks:
            hook(event)

    def _run(self, name, predict, jacobian, theta, y, phase, history, progress, start, final):
        if name in self.outputs:  # finished before the interruption
            history[:] = list(self.histories[name])
            if final is not None:
                final.update(to_device(self.finals[name], theta.device))
            return self.outputs[name].to(theta.device)
        if self.state is not None and self.state["stage"] == name:
            history[:] = list(self.state["history"])
            start = (self.state["step"], self.state["theta"].to(theta.device),
                     to_device(self.state["optimizer"], theta.device))
            self.state = None
        last: dict = {}

        def save(step, th, opt):
            return self._maybe_save(name, step, th, opt, history)

        out = run_stage(predict, jacobian, theta, y, phase, history, progress, start,
                        keep_last(last, save))
        self.outputs[name] = out.detach().clone()
        self.finals[name] = to_device(last, "cpu")
        self.histories[name] = list(history)
        if final is not None:
            final.update(last)
        return out

    def _maybe_save(self, stage, step, theta, opt_state, history):
        self.total_steps += 1
        if self.path is None or not self.every or self.total_steps % self.every:
            return
        state = {"format": TRAIN_STATE_FORMAT, "stage": stage, "step": step,
                 "theta": theta.detach().cpu(), "optimizer": to_device(opt_state, "cpu"),
                 "outputs": {k: o.cpu() for k, o in self.outputs.items()},
                 "finals": self.finals, "history": [h.cpu() for h in history],
                 "histories": {k: [h.cpu() for h in v] for k, v in self.histories.items()},
                 "meta": self.meta, **self.extra}
        atomic_write(Path(self.path), lambda f: torch.save(state, f))


def load_train_state(path: Path | str) -> dict:
    """Read a training checkpoint written by :class:`Stages` (never runs code); a folder means
    its ``state.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / "state.pt"
    if not path.is_file():
        raise InputError(f"no training state at {path} (a run saves one with checkpoint_every "
                         "/ --checkpoint-every)")
    state = read_tensors(path, "training state")
    fmt = state.get("format") if isinstance(state, dict) else None
    ours = TRAIN_STATE_FORMAT.split("/")[0] + "/"
    if isinstance(fmt, str) and fmt.startswith(ours) and fmt != TRAIN_STATE_FORMAT:
        raise InputError(f"{path} was written by another version of relu-regions ({fmt}; this one "
                         f"reads {TRAIN_STATE_FORMAT}) whose training stages differ (/2 numbered "
                         "them by call order, /3 trained a warp on every path and lost the loss "
                         "history of a resumed growth); start the run again")
    if fmt != TRAIN_STATE_FORMAT:
        raise InputError(f"{path} is not a relu-regions training state")
    return state
