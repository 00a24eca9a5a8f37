"""Characteristic activation analysis of ReLU units (Chen & Ge, arXiv:2305.15912, Section 2).

A unit ``relu(w^T x + b)`` switches on its characteristic activation boundary (CAB)
``{x : w^T x + b = 0}``. The CAB is summarized by

* its spatial location ``phi = -b w / ||w||^2``, the point of the CAB nearest the origin
  (Definition 2.1; 1D: ``phi = -b / w``), and
* its direction, the unit normal ``w / ||w||``; in 2D the angle ``atan2(w_2, w_1)``.

Propositions 2.3-2.5 show that under the standard parameterization (SP), weight normalization
(WN) and batch normalization (BN), a parameter step of size ``eps`` can swing the direction by an
arbitrary amount once ``||w||`` (or, for BN, the scale ``gamma``) is of order ``eps``; under GmP the
direction moves by at most the step in ``theta``. The stability metrics here are the paper's:
per epoch, the largest change over units of the spatial location (Fig. 2c, 1D Levy) and of the
direction angle (Fig. 3i, 2D Banana).

Every parameterization is reduced to an *effective* ``(w, b)`` per unit, read from the layer's
``weight`` / ``bias`` (which SP, ``torch.nn.utils.parametrizations.weight_norm`` and the GmP layers
all expose). For BN the following ``BatchNorm`` is folded into the layer
(:func:`fold_batchnorm`); which statistics are folded is the caller's choice: the batch statistics
of a given input ``x`` (what the BN layer applies in training mode to that batch), or the running
statistics (what it applies in eval mode). The studies in :mod:`relu_regions.gmp_studies` fold the
batch statistics of the whole training set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError

__all__ = [
    "CAB",
    "CABHistory",
    "CABTracker",
    "Stability",
    "angle_between",
    "characteristic_activation",
    "effective_affine",
    "fold_batchnorm",
    "stability",
]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


# --------------------------------------------------------------------------------------------
# Effective (w, b) of a layer
# --------------------------------------------------------------------------------------------
def fold_batchnorm(w: Tensor, b: Tensor, bn: nn.modules.batchnorm._BatchNorm,
                   mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Fold ``BN(z) = gamma (z - mean) / sqrt(var + eps) + beta`` into ``z = w x + b``.

    Returns ``(gamma w / s, gamma (b - mean) / s + beta)`` with ``s = sqrt(var + eps)``; ``w`` has
    units as rows (``(units, d)``), ``mean`` / ``var`` are per unit.
    """
    s = torch.sqrt(var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(s)
    beta = bn.bias if bn.affine else torch.zeros_like(s)
    scale = gamma / s
    return w * scale.unsqueeze(-1), (b - mean) * scale + beta


def effective_affine(layer: nn.Module, bn: nn.Module | None = None, x: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Effective per-unit ``(w, b)`` of ``layer`` (optionally followed by ``bn``), detached.

    ``layer`` is anything exposing ``weight`` (``(units, ...)``, flattened per unit) and ``bias``:
    ``nn.Linear`` / ``nn.Conv2d`` (SP), the same under ``weight_norm`` (WN), ``GmPLinear`` /
    ``GmPConv2d`` (GmP). With ``bn`` (``BatchNorm1d`` / ``BatchNorm2d``), the BN is folded in
    (Chen & Ge, Prop. 2.5 setting): with ``x`` given, using the batch statistics of
    ``layer(x)`` (mean and biased variance over every dimension but 1, as BN uses in training
    mode); with ``x=None``, using ``bn.running_mean`` / ``bn.running_var`` (eval mode).
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor):
        raise InputError(f"layer {type(layer).__name__} has no weight tensor: pass a Linear, "
                         f"Conv2d or GmP layer")
    with torch.no_grad():
        w = weight.detach().reshape(weight.shape[0], -1)
        bias = getattr(layer, "bias", None)
        b = bias.detach() if isinstance(bias, Tensor) else torch.zeros_like(w[:, 0])
        if bn is None:
            return w.clone(), b.clone()
        if not isinstance(bn, _BN):
            raise InputError(f"bn={type(bn).__name__} is not allowed: pass a "
                             f"BatchNorm1d/BatchNorm2d or None")
        if bn.num_features != w.shape[0]:
            raise InputError(f"bn has {bn.num_features} features but the layer has "
                             f"{w.shape[0]} units")
        if x is not None:
            z = layer(x)
            dims = [0] + list(range(2, z.dim()))
            mean, var = z.mean(dim=dims), z.var(dim=dims, unbiased=False)
        else:
            if bn.running_mean is None or bn.running_var is None:
                raise InputError("bn tracks no running statistics: pass the batch x to fold "
                                 "batch statistics")
            mean, var = bn.running_mean, bn.running_var
        return tuple(t.detach().clone() for t in fold_batchnorm(w, b, bn, mean, var))


# --------------------------------------------------------------------------------------------
# CAB of a set of units
# --------------------------------------------------------------------------------------------
@dataclass
class CAB:
    """Characteristic activation boundaries of a set of units (Chen & Ge, Definition 2.1).

    Shapes: ``weight`` ``(..., units, d)``, ``bias`` ``(..., units)``, ``location`` (``phi``)
    ``(..., units, d)``, ``angle`` ``(..., units)`` in ``(-pi, pi]`` (2D only, else None).
    """

    weight: Tensor
    bias: Tensor
    location: Tensor
    angle: Tensor | None

    def to_dict(self) -> dict:
        return {
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
            "location": self.location.tolist(),
            "angle": None if self.angle is None else self.angle.tolist(),
        }


def characteristic_activation(w: Tensor, b: Tensor) -> CAB:
    """CABs of units ``relu(w_i^T x + b_i)``: ``phi_i = -b_i w_i / ||w_i||^2`` and, for ``d = 2``,
    the normal's angle ``atan2(w_i2, w_i1)`` (Chen & Ge, Definition 2.1, Section 2.2).

    Leading dimensions of ``w`` (``(..., units, d)``) and ``b`` (``(..., units)``) are batch
    dimensions. A zero ``w_i`` gives a non-finite ``phi_i``: the CAB does not exist.
    """
    if w.dim() < 2 or b.shape != w.shape[:-1]:
        raise InputError(f"w shape {tuple(w.shape)} and b shape {tuple(b.shape)} do not match: "
                         "need (..., units, d) and (..., units)")
    sq = (w * w).sum(dim=-1)
    phi = -(b / sq).unsqueeze(-1) * w
    angle = torch.atan2(w[..., 1], w[..., 0]) if w.shape[-1] == 2 else None
    return CAB(w, b, phi, angle)


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Angle in ``[0, pi]`` between vectors ``a`` and ``b`` along the last dimension.

    Uses ``2 atan2(||a^ - b^||, ||a^ + b^||)`` on the unit vectors, accurate for tiny and
    near-``pi`` angles (arccos of a dot product is not). In 1D it is 0 or ``pi`` (sign flip).
    """
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    return 2 * torch.atan2(torch.linalg.vector_norm(ua - ub, dim=-1),
                           torch.linalg.vector_norm(ua + ub, dim=-1))


# --------------------------------------------------------------------------------------------
# Tracking during training and the stability metrics
# --------------------------------------------------------------------------------------------
@dataclass
class CABHistory:
    """Effective ``(w, b)`` of a layer's units recorded at ``T`` points of training (epochs).

    ``weight`` ``(T, units, d)``, ``bias`` ``(T, units)``.
    """

    weight: Tensor
    bias: Tensor

    @property
    def cab(self) -> CAB:
        """CABs at every recorded point: ``location`` ``(T, units, d)``, ``angle``
        ``(T, units)``."""
        return characteristic_activation(self.weight, self.bias)

    def to_dict(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}


class CABTracker:
    """Records a layer's effective ``(w, b)`` (see :func:`effective_affine`) each time
    :meth:`record` is called, e.g. once per epoch; :meth:`history` stacks them.

    ``x`` (for BN) is the layer's input whose batch statistics are folded; without it the running
    statistics are. Recording runs under ``no_grad`` and never changes the model (BN running stats
    are not touched: the BN module itself is not called).
    """

    def __init__(self, layer: nn.Module, bn: nn.Module | None = None,
                 x: Tensor | None = None) -> None:
        self.layer, self.bn, self.x = layer, bn, x
        self._w: list[Tensor] = []
        self._b: list[Tensor] = []

    def record(self) -> None:
        w, b = effective_affine(self.layer, self.bn, self.x)
        self._w.append(w)
        self._b.append(b)

    def __len__(self) -> int:
        return len(self._w)

    def history(self) -> CABHistory:
        if not self._w:
            raise InputError("nothing recorded yet: call record() at least once")
        return CABHistory(torch.stack(self._w), torch.stack(self._b))


@dataclass
class Stability:
    """Per-step stability of the CABs (Chen & Ge, Fig. 2c and Fig. 3i).

    ``location_change[t] = max_i ||phi_i(t+1) - phi_i(t)||`` (1D: ``|.|``);
    ``angle_change[t] = max_i angle(w_i(t), w_i(t+1))`` in radians (None in 1D, where the
    direction is a fixed or flipped sign). Units with a non-finite location at either step make
    the step's location change ``inf``: the CAB jumped through infinity.
    """

    location_change: Tensor
    angle_change: Tensor | None

    def summary(self) -> dict:
        """Max and median over steps of each series (plain floats)."""
        out = {}
        for name, series in (("location_change", self.location_change),
                             ("angle_change", self.angle_change)):
            if series is None or series.numel() == 0:
                out[name] = None
                continue
            out[name] = {"max": float(series.max()), "median": float(series.median())}
        return out

    def to_dict(self) -> dict:
        return {
            "location_change": self.location_change.tolist(),
            "angle_change": None if self.angle_change is None else self.angle_change.tolist(),
            "summary": self.summary(),
        }


def stability(history: CABHistory) -> Stability:
    """Per-step max-over-units change of CAB location and direction (Chen & Ge, Fig. 2c / 3i)."""
    if history.weight.shape[0] < 2:
        raise InputError(f"history has {history.weight.shape[0]} records: need at least 2 to "
                         f"measure change")
    phi = history.cab.location
    step = torch.linalg.vector_norm(phi[1:] - phi[:-1], dim=-1)
    step = torch.where(torch.isfinite(phi[1:]).all(-1) & torch.isfinite(phi[:-1]).all(-1), step,
                       torch.full_like(step, math.inf))
    angle = None
    if history.weight.shape[-1] >= 2:
        angle = angle_between(history.weight[:-1], history.weight[1:]).amax(dim=-1)
    return Stability(step.amax(dim=-1), angle)
