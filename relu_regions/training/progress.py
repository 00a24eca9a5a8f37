"""Progress of a fit on stderr: a bar on a terminal, else a short line every ~10 s (a piped or
logged run is not silent)."""

from __future__ import annotations

import sys
import time

LINE_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


class Progress:
    """``tick(mse)`` after every optimizer step (``None`` when disabled, so callers can skip it).

    ``enabled``: True picks the bar on a terminal and lines otherwise; "lines" or "bar" forces
    one; False is silent. ``desc`` and ``unit`` name other work than training (e.g. "tracking",
    "checkpoint"), whose ``tick(None)`` or ``update(n)`` (tqdm's name) shows no MSE."""

    def __init__(self, total: int, n_seeds: int, enabled=False, stream=None, *,
                 desc: str | None = None, unit: str = "step"):
        self.total, self.n_seeds, self.stream = total, n_seeds, stream or sys.stderr
        self.desc, self.unit = desc or f"training {n_seeds} seeds", unit
        self.bar, self.steps, self.last = None, 0, time.monotonic()
        mode = enabled
        if enabled is True:
            mode = "bar" if _isatty(self.stream) else "lines"
        self.tick = {"bar": self._bar_tick, "lines": self._line_tick}.get(mode)
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=unit, leave=False,
                            file=self.stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, n: int = 1) -> None:
        if self.tick is not None:
            for _ in range(n):
                self.tick(None)

    def _bar_tick(self, mse):
        self.bar.update(1)
        if mse is not None:
            self.bar.set_postfix(mse=f"{float(mse.mean()):.2e}")

    def _line_tick(self, mse):
        self.steps += 1
        now = time.monotonic()
        if now - self.last >= LINE_EVERY:
            self.last = now
            error = "" if mse is None else f", mean MSE {float(mse.mean()):.2e}"
            print(f"{self.desc}: {self.unit} {self.steps} of about {self.total}{error}",
                  file=self.stream, flush=True)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class TaskProgress:
    """``update()`` after each of ``total`` tasks (a tiled map's tiles): a bar on a terminal, else
    a line every ~10 s; ``enabled`` as in :class:`Progress`."""

    def __init__(self, total: int, desc: str, unit: str, enabled=False, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.bar, self.done, self.last = None, 0, time.monotonic()
        mode = enabled
        if enabled is True:
            mode = "bar" if _isatty(self.stream) else "lines"
        self.mode = mode if mode in ("bar", "lines") else None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last >= LINE_EVERY:
                self.last = now
                print(f"{self.desc}: {self.done} of {self.total} {self.unit}s", file=self.stream,
                      flush=True)
