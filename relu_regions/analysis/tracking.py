"""Linear regions over training and around the data: a tracker of fixed probes.

A :class:`RegionTracker` holds probes in input space, segments ``(x0, x1)`` and planes through
three points ``(p0, p1, p2)``, and counts each of them exactly (``analysis.regions``,
``analysis.plane``) every time :meth:`RegionTracker.record` is called with a model, e.g. at
log-spaced steps of a training run (:func:`log_steps`). This is how region counts are followed
during training along lines through data points (Hanin & Rolnick, arXiv:1901.09021 Sec. 4 and
arXiv:1906.00904 Sec. 5), and how the density of regions near the data is measured (Gamba et
al., arXiv:2202.11749; Patel & Montufar, arXiv:2412.18283): :meth:`through_points` centres the
segments at data points, and :meth:`RegionTracker.density_profile` gives the breakpoints per
unit length as a function of the distance from them.

Per probe and record: activation regions, linear pieces, the decision boundary (crossings along
a segment, length on a plane; the argmax of k outputs, or the level set of one), the size
(length or area, in input units) and the density (activation regions per unit length or area).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ..atomic import atomic_write_text
from ..errors import InputError
from ..validation import check_float, check_int, check_level

if TYPE_CHECKING:
    from torch import nn

FORMAT = "relu-regions/tracker-1"
KINDS = ("segment", "plane")
ROW_COLUMNS = ("step", "probe", "kind", "activation_regions", "linear_pieces", "decision",
               "density", "size", "resolved")
TAG_TYPES = (str, int, float, bool, type(None))


@dataclass
class DensityProfile:
    """Breakpoints per unit length against the distance from the segments' centres (the data
    points of :meth:`RegionTracker.through_points`), both sides together, over every segment
    recorded at ``step``. Bin i covers distances ``edges[i]`` to ``edges[i + 1]``;
    ``breakpoints[i]`` and ``length[i]`` are the breakpoints and the length of segment inside
    it, summed over the segments (and over the records at that step); ``density`` their ratio
    (NaN where no segment reaches)."""

    step: int
    edges: np.ndarray
    breakpoints: np.ndarray
    length: np.ndarray
    density: np.ndarray
    segments: int

    @property
    def distance(self) -> np.ndarray:
        """The bins' centres."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    def to_dict(self) -> dict:
        return {"step": self.step, "segments": self.segments, "edges": self.edges.tolist(),
                "breakpoints": self.breakpoints.tolist(), "length": self.length.tolist(),
                "density": [None if math.isnan(v) else v for v in self.density.tolist()]}


class RegionTracker:
    """Exact region counts of fixed probes, recorded for a model as it is at each call.

    ``segments``: pairs of input points ``(x0, x1)``; ``planes``: triples ``(p0, p1, p2)``
    counted on the plane through them, on the box ``extent = (u0, u1, v0, v1)`` of the plane's
    coordinates (:func:`~relu_regions.analysis.plane.count_regions_plane`; None: its default box).
    Points are flattened (a model with shaped inputs must declare its ``input_shape``,
    docs/models.md). ``level``: the level set of a one-output model whose crossings are the
    ``decision`` column (default 0; None for k > 1 outputs, whose argmax is used).

    >>> from relu_regions import ConstructionNet
    >>> tracker = RegionTracker(segments=[([0.0], [1.0])])
    >>> tracker.record(ConstructionNet.build(3, peaks=0.5), step=0, stage="built")
    >>> row = tracker.rows()[0]
    >>> row["activation_regions"], row["density"], row["stage"]
    (8, 8.0, 'built')
    """

    def __init__(self, segments: Iterable[Sequence[ArrayLike]] = (),
                 planes: Iterable[Sequence[ArrayLike]] = (), *,
                 extent: Sequence[float] | None = None, level: float | None = None) -> None:
        self._segments = [_points(pair, 2, f"segments[{i}]") for i, pair in enumerate(segments)]
        self._planes = [_points(tri, 3, f"planes[{i}]") for i, tri in enumerate(planes)]
        if not self._segments and not self._planes:
            raise InputError("a RegionTracker needs at least one probe: give segments=[(x0, x1), "
                             "...] or planes=[(p0, p1, p2), ...]")
        dims = {p.size for probe in self._segments + self._planes for p in probe}
        if len(dims) > 1:
            raise InputError(f"the probes' points have different sizes {sorted(dims)}; all must "
                             f"be points of the model's input space")
        self.dims = dims.pop()
        for i, (x0, x1) in enumerate(self._segments):
            if np.array_equal(x0, x1):
                raise InputError(f"segments[{i}] is empty: x0 equals x1")
        self.extent = None if extent is None else _extent(extent)
        if level is not None:
            level = check_float(level, "level")
        self.level = level
        self._lengths = np.array([float(np.linalg.norm(x1 - x0)) for x0, x1 in self._segments])
        self._records: list[dict] = []

    @classmethod
    def through_points(cls, points: ArrayLike, length: float, n: int | None = None,
                       seed: int = 0, planes: int = 0, *,
                       level: float | None = None) -> RegionTracker:
        """Segments of total ``length`` centred at ``n`` of the ``points`` (rows; default all,
        in order; else ``n`` drawn without replacement), each in a random direction (uniform on
        the sphere); and ``planes`` planes, each through another draw of the points and two
        random directions, counted on the square of side ``length`` centred at the point.
        Seeded (``numpy.random.default_rng(seed)``): the segments do not depend on ``planes``.
        A 1-D ``points`` is a list of 1-input points."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[:, None]
        if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] == 0:
            raise InputError(f"points must be a (points, inputs) array with at least one row, "
                             f"got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise InputError("points must be finite")
        m, d = pts.shape
        length = check_float(length, "length", low=0.0, low_open=True)
        n = m if n is None else check_int(n, "n", low=0, high=m,
                                          hint=f"there are {m} points (a segment per point)")
        planes = check_int(planes, "planes", low=0, high=m,
                           hint=f"there are {m} points (a plane per point)")
        if planes and d < 2:
            raise InputError("planes need points with at least 2 inputs; these have 1")
        seed = check_int(seed, "seed", low=0)
        rng = np.random.default_rng(seed)
        half = 0.5 * length
        at = np.arange(m) if n == m else np.sort(rng.choice(m, size=n, replace=False))
        u = _directions(rng, n, d)
        segments = [(p - half * v, p + half * v) for p, v in zip(pts[at], u, strict=True)]
        at = np.sort(rng.choice(m, size=planes, replace=False))
        u1, u2 = _directions(rng, planes, d), _directions(rng, planes, d)
        tris = [(p, p + half * a, p + half * b)
                for p, a, b in zip(pts[at], u1, u2, strict=True)]
        return cls(segments, tris, extent=(-half, half, -half, half) if tris else None,
                   level=level)

    # -- recording ----------------------------------------------------------------------------
    def record(self, model: nn.Module, step: int, **tags: Any) -> None:
        """Count every probe for ``model`` as it is now and add a row per probe; ``tags`` (plain
        values: text, numbers, booleans) become columns. The model is read once per call
        (:func:`~relu_regions.nets.reader.lower`, under ``no_grad``; the reader's eval-mode
        rules apply) and left unchanged. A failing count adds nothing."""
        import torch

        from ..nets.reader import lower
        from .plane import count_lowered_plane
        from .regions import count_lowered_segments

        step = check_int(step, "step", low=0)
        tags = _check_tags(tags)
        with torch.no_grad():
            lowered = lower(model)
        n_in = lowered.layers[0][0].shape[1]
        if n_in != self.dims:
            raise InputError(f"the probes are points of {self.dims} inputs; the model takes "
                             f"{n_in}: build the tracker from points of the model's input space")
        check_level(self.level, lowered.layers[-1][0].shape[0])
        counts = []
        if self._segments:
            starts = np.array([x0 for x0, _ in self._segments])
            ends = np.array([x1 for _, x1 in self._segments])
            lines = count_lowered_segments(lowered, starts, ends, level=self.level)
            counts += [_segment_counts(r, length)
                       for r, length in zip(lines, self._lengths, strict=True)]
        for p0, p1, p2 in self._planes:
            c = count_lowered_plane(lowered, p0, p1, p2, self.extent, level=self.level)
            x0, x1, y0, y1 = c.box
            area = (x1 - x0) * (y1 - y0)
            counts.append({"activation_regions": int(c.activation_regions),
                           "linear_pieces": int(c.linear_pieces),
                           "decision": float(c.decision_length), "size": float(area),
                           "density": float(c.activation_regions / area),
                           "resolved": bool(c.resolved)})
        self._records.append({"step": step, "tags": tags, "counts": counts})

    def __len__(self) -> int:
        """The number of records (calls of :meth:`record`)."""
        return len(self._records)

    @property
    def segments(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(x0.copy(), x1.copy()) for x0, x1 in self._segments]

    @property
    def planes(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [tuple(p.copy() for p in tri) for tri in self._planes]

    @property
    def steps(self) -> list[int]:
        """The recorded steps, sorted, each once."""
        return sorted({r["step"] for r in self._records})

    def kinds(self) -> list[str]:
        """Each probe's kind, in probe order: the segments, then the planes."""
        return ["segment"] * len(self._segments) + ["plane"] * len(self._planes)

    # -- tables -------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """One dict per record and probe, in record order: ``step``, ``probe`` (index: the
        segments, then the planes), ``kind``, ``activation_regions``, ``linear_pieces``,
        ``decision``, ``density``, ``size``, ``resolved``, then the record's tags."""
        kinds = self.kinds()
        out = []
        for rec in self._records:
            for i, c in enumerate(rec["counts"]):
                row = {"step": rec["step"], "probe": i, "kind": kinds[i]}
                row.update({k: c[k] for k in ROW_COLUMNS[3:]})
                row.update(rec["tags"])
                out.append(row)
        return out

    def columns(self) -> list[str]:
        """The rows' columns: ROW_COLUMNS, then every tag in the order first recorded."""
        tags = dict.fromkeys(k for rec in self._records for k in rec["tags"])
        return [*ROW_COLUMNS, *tags]

    def density_profile(self, step: int | None = None, bins: int = 10) -> DensityProfile:
        """Breakpoints per unit length against the distance from the segments' centres, at
        ``step`` (default: the last recorded), in ``bins`` equal bins from 0 to the longest
        half segment (:class:`DensityProfile`)."""
        if not self._records:
            raise InputError("nothing recorded yet: call record(model, step) at least once")
        if not self._segments:
            raise InputError("the tracker has no segments: a density profile is along segments")
        bins = check_int(bins, "bins", low=1)
        if step is None:
            step = self._records[-1]["step"]
        records = [r for r in self._records if r["step"] == step]
        if not records:
            raise InputError(f"step {step!r} was not recorded; recorded steps: {self.steps}")
        half = 0.5 * self._lengths
        edges = np.linspace(0.0, float(half.max()), bins + 1)
        reach = np.clip(np.minimum(edges[1:], half[:, None]) - edges[:-1], 0.0, None)
        length = 2.0 * reach.sum(0) * len(records)  # both sides of each centre
        found = np.zeros(bins)
        for rec in records:
            for c in rec["counts"][:len(self._segments)]:
                found += np.histogram(np.abs(c["breakpoints"]), bins=edges)[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            density = np.where(length > 0, found / length, np.nan)
        return DensityProfile(step=step, edges=edges, breakpoints=found, length=length,
                              density=density, segments=len(self._segments))

    # -- saving and restoring -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: the probes, ``extent``, ``level`` and every record (with the segments'
        breakpoints, as distances from their centres); :meth:`from_dict` restores it exactly."""
        return {"format": FORMAT,
                "segments": [[x0.tolist(), x1.tolist()] for x0, x1 in self._segments],
                "planes": [[p.tolist() for p in tri] for tri in self._planes],
                "extent": None if self.extent is None else list(self.extent),
                "level": self.level,
                "records": [_record_to_dict(r) for r in self._records]}

    @classmethod
    def from_dict(cls, d: dict) -> RegionTracker:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"not a saved RegionTracker (format {FORMAT} expected)")
        tracker = cls(d.get("segments", ()), d.get("planes", ()), extent=d.get("extent"),
                      level=d.get("level"))
        tracker._records = tracker._checked_records(d.get("records", []))
        return tracker

    def state_dict(self) -> dict:
        """What a resumed run restores with :meth:`load_state_dict`: the probes (to check that
        they match) and the records; plain data (JSON, ``torch.load(weights_only=True)``)."""
        return self.to_dict()

    def load_state_dict(self, state: dict) -> None:
        """Replace the records by those of ``state`` (from :meth:`state_dict` of a tracker with
        the same probes, extent and level)."""
        saved = RegionTracker.from_dict(state)
        if (saved.to_dict() | {"records": []}) != (self.to_dict() | {"records": []}):
            raise InputError("the saved records were made with other probes (segments, planes, "
                             "extent or level): restore them into a tracker built the same way")
        self._records = saved._records

    def to_csv(self, path: Path | str) -> Path:
        """The rows as CSV (a column per tag; floats written exactly), atomically."""
        columns = self.columns()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        atomic_write_text(path, buf.getvalue())
        return Path(path)

    def to_json(self, path: Path | str) -> Path:
        """:meth:`to_dict` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict()) + "\n")
        return Path(path)

    def extend(self, records: list[dict]) -> None:
        """Append records in :meth:`to_dict`'s form (counted elsewhere for the same probes, e.g.
        in worker processes)."""
        self._records.extend(self._checked_records(records))

    def _checked_records(self, records) -> list[dict]:
        n = len(self._segments) + len(self._planes)
        out = []
        for rec in records:
            counts = rec.get("counts") if isinstance(rec, dict) else None
            if not isinstance(counts, list) or len(counts) != n:
                raise InputError(f"a saved record must hold counts of the tracker's {n} probes")
            out.append({"step": check_int(rec.get("step"), "step", low=0),
                        "tags": _check_tags(rec.get("tags", {})),
                        "counts": [_counts_from_dict(c) for c in counts]})
        return out


def log_steps(last: int, n: int = 20, first: int = 0) -> list[int]:
    """About ``n`` integer steps from ``first`` to ``last`` (both included), evenly spaced in
    log(step + 1), sorted, each once (fewer than ``n`` where the low end rounds to the same
    integers): the schedule of arXiv:2402.15555's plots of local complexity over training.

    >>> log_steps(1000, n=8)
    [0, 2, 6, 18, 51, 138, 372, 1000]
    """
    first = check_int(first, "first", low=0)
    last = check_int(last, "last", low=first)
    n = check_int(n, "n", low=1 if first == last else 2)
    grid = np.rint(np.geomspace(first + 1, last + 1, n)) - 1
    steps = {first, last, *(int(s) for s in np.clip(grid, first, last))}
    return sorted(steps)


def track_checkpoints(tracker: RegionTracker, tasks: Sequence[dict], *,
                      workers: int | None = 0, scheduler: Any = None,
                      bar: Any = None) -> tuple[str, int | None]:
    """Record ``tracker``'s probes for each checkpoint of ``tasks`` (dicts with ``path``,
    ``step`` and optional ``tags``), in task order whatever the scheduling: here
    (``workers=0``), on local processes or on a Dask cluster
    (:func:`~relu_regions.parallel.run_tasks`). Returns (mode, workers)."""
    from ..parallel import run_tasks

    probes = tracker.to_dict() | {"records": []}
    jobs = [{"probes": probes, "path": str(t["path"]), "step": t["step"],
             "tags": t.get("tags", {})} for t in tasks]
    results, mode, n_workers = run_tasks(record_checkpoint, jobs, _failed_job, workers=workers,
                                         scheduler=scheduler, bar=bar)
    for job, result in zip(jobs, results, strict=True):
        if "error" in result:
            raise InputError(f"counting {job['path']} failed: {result['error']}")
    tracker.extend([rec for result in results for rec in result["records"]])
    return mode, n_workers


def record_checkpoint(job: dict) -> dict:
    """One checkpoint's record (runs in a worker: plain data in and out): ``{"records": [...]}``
    in :meth:`RegionTracker.to_dict`'s form, or ``{"error": text}`` for bad input."""
    from ..checkpoint import load

    try:
        tracker = RegionTracker.from_dict(job["probes"])
        model, _ = load(job["path"])
        tracker.record(model.eval(), job["step"], **job["tags"])
    except InputError as err:
        return {"error": str(err)}
    return {"records": tracker.to_dict()["records"]}


def _failed_job(job: dict, error: str) -> dict:
    return {"error": error}


# ---------------------------------------------------------------------------------------------
# Helpers

def _points(probe, k: int, name: str) -> tuple[np.ndarray, ...]:
    """``probe`` as k finite float64 vectors."""
    try:
        pts = tuple(np.asarray(p, dtype=np.float64).reshape(-1) for p in probe)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {k} points (vectors of numbers)") from None
    if len(pts) != k:
        raise InputError(f"{name} must be {k} points, got {len(pts)}")
    if any(p.size == 0 or not np.isfinite(p).all() for p in pts):
        raise InputError(f"{name} must be {k} non-empty vectors of finite numbers")
    return pts


def _extent(extent) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        raise InputError(f"extent must be four numbers (u0, u1, v0, v1), got {extent!r}") \
            from None
    if len(vals) != 4 or not all(map(math.isfinite, vals)) or not (
            vals[0] < vals[1] and vals[2] < vals[3]):
        raise InputError(f"extent must be four finite numbers (u0, u1, v0, v1) with u0 < u1 "
                         f"and v0 < v1, got {extent!r}")
    return vals


def _directions(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n unit vectors uniform on the sphere in d dimensions (normalized Gaussians)."""
    u = rng.standard_normal((n, d))
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    return u / np.where(norms > 0, norms, 1.0)


def _check_tags(tags) -> dict:
    if not isinstance(tags, dict):
        raise InputError(f"tags must be a dict, got {type(tags).__name__}")
    out = {}
    for key, value in tags.items():
        if key in ROW_COLUMNS:
            raise InputError(f"tag {key!r} is a column of the rows already; name it otherwise")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, TAG_TYPES) or (isinstance(value, float)
                                                and not math.isfinite(value)):
            raise InputError(f"tag {key}={value!r} must be text, a finite number, a boolean or "
                             f"None (a column of the table)")
        out[str(key)] = value
    return out


def _segment_counts(r, length: float) -> dict:
    """A segment's numbers; breakpoints as signed distances from its centre (input units)."""
    return {"activation_regions": int(r.activation_regions),
            "linear_pieces": int(r.linear_pieces),
            "decision": int(r.decision_points.size), "size": float(length),
            "density": float(r.activation_regions / length), "resolved": bool(r.resolved),
            "breakpoints": (r.breakpoints - 0.5) * length}


def _record_to_dict(rec: dict) -> dict:
    counts = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in c.items()}
              for c in rec["counts"]]
    return {"step": rec["step"], "tags": dict(rec["tags"]), "counts": counts}


def _counts_from_dict(c) -> dict:
    if not isinstance(c, dict) or not set(ROW_COLUMNS[3:]) <= set(c):
        raise InputError(f"a saved count must have {', '.join(ROW_COLUMNS[3:])}")
    out = {k: c[k] for k in ROW_COLUMNS[3:]}
    if "breakpoints" in c:
        out["breakpoints"] = np.asarray(c["breakpoints"], dtype=np.float64)
    return out


def _cell(value):
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value
